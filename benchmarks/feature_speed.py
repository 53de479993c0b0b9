"""Feature extraction speed on this CPU: spots/s (spot tile + 3×3 sub-tiles) and tiles/s, split into
tile reading and model time, for one her2st section (default C2, efficientnet_lite0).

    python benchmarks/feature_speed.py --data-dir ../shared/data [--spots 48] [--threads 1] [--runtime openvino]

``--runtime`` picks the encoder runtime (default: ``runtime.use`` of configs/encoders.yaml); runtimes side by
side with per-tile fidelity: ``benchmarks/runtime_speed.py``; the whole command: ``benchmarks/extract_speed.py``.

Prints figures only; the cache is not used.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from spotwhisper.config import load_config
from spotwhisper.encoders import FeatureConfig, create_encoder
from spotwhisper.io import open_source_slide, read_her2st
from spotwhisper.tiles import TileConfig, iter_tile_batches, spot_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR"))
    ap.add_argument("--section", default="C2")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--spots", type=int, default=0, help="first N spots (0 = all)")
    ap.add_argument("--runtime", default=None, choices=["auto", "torch", "onnx", "openvino"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (2 OpenMP threads are much slower on a busy 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(FeatureConfig, "encoders")
    tile_cfg = load_config(TileConfig, "tiles")

    adata = read_her2st(args.data_dir, args.section)
    slide, scale = open_source_slide(adata)
    layout = spot_layout(adata, slide, scale, tile_cfg.spot)
    n = len(layout) if args.spots <= 0 else min(args.spots, len(layout))
    encoder = create_encoder(args.model, runtime=args.runtime)
    if encoder.spec.pooled_grid:
        raise SystemExit(f"{args.model} reads sub-tiles from one pass; time it with benchmarks/extract_speed.py")
    px, g2 = encoder.image_size, layout.subtile_grid**2

    t0 = time.perf_counter()
    slide.read_region((0, 0), 0, (1, 1))  # first access decodes a JPEG slide once
    t_open = time.perf_counter() - t0

    t0 = time.perf_counter()
    batches = list(iter_tile_batches(slide, layout, px, cfg.batch_size, indices=np.arange(n), progress=False))
    t_read = time.perf_counter() - t0
    images = np.concatenate([np.concatenate([b.tiles[:, None], b.subtiles], axis=1).reshape(-1, px, px, 3) for b in batches])

    encoder.encode(images[:4])  # warm-up
    t0 = time.perf_counter()
    feats = encoder.encode(images, cfg.forward_batch)
    t_model = time.perf_counter() - t0
    assert feats.shape == (n * (1 + g2), encoder.embed_dim)

    n_img = len(images)
    total = t_read + t_model
    print(f"{args.section}: {n} spots × (1 + {g2}) = {n_img} tiles of {px} px, model {args.model} on {encoder.runtime_id}, "
          f"{args.threads} thread(s)")
    print(f"  slide decode (once)   {t_open:7.2f} s")
    print(f"  tile reading          {t_read:7.2f} s   {n / t_read:8.1f} spots/s   {n_img / t_read:8.1f} tiles/s")
    print(f"  model (forward)       {t_model:7.2f} s   {n / t_model:8.1f} spots/s   {n_img / t_model:8.1f} tiles/s")
    print(f"  reading + model       {total:7.2f} s   {n / total:8.1f} spots/s   {n_img / total:8.1f} tiles/s")
    print(f"  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")


if __name__ == "__main__":
    main()
