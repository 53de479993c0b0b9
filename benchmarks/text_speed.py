"""Speed of the transcriptome–text route: query encoding and scoring of 10k spots.

    python benchmarks/text_speed.py --data-dir ../shared/data [--model DIR] [--threads 1]

Prints: text-encode time per query (cold: sentence encoder + prompt ensemble; warm: cache hit),
spot encoding time per 10k spots (expression → shared space) and scoring time per 10k spots
from cached spot embeddings (similarity + softmax over the queries).
"""

from __future__ import annotations

import argparse
import time
import warnings

import anndata as ad
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from spotwhisper.io import read_her2st
from spotwhisper.language.model import TextExpressionModel
from spotwhisper.language.transcriptome_zeroshot import embed, embed_queries_for_spots, score

QUERIES = [
    "invasive cancer", "cancer in situ", "immune infiltrate", "breast glands", "connective tissue",
    "adipose tissue", "tertiary lymphoid structures", "T cells", "plasma cells", "proliferating tumour cells",
    "HER2 positive tumour next to stroma", "macrophage rich region",
]


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls, seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=None, help="model folder (default: shipped text-default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--spots", type=int, default=10_000)
    parser.add_argument("--finetune-cost", action="store_true", help="also time a fine-tuning step of the text tower")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy BLAS: multi-threaded GEMV is slower on a busy CPU
    warnings.filterwarnings("ignore")

    t = time.perf_counter()
    model = TextExpressionModel.from_pretrained(args.model)
    _ = model.text_encoder
    print(f"load model + text encoder: {time.perf_counter() - t:.2f} s")

    # real spots of four sections, repeated up to --spots (timing only; values are real expression)
    parts = [read_her2st(args.data_dir, s, with_image=False) for s in ("D1", "E1", "F1", "G2")]
    base = ad.concat(parts, join="inner", merge="first")
    reps = int(np.ceil(args.spots / base.n_obs))
    big = ad.concat([base] * reps, join="inner", merge="first", index_unique="-")[: args.spots].copy()
    print(f"spots: {big.n_obs} (real spots of D1, E1, F1, G2 repeated), {big.n_vars} genes")

    cold = []
    for q in QUERIES:
        t = time.perf_counter()
        embed_queries_for_spots(model, [q])
        cold.append(time.perf_counter() - t)
    warm = timed(lambda: embed_queries_for_spots(model, QUERIES), repeat=5) / len(QUERIES)
    print(f"text encode per query, cold (ensemble of templates × synonyms): median {np.median(cold) * 1e3:.1f} ms, "
          f"max {np.max(cold) * 1e3:.1f} ms")
    print(f"text encode per query, warm (cache hit): {warm * 1e6:.1f} µs")

    t_embed = timed(lambda: embed(big, model), repeat=2)
    print(f"spot encoding (counts → log1p → z-score → encoder): {t_embed:.2f} s per {big.n_obs} spots")
    embed(big, model)
    t_score = timed(lambda: score(big, QUERIES, model), repeat=5)
    t_one = timed(lambda: big.obsm["text_emb"] @ embed_queries_for_spots(model, ["adipose tissue"]).T, repeat=5)
    print(f"scoring from cached embeddings, {len(QUERIES)} queries (similarity + softmax): "
          f"{t_score * 1e3:.1f} ms per {big.n_obs} spots")
    print(f"one query similarity only: {t_one * 1e3:.2f} ms per {big.n_obs} spots")
    if args.finetune_cost:
        finetune_cost(model)


def finetune_cost(model: TextExpressionModel, batch: int = 64) -> None:
    """Time of one forward + backward pass of the text tower on ``batch`` captions (what fine-tuning
    it would add per step), against the frozen forward pass used to cache caption embeddings."""
    enc = model.text_encoder
    texts = [f"immune: B/plasma cells with marker genes IGHA1, IGHM, IGLC{i % 7} and JCHAIN" for i in range(batch)]
    tok = enc.tokenizer(texts, padding=True, truncation=True, max_length=enc.config.max_length, return_tensors="pt")
    net = enc.model
    for p in net.parameters():
        p.requires_grad_(True)
    net.train()

    def step() -> None:
        out = net(**tok).last_hidden_state.mean(dim=1).sum()
        out.backward()
        net.zero_grad()

    t_train = timed(step, repeat=2)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    t_frozen = timed(lambda: enc._forward(texts), repeat=2)
    print(f"text tower on {batch} captions: frozen forward {t_frozen:.2f} s; forward + backward (fine-tuning) "
          f"{t_train:.2f} s per step")


if __name__ == "__main__":
    main()
