"""The upload work budget (``configs/ui.yaml`` ``upload_budget``) against what uploads really cost.

For each case the estimate :func:`spotwhisper.ui.upload_budget.estimate_upload_work` makes from the
header is printed next to the CPU seconds the UI's upload path really takes (header checks, spot
table, thumbnail check, the whole pipeline with the shipped models; 1 torch thread, as the server
runs it), so the rates ``cpu_s_per_tile`` and ``decode_mpx_per_s`` can be checked on this machine:

* a crop of the her2st C2 H&E (JPEG, 0.73 µm/px) with its real spot table, and bare (grid tiles);
* the hostile case: an 80 KB tiled TIFF claiming 100,000² px, which must be refused from its header.

    python benchmarks/upload_budget.py [--data-dir ../shared/data] [--crop 3000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(label: str, kept: list[Path], mpp: float | None, cfg, models, folder: Path) -> str:
    from spotwhisper.io.slide import open_slide
    from spotwhisper.ui.files import process_upload, upload_input
    from spotwhisper.ui.upload_budget import estimate_upload_work

    t0, c0 = time.perf_counter(), cpu_s()
    try:
        inp, choice = upload_input(kept, label, mpp, cfg)
    except ValueError as err:
        return (f"{label}: refused in {cpu_s() - c0:.2f} CPU s ({time.perf_counter() - t0:.2f} s): "
                f"{str(err)[:160]}…")
    n_spots = inp.adata.n_obs if inp.adata is not None else None
    with open_slide(kept[0]) as probe:
        est = estimate_upload_work(probe, choice.value, n_spots, cfg.upload_budget)
    adata, _ = process_upload(inp, models, folder, progress=False)
    used = cpu_s() - c0
    return (f"{label}: estimate {est.cpu_s:,.0f} CPU s ({est.tiles} tiles, {est.decode_px / 1e6:,.0f} Mpx); "
            f"measured {used:,.0f} CPU s ({adata.n_obs} tiles processed, {time.perf_counter() - t0:.0f} s wall, "
            f"{used / max(adata.n_obs, 1):.2f} CPU s per tile)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--crop", type=int, default=3000, help="side (px) of the C2 crop")
    args = ap.parse_args()

    import torch

    from spotwhisper import keys
    from spotwhisper.io import read_her2st
    from spotwhisper.io.spatial import open_source_slide
    from spotwhisper.pipeline import Models
    from spotwhisper.ui.config import load_ui_config
    from tests.security_support import tiff_bomb

    torch.set_num_threads(1)
    cfg = load_ui_config()
    tmp = Path(tempfile.mkdtemp(prefix="upload-budget-"))
    c2 = read_her2st(args.data_dir, "C2")
    slide, scale = open_source_slide(c2)
    xy = np.asarray(c2.obsm[keys.SPATIAL], dtype=float) * scale  # slide px
    x0, y0 = ((xy.min(0) + xy.max(0)) / 2 - args.crop / 2).astype(int)  # the crop centred on the spots
    Image.fromarray(slide.read_region((int(x0), int(y0)), 0, (args.crop, args.crop))).save(tmp / "c2_crop.png")
    inside = ((xy >= [x0, y0]) & (xy < [x0 + args.crop, y0 + args.crop])).all(1)
    pd.DataFrame({"x": xy[inside, 0] - x0, "y": xy[inside, 1] - y0}).to_csv(tmp / "c2_spots.csv", index=False)
    mpp = float(slide.mpp)
    models = Models.load()
    print(f"budget: {cfg.upload_budget}; C2 crop {args.crop}² px at {mpp:.3f} µm/px, {int(inside.sum())} spots", flush=True)
    print(run("bomb.tif (80 KB, 100,000² px, tiled)", [tiff_bomb(tmp / "bomb.tif")], 0.5, cfg, models, tmp), flush=True)
    print(run("C2 crop + spot table", [tmp / "c2_crop.png", tmp / "c2_spots.csv"], mpp, cfg, models, tmp), flush=True)
    print(run("C2 crop, grid tiles", [tmp / "c2_crop.png"], mpp, cfg, models, tmp), flush=True)


if __name__ == "__main__":
    main()
