"""``spotwhisper tiles preview`` — draw the tiling on the slide so a person can check it."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from .options import SLIDE_KINDS, add_config, add_data_dir, add_mpp, command_group


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(subparsers, "tiles", "tiling of slides: preview where tiles fall")
    p = sub.add_parser(
        "preview",
        help="write a PNG of the slide with tiles, sub-tiles and spot centres drawn",
        description="Write a PNG of the slide with the tissue mask (green), spot tiles (blue; red when "
        "under 25%% tissue), their sub-tiles and spot centres (yellow), with a legend and a scale bar. "
        "SLIDE is a her2st section (C2), a Space Ranger folder, an .h5ad with an image, or an image file "
        "(then a regular grid over tissue is drawn). The PNG goes to --out-dir as <slide>_tiles.png (or to --out).",
    )
    p.add_argument("slide", help=SLIDE_KINDS)
    p.add_argument("--out-dir", type=Path, default=Path("tiles_preview"),
                   help="folder for <slide>_tiles.png (default: ./tiles_preview)")
    p.add_argument("--out", type=Path, default=None, help="exact PNG path to write (wins over --out-dir)")
    p.add_argument("--grid", action="store_true", help="draw a regular grid over tissue instead of spots")
    add_mpp(p)
    add_config(p, "tiles", "tile settings")
    p.add_argument("--max-side", type=int, default=2000, help="longer side of the PNG in px")
    add_data_dir(p)
    p.set_defaults(func=preview)


def preview(args: argparse.Namespace) -> int:
    import numpy as np

    from ..config import load_config
    from ..io.inputs import load_input
    from ..tiles import TileConfig, compute_tissue_mask, grid_layout, render_preview, save_preview, spot_layout

    cfg = load_config(TileConfig, args.config)
    inp = load_input(args.slide, args.data_dir, mpp=args.mpp)
    tissue = compute_tissue_mask(inp.slide, cfg.tissue)
    if args.grid or inp.adata is None:
        layout = grid_layout(inp.slide, tissue, cfg.grid, cfg.qc.min_tissue_fraction, cfg.spot.subtile_grid)
    else:
        layout = spot_layout(inp.adata, inp.slide, inp.scale, cfg.spot)
    img = render_preview(inp.slide, layout, tissue, max_side=args.max_side)
    out = save_preview(img, args.out or args.out_dir / f"{inp.name}_tiles.png")
    frac = tissue.box_fraction(layout.boxes)
    Console().print(
        f"{inp.slide}\n{len(layout)} {layout.kind} tiles of {layout.side_um:.0f} µm ({layout.side_px:.0f} px), "
        f"{layout.subtile_grid}×{layout.subtile_grid} sub-tiles; median tissue fraction {float(np.median(frac)):.2f}; "
        f"tissue covers {tissue.fraction:.1%} of the slide\nwrote {out}"
    )
    return 0
