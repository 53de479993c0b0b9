"""``spotwhisper features extract|models`` — image features of spot tiles or a grid; the encoder registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .options import SLIDE_KINDS, add_config, add_data_dir, add_mpp, command_group


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(subparsers, "features", "image features of spot tiles or a grid; list image encoders")
    p = sub.add_parser(
        "extract",
        help="encode the spot tiles (+ 3×3 sub-tiles) of a slide and write an .h5ad",
        description="Encode every spot tile and its sub-tiles with an image encoder and write an .h5ad with "
        "obsm['features_<model>'] (n, d), obsm['features_<model>_sub'] (n, 9, d) and uns['features'][<model>]. "
        "SLIDE_OR_SECTION is a her2st section (C2), an .h5ad whose uns['spatial'] names its image, or an "
        "image file (then a regular grid over tissue is encoded). Results are cached on disk.",
    )
    p.add_argument("slide", metavar="SLIDE_OR_SECTION", help=SLIDE_KINDS)
    add_data_dir(p)
    p.add_argument("--model", default=None, help="encoder name (default from --config; see `spotwhisper features models`)")
    p.add_argument("--weights", default=None, help="weights: local file/folder or hub id (default: the model's own source)")
    p.add_argument("--out", type=Path, default=None, help=".h5ad to write (default: <slide>_features_<model>.h5ad)")
    p.add_argument("--grid", action="store_true", help="encode a regular grid over tissue instead of spots")
    add_mpp(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N spots (a quick look)")
    p.add_argument("--batch-size", type=int, default=None, help="spots per batch")
    p.add_argument("--no-subtiles", action="store_true", help="skip the 3×3 sub-tiles")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default $SPOTWHISPER_CACHE_DIR or ~/.cache/…)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx", "openvino"], default=None,
                   help="where the encoder runs (default: runtime.use in --config, auto = the fastest installed; "
                   "a missing runtime falls back to torch with a message)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default=None,
                   help="CPU precision of onnx/openvino (default: runtime.precision in --config, fp32; bf16 and int8 "
                   "lose fidelity, see benchmarks/results/runtime_speed.md)")
    add_config(p, "encoders", "feature settings")
    add_config(p, "tiles", "tile settings", flag="--tiles-config")
    p.set_defaults(func=extract)
    m = sub.add_parser("models", help="list the image encoders: dimension, input size, weight source, licence")
    m.set_defaults(func=models)


def extract(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import keys
    from ..config import load_config
    from ..encoders import (
        FeatureConfig,
        create_encoder,
        extract_features,
        extract_grid_features,
    )
    from ..encoders.backends import runtime_config
    from ..io import write_h5ad
    from ..io.inputs import load_input
    from ..tiles import TileConfig

    cfg = load_config(FeatureConfig, args.config, model=args.model, batch_size=args.batch_size, cache_dir=args.cache_dir)
    cfg.cache = cfg.cache and not args.no_cache
    cfg.with_subtiles = cfg.with_subtiles and not args.no_subtiles
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be ≥ 1, got {args.limit}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    tile_cfg = load_config(TileConfig, args.tiles_config)
    inp = load_input(args.slide, args.data_dir, mpp=args.mpp)
    cfg.runtime = runtime_config(cfg.runtime, args.precision)
    if args.runtime:
        cfg.runtime.use = args.runtime
    encoder = create_encoder(cfg.model, weights=args.weights or cfg.weights.get(cfg.model), runtime=cfg.runtime)
    if args.grid or inp.adata is None:
        adata = extract_grid_features(inp.slide, encoder, library_id=inp.name, tile_cfg=tile_cfg, cfg=cfg)
    else:
        n = inp.adata.n_obs
        indices = np.arange(min(args.limit, n)) if args.limit else None
        adata = extract_features(inp.adata, encoder, slide=inp.slide, scale=inp.scale, tile_cfg=tile_cfg, cfg=cfg, indices=indices)
    out = write_h5ad(adata, args.out or Path(f"{inp.name}_features_{cfg.model}.h5ad"))
    info = adata.uns[keys.FEATURES_UNS][encoder.name]
    shapes = ", ".join(f"{k} {adata.obsm[k].shape}" for k in info["obsm_keys"])
    Console().print(
        f"{inp.slide}\n{adata.n_obs} {info['layout']} tiles, {encoder.name} ({encoder.weights_id}) on {encoder.runtime_id}\n"
        f"{info['resampling']}\n{shapes}\ncache key {info['cache_key']}\nwrote {out}"
    )
    return 0


def models(args: argparse.Namespace) -> int:
    from ..encoders import get_spec, list_encoders

    table = Table(title="image encoders (spotwhisper.encoders.registry)")
    table.add_column("name", no_wrap=True)
    for col in ("family", "dim", "input px", "trained µm/px", "weights (default source)", "gated", "licence"):
        table.add_column(col, overflow="fold")
    for name in list_encoders():
        s = get_spec(name)
        mpp = f"{s.trained_mpp:g}" if s.trained_mpp else "–"
        table.add_row(name, s.family, str(s.embed_dim), str(s.input_size), mpp, s.weights, "yes" if s.gated else "no", s.licence)
    console = Console()
    console.print(table)
    console.print("Use --weights PATH (file or folder) or a hub id; gated models need `hf auth login` (huggingface-cli login) first.")
    return 0
