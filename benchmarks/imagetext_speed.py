"""Speed of the PLIP and CONCH towers on this CPU (full-size architectures).

No weights can be downloaded here, so the towers are random-initialised: this measures speed
only (FLOPs do not depend on the weights), never embedding quality.

    nice python benchmarks/imagetext_speed.py --threads 2 --images 8 --texts 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spotwhisper.encoders.clip_models import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ConchModel, PlipModel
from spotwhisper.encoders.conch_arch import ConchArch, ConchModule


class _ByteTokenizer:
    """Stand-in tokenizer for timing only: one token per byte (ids < 256), HF call convention."""

    def __init__(self, pad_to: int | None = None):
        self.pad_to = pad_to

    def __call__(self, texts, max_length=None, padding=None, truncation=False, return_tensors=None, **_):
        ids = [[1, *list(t.encode())[: (max_length or 10**9) - 2], 2] for t in texts]
        if return_tensors is None:
            return {"input_ids": ids}
        width = max_length if padding == "max_length" else max(map(len, ids))
        arr = torch.zeros(len(ids), width, dtype=torch.long)
        for i, row in enumerate(ids):
            arr[i, : len(row)] = torch.tensor(row)
        return {"input_ids": arr, "attention_mask": (arr != 0).long()}


def _time(fn, repeats: int = 2) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--texts", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import CLIPConfig, CLIPModel

    plip = PlipModel(
        CLIPModel(CLIPConfig()),  # transformers' default CLIPConfig is the ViT-B/32 architecture PLIP uses
        _ByteTokenizer(),
        name="plip",
        weights="random",
        embed_dim=512,
        image_size=224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        context_length=77,
    )
    arch = ConchArch()
    conch = ConchModel(
        ConchModule(arch),
        _ByteTokenizer(),
        arch,
        name="conch",
        weights="random",
        embed_dim=arch.embed_dim,
        image_size=arch.image_size,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        context_length=arch.context_length,
    )
    texts = [f"an H&E image of invasive carcinoma number {i}." for i in range(args.texts)]
    print(f"threads={args.threads}  images={args.images}  texts={args.texts}")
    for model in (plip, conch):
        tiles = np.random.default_rng(0).integers(
            0, 256, (args.images, model.image_size, model.image_size, 3), np.uint8
        )
        t_img = _time(lambda m=model, x=tiles: m.embed_images(x, batch_size=len(x)))
        t_txt = _time(lambda m=model: m.encode_text(texts))
        print(
            f"{model.name:6s} {model.image_size} px: {args.images / t_img:6.2f} tiles/s   "
            f"text: {args.texts / t_txt:7.1f} prompts/s"
        )


if __name__ == "__main__":
    main()
