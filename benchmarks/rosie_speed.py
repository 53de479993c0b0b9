"""Throughput of the ROSIE architecture (ConvNeXt-Small, 224 px input) on this machine.

Random weights: this measures speed only (no ROSIE weights are available here), and estimates
how long route A takes around the spots of a her2st section at the configured stride.

    python benchmarks/rosie_speed.py [--threads 2] [--windows 32] [--data-dir ../shared/data --section C2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from spotwhisper.config import load_config
from spotwhisper.proteins import ProteinsConfig
from spotwhisper.proteins.rosie import build_rosie_model, predict_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--section", default="C2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ProteinsConfig, "proteins").rosie
    model = build_rosie_model().eval()
    windows = np.random.default_rng(0).integers(0, 256, (args.windows, cfg.window_px, cfg.window_px, 3), dtype=np.uint8)
    predict_windows(model, windows[: cfg.batch_size], cfg)  # warm-up
    start = time.perf_counter()
    predict_windows(model, windows, cfg)
    rate = args.windows / (time.perf_counter() - start)
    print(f"ConvNeXt-Small, {cfg.input_px} px input, batch {cfg.batch_size}, {args.threads} thread(s): {rate:.2f} windows/s")
    if args.data_dir:
        from spotwhisper.io import read_her2st
        from spotwhisper.keys import MPP, SPOT_DIAMETER

        a = read_her2st(args.data_dir, args.section, with_image=False)
        sf = a.uns["spatial"][args.section]["scalefactors"]
        radius_um = sf[SPOT_DIAMETER] * sf[MPP] / 2
        step_um = cfg.stride_px * cfg.mpp
        per_spot = max(1.0, math.pi * max(radius_um, 0.75 * step_um) ** 2 / step_um**2)
        n = a.n_obs * per_spot
        print(
            f"{args.section}: {a.n_obs} spots × ~{per_spot:.0f} windows (stride {step_um:.1f} µm) ≈ {n:.0f} windows "
            f"≈ {n / rate / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
