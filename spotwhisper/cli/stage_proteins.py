"""``spotwhisper predict proteins SLIDE`` and ``spotwhisper train proteins`` — the virtual protein panel."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .options import UserError, add_config, add_data_dir, add_mpp

if TYPE_CHECKING:  # pragma: no cover - the CLI imports anndata and the stages only when a command runs
    import anndata as ad

    from ..proteins import ProteinsConfig

log = logging.getLogger(__name__)

PREDICT_HELP = """\
Put the 50 ROSIE protein markers on every spot of a slide and write an .h5ad (obsm["proteins"],
names in uns["protein_markers"], QC in uns["protein_qc"]) and an OME-TIFF with one named channel
per marker on the H&E's pixel grid (downsampled, pyramidal, physical pixel size set; overlays the
H&E in QuPath and napari; --grid spots = one pixel per spot).

Route B (default): marker levels from expression through the curated gene map. By default the
expression is the transcriptome inferred from the H&E (shipped expression model): SLIDE is a
her2st section id, an .h5ad with an image (an .h5ad of inferred expression from `predict
expression` is used as it is) or an image (a grid of tiles). --measured uses the slide's measured
expression instead (a section id, or an .h5ad with log1p-normalised or raw counts).
Route A: the ROSIE ConvNeXt-Small on the H&E image, with --rosie-weights (a local checkpoint);
SLIDE is then a section id, an .h5ad with an image, or an image file (a map over the whole image).
"""


def register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proteins",
        help="virtual protein panel (50 ROSIE markers) per spot → .h5ad + OME-TIFF",
        description=PREDICT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("slide", help="her2st section id (C2), .h5ad, or (route A) an image file")
    p.add_argument("--route", choices=["auto", "expression", "rosie"], default="auto",
                   help="auto = rosie when --rosie-weights is given, else expression")  # fmt: skip
    p.add_argument("--measured", action="store_true",
                   help="route B on the slide's measured expression instead of the transcriptome inferred from its H&E")
    p.add_argument("--infer", action="store_true", help=argparse.SUPPRESS)  # the default since 0.1; kept for old scripts
    p.add_argument("--grid", choices=["image", "spots"], default=None,
                   help="OME-TIFF grid: image = the H&E pixel grid, downsampled (default); spots = one pixel per spot")
    p.add_argument("--rosie-weights", type=Path, default=None, help="ROSIE checkpoint (.pth) for route A")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow pickled objects in the checkpoint (trusted files only)"
    )
    p.add_argument("--layer", default=None, help="expression layer for route B (default: log1p layer, else X)")
    add_mpp(p)
    p.add_argument(
        "--stride", type=int, default=None, help="route A window stride in ROSIE pixels (config: rosie.stride_px)"
    )
    p.add_argument("--reference", type=Path, default=None, help=".h5ad with a protein panel: QC reference distribution")
    p.add_argument("--out", type=Path, default=None, help="output .h5ad (default: <slide>_proteins.h5ad)")
    p.add_argument("--ome-tiff", type=Path, default=None, help="output OME-TIFF (default: beside --out)")
    add_config(p, "proteins", "protein settings")
    add_data_dir(p)
    p.set_defaults(func=predict_proteins)


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proteins",
        help="train the ROSIE model on paired H&E + multiplex images (masked MSE)",
        description="Train ROSIE (ConvNeXt-Small, 50 markers) on registered pairs in PAIRS: "
        "<name>_he.(png|jpg|tif) with <name>_mif.ome.tif, a (C, Y, X) OME-TIFF whose channel names "
        "are panel markers or synonyms; both at ROSIE's resolution (config rosie.mpp). "
        "Markers a pair lacks are masked out of the loss.",
    )
    p.add_argument("pairs", type=Path, help="folder of <name>_he.* + <name>_mif.ome.tif pairs")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pth)")
    p.add_argument("--init", type=Path, default=None, help="checkpoint to start from (e.g. released ROSIE weights)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    add_config(p, "proteins", "protein settings")
    p.set_defaults(func=train_proteins)


def _route(args: argparse.Namespace) -> str:
    if args.route == "auto":
        return "rosie" if args.rosie_weights else "expression"
    if args.route == "rosie" and not args.rosie_weights:
        raise UserError("route rosie needs --rosie-weights PATH (ROSIE weights cannot be downloaded here)")
    return args.route


def _load_expression_input(args: argparse.Namespace) -> tuple[str, ad.AnnData]:
    from ..io.anndata_io import read_h5ad
    from ..io.inputs import load_input

    from .. import keys

    spec = Path(args.slide)
    if args.measured:
        if spec.suffix.lower() == ".h5ad":
            return spec.stem, read_h5ad(spec)
        inp = load_input(args.slide, args.data_dir, require_image=False)
        if inp.adata is None:
            raise UserError(f"{args.slide}: an image has no measured expression; leave out --measured to infer it "
                            "from the H&E, or use --rosie-weights for route A")
        return inp.name, inp.adata
    if spec.suffix.lower() == ".h5ad":
        adata = read_h5ad(spec)
        if keys.EXPRESSION_MODEL in adata.uns:  # already the transcriptome inferred from the H&E
            return spec.stem, adata
    from ..pipeline import expression_model_for, spots_with_features

    try:
        inp = load_input(args.slide, args.data_dir, mpp=args.mpp, require_image=True)
    except FileNotFoundError as err:
        raise UserError(f"{err}; to use its measured expression instead, pass --measured") from err
    model = expression_model_for(inp)
    log.info("%s: inferring expression from the H&E (pass --measured for measured expression)", inp.name)
    return inp.name, model.predict(spots_with_features(inp, model.encoder, geometry=model.tile_config()))


def _run_rosie(args: argparse.Namespace, cfg: ProteinsConfig) -> tuple[str, ad.AnnData]:
    from ..io.inputs import load_input
    from ..proteins.from_image import map_to_anndata, proteins_from_image
    from ..proteins.rosie import load_rosie, predict_map

    inp = load_input(args.slide, args.data_dir, mpp=args.mpp, require_image=True)
    if inp.slide is None or inp.slide.mpp is None:
        raise UserError(f"{args.slide}: µm per pixel unknown; pass --mpp")
    model = load_rosie(args.rosie_weights, weights_only=not args.trust_pickle)
    if inp.adata is None:
        pmap = predict_map(model, inp.slide, cfg.rosie)
        return inp.name, map_to_anndata(pmap, cfg.rosie, library_id=inp.name)
    adata, _ = proteins_from_image(inp.adata, model, cfg.rosie, slide=inp.slide, scale=inp.scale)
    return inp.name, adata


def predict_proteins(args: argparse.Namespace) -> int:
    from .. import keys
    from ..config import load_config
    from ..io import write_h5ad
    from ..io.anndata_io import read_h5ad
    from ..proteins import ProteinsConfig, export_panel, protein_qc, proteins_from_expression

    cfg = load_config(ProteinsConfig, args.config)
    if args.grid is not None:
        cfg.export.grid = args.grid
    if args.stride is not None:
        cfg.rosie.stride_px = args.stride
    if args.layer is not None:
        cfg.expression.layer = args.layer
    route = _route(args)
    if route == "rosie":
        name, adata = _run_rosie(args, cfg)
    else:
        name, adata = _load_expression_input(args)
        proteins_from_expression(adata, cfg=cfg.expression)
    reference = read_h5ad(args.reference) if args.reference else None
    qc = protein_qc(adata, reference, cfg.qc)
    out = args.out or Path(f"{name}_proteins.h5ad")
    write_h5ad(adata, out)
    tiff = args.ome_tiff or out.with_name(out.name.removesuffix(".h5ad") + ".ome.tif")
    sections = adata.obs[keys.SECTION].astype(str).unique().tolist() if keys.SECTION in adata.obs else []
    written = []
    if len(sections) > 1:
        for s in sections:
            path = tiff.with_name(tiff.name.removesuffix(".ome.tif") + f"_{s}.ome.tif")
            written.append(export_panel(adata[adata.obs[keys.SECTION].astype(str) == s], path, cfg.export))
    else:
        written.append(export_panel(adata, tiff, cfg.export))
    flagged = qc.loc[~qc["informative"], "marker"].tolist()
    info = adata.uns.get(keys.PROTEIN_INFO, {})
    Console().print(
        f"{name}: {adata.n_obs} spots × {len(qc)} markers by route {route} ({info.get('input', '')}"
        f"{'' if route == 'rosie' else ', measured expression' if args.measured else ', expression inferred from the H&E'})\n"
        f"informative: {len(qc) - len(flagged)}; not informative: {', '.join(flagged) or 'none'}\n"
        f"wrote {out}\nwrote {', '.join(map(str, written))}"
    )
    return 0


def _find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of image pairs")
    pairs = []
    for mif in sorted(folder.glob("*_mif.ome.tif")):
        stem = mif.name.removesuffix("_mif.ome.tif")
        he = [p for p in folder.glob(f"{stem}_he.*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"}]
        if not he:
            raise UserError(f"{mif}: no matching {stem}_he.(png|jpg|tif) in {folder}")
        pairs.append((he[0], mif))
    if not pairs:
        raise UserError(f"{folder}: no <name>_mif.ome.tif files")
    return pairs


def train_proteins(args: argparse.Namespace) -> int:
    import torch

    from ..config import load_config
    from ..proteins import ProteinsConfig
    from ..proteins.rosie import build_rosie_model, load_rosie_weights, save_rosie_checkpoint
    from ..proteins.train_rosie import PairedWindows, load_pair, train_rosie

    cfg = load_config(ProteinsConfig, args.config)
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    images = [load_pair(he, mif) for he, mif in _find_pairs(args.pairs)]
    data = PairedWindows(images, cfg.rosie, cfg.train.windows_per_image, cfg.train.seed)
    model = build_rosie_model()
    if args.init:
        load_rosie_weights(model, args.init)
    if torch.cuda.is_available():
        model = model.cuda()
    history = train_rosie(model, data, cfg.train)
    save_rosie_checkpoint(model.cpu(), args.out, {"history": history})
    Console().print(f"trained on {len(images)} pairs, final loss {history[-1]['train_loss']:.4f}\nwrote {args.out}")
    return 0
