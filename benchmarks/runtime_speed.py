"""Encoder runtimes side by side on real tiles: speed as a ratio to torch fp32, per-tile cosine to torch fp32.

Reads the spot tiles and 3×3 sub-tiles (224 px, as `features extract` does) of her2st sections
(default C2 and B4: neither calibrates int8), then runs every runtime/precision over the same images
in round-robin chunks — chunk 1 through each runtime, then chunk 2 … — so the machine's load falls
on all of them alike and the ratios stand on a busy machine. Fidelity: cosine of each tile's feature
vector to torch fp32's, per section (min, 1st percentile, median).

    nice python benchmarks/runtime_speed.py --data-dir ../shared/data [--threads 2] [--spots 0] [--out benchmarks/results/runtime_speed.md]

Writes nothing without --out. Exports and int8 calibration are cached under the user cache (first run
exports and quantises; their time is printed, not counted).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from spotwhisper.config import load_config
from spotwhisper.encoders import create_encoder
from spotwhisper.encoders.backends import runtime_config
from spotwhisper.io import open_source_slide, read_her2st
from spotwhisper.tiles import TileConfig, iter_tile_batches, spot_layout

VARIANTS = ["torch/fp32", "onnx/fp32", "openvino/fp32", "openvino/bf16", "onnx/int8", "openvino/int8"]


def section_tiles(data_dir: str, section: str, spots: int) -> np.ndarray:
    """``(n_spots * 10, 224, 224, 3)`` uint8: each spot's tile then its 9 sub-tiles."""
    adata = read_her2st(data_dir, section)
    slide, scale = open_source_slide(adata)
    layout = spot_layout(adata, slide, scale, load_config(TileConfig, "tiles").spot)
    idx = np.arange(len(layout) if spots <= 0 else min(spots, len(layout)))
    out = [np.concatenate([b.tiles[:, None], b.subtiles], 1).reshape(-1, 224, 224, 3)
           for b in iter_tile_batches(slide, layout, 224, 8, indices=idx, progress=False)]
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR", "../shared/data"))
    ap.add_argument("--sections", nargs="+", default=["C2", "B4"])
    ap.add_argument("--spots", type=int, default=0, help="spots per section (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=64, help="images per round-robin chunk (= forward batch)")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write the table to")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SPOTWHISPER_DATA_DIR", args.data_dir)

    tiles = {s: section_tiles(args.data_dir, s, args.spots) for s in args.sections}
    images = np.concatenate(list(tiles.values()))
    encoders, setup = {}, {}
    for v in args.variants:
        runtime, precision = v.split("/")
        t = time.perf_counter()
        enc = create_encoder("efficientnet_lite0", runtime=runtime_config(runtime, precision))
        setup[v] = time.perf_counter() - t
        if enc.runtime_id != f"{runtime}-{precision}":
            print(f"{v}: not available here (fell back to {enc.runtime_id}); skipped")
            continue
        enc.encode(images[:8])  # warm-up
        encoders[v] = enc
    seconds = dict.fromkeys(encoders, 0.0)
    feats = {v: [] for v in encoders}
    load = []
    for start in range(0, len(images), args.chunk):
        chunk = images[start : start + args.chunk]
        load.append(os.getloadavg()[0])
        for v, enc in encoders.items():
            t = time.perf_counter()
            feats[v].append(enc.encode(chunk, args.chunk))
            seconds[v] += time.perf_counter() - t
    feats = {v: np.concatenate(f) for v, f in feats.items()}
    ref = feats["torch/fp32"]
    bounds = np.cumsum([0] + [len(t) for t in tiles.values()])

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    n_spots = len(images) // 10
    head = (f"{len(images)} images = {n_spots} spots × (tile + 3×3 sub-tiles) of {' + '.join(args.sections)}, 224 px, "
            f"EfficientNet-Lite0, {args.threads} threads, chunks of {args.chunk} in round robin; load average "
            f"{np.mean(load):.1f} (min {min(load):.1f}, max {max(load):.1f}) on {os.cpu_count()} CPUs")
    lines = [head, "", "| runtime/precision | images/s | spots/s | × torch fp32 | "
             + " | ".join(f"cosine {s} min / p1 / median" for s in args.sections) + " | setup s |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---" for _ in args.sections) + " | ---: |"]
    for v in encoders:
        c = cos(feats[v], ref)
        per = [c[bounds[i]:bounds[i + 1]] for i in range(len(args.sections))]
        cells = " | ".join(f"{p.min():.4f} / {np.percentile(p, 1):.4f} / {np.median(p):.4f}" for p in per)
        lines.append(f"| {v} | {len(images) / seconds[v]:.1f} | {n_spots / seconds[v]:.2f} | "
                     f"{seconds['torch/fp32'] / seconds[v]:.2f} | {cells} | {setup[v]:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
