"""``spotwhisper index …`` — build, list, inspect and edit FAISS collections.

``index build --from-h5ad`` indexes AnnData that already hold embeddings in ``obsm``. Building
from slides (running tiles → encoders → expression → text first) plugs in at
:func:`build_from_pipeline`, the hook the pipeline fills in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import UserError, add_config, add_index_dir, add_mpp, command_group


def _add_index_dir(parser: argparse.ArgumentParser) -> None:
    add_index_dir(parser)
    add_config(parser, "index", "index settings")


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``ROUTE=VALUE`` items → {route: value}; an older route name (``text`` …) is read as its route."""
    from ..routes import canonical_route

    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what}: expected ROUTE=VALUE, got {item!r}")
        out[canonical_route(key)] = value
    return out


def _models(values: list[str] | None, routes: dict[str, str], adatas) -> dict:
    """``--model ROUTE=NAME[@VERSION]`` → RouteModel (dimension read from the AnnData)."""
    from ..index import RouteModel

    out = {}
    for route, spec in _pairs(values, "--model").items():
        key = routes.get(route)
        if key is None or key not in adatas[0].obsm:
            raise UserError(f"--model {route}=…: no route {route!r} among {sorted(routes)}")
        name, _, version = spec.partition("@")
        out[route] = RouteModel(name, int(adatas[0].obsm[key].shape[1]), version or None)
    return out


# ---------------------------------------------------------------------------------------------
# HOOK (lead): `spotwhisper index build --collection NAME SLIDE …` without --from-h5ad lands here.
# Run the pipeline on the slides, then hand the AnnData to spotwhisper.index.build_from_anndata
# (same keyword arguments as _cmd_build below uses).
# ---------------------------------------------------------------------------------------------
def build_from_spot_table(args: argparse.Namespace) -> int:
    """``--image IMG --spots CSV``: the image with a table of spot centres (read as the UI's upload reads it:
    :func:`spotwhisper.io.inputs.load_spot_table`; µm/px from the file, ``--mpp``, else the spot pitch),
    run through the pipeline and indexed into the collection."""
    from ..names import check_name

    if not args.image:
        raise UserError("--spots goes with --image IMG (the image the spot centres are on)")
    image, spots = Path(args.image), Path(args.spots) if args.spots else None
    if not image.is_file():
        raise UserError(f"--image {image}: no such image file")
    if spots is not None and not spots.is_file():
        raise UserError(f"--spots {spots}: no such spot table (a CSV with columns x, y in full-resolution px)")
    if args.slides or args.from_h5ad:
        raise UserError("--image/--spots index one slide: leave out the SLIDE arguments and --from-h5ad")
    name = check_name(args.name or image.stem, "slide (--name, default the image's file name)")
    mode = "overwrite" if args.overwrite else "add" if args.add else "create"
    import spotwhisper as sw
    from spotwhisper.api.reading import MPP_HINT
    from spotwhisper.io.inputs import read_spot_table
    from spotwhisper.ui.upload_mpp import resolve_mpp

    from ..collection.build import check_target
    from ..index import load_index_config, resolve_index_dir

    check_target(args.collection, resolve_index_dir(args.index_dir), mode, load_index_config())  # before any work
    try:  # the spot table is checked first (its errors name the file), then the µm/px
        xy = read_spot_table(spots)[0] if spots is not None else None
    except ValueError as err:
        raise UserError(str(err)) from err
    choice = resolve_mpp(image, xy, args.mpp)
    try:
        adata = sw.read(image, spots=spots, mpp=choice.value, name=name)
    except ValueError as err:
        if choice.value is None and MPP_HINT in str(err):
            raise UserError(f"{image}: µm per pixel unknown (the file does not say and the spot table gives no "
                            "pitch: at least 7 spots on a square or hexagonal lattice); pass --mpp") from err
        raise
    print(f"{image.name}: {choice.sentence()}")
    sw.tl.infer(adata, progress=not args.no_progress)
    if mode == "add":
        coll = sw.Collection.open(args.collection, args.index_dir).add(adata)
    else:
        coll = sw.Collection.build(args.collection, [adata], args.index_dir, overwrite=mode == "overwrite")
    index = coll.index
    print(f"collection {coll.name!r}: {len(index.slides())} slides, {len(index)} vectors, routes {', '.join(index.routes())}")
    return 0


def build_from_pipeline(args: argparse.Namespace) -> int:
    """Build a collection from slides (``args.slides``): run every stage, then index and store them."""
    if args.image or args.spots:
        return build_from_spot_table(args)
    if not args.slides:
        raise UserError("name the slides to index (her2st sections like C2, .h5ad files or images), or use --from-h5ad")
    mode = "overwrite" if args.overwrite else "add" if args.add else "create"
    if args.engine == "ray":
        from ..extras import require
        from ..scale.ray_engine import build_collection_ray

        require("ray", "index build --engine ray")

        coll = build_collection_ray(args.collection, args.slides, args.data_dir, index_dir=args.index_dir, mode=mode,
                                    mpp=args.mpp, num_cpus=args.num_cpus)
    else:
        from ..collection import build_collection

        coll = build_collection(args.collection, args.slides, args.data_dir, index_dir=args.index_dir, mode=mode,
                                mpp=args.mpp, progress=not args.no_progress)
    print(f"collection {coll.name!r} in {coll.folder.parent}: {len(coll.slides())} slides, {len(coll)} vectors, "
          f"routes {', '.join(coll.routes())}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from ..collection import index_slides
    from ..index import load_index_config, resolve_index_dir
    from ..index.from_anndata import resolve_routes
    from ..io import read_h5ad

    if not args.from_h5ad or args.image or args.spots:
        return build_from_pipeline(args)
    cfg = load_index_config(args.config)
    missing = [p for p in args.from_h5ad if not Path(p).is_file()]
    if missing:
        raise UserError(f"--from-h5ad: no such file(s): {', '.join(missing)}")
    adatas = [read_h5ad(p) for p in args.from_h5ad]
    routes = resolve_routes(adatas, _pairs(args.route, "--route") or None, cfg)
    factory = (
        _pairs(args.factory, "--factory")
        if args.factory and "=" in args.factory[0]
        else (args.factory[0] if args.factory else None)
    )
    mode = "overwrite" if args.overwrite else "add" if args.add else "create"
    coll = index_slides(adatas, args.collection, args.index_dir, mode, routes=routes,
                        models=_models(args.model, routes, adatas), cfg=cfg, factory=factory)
    print(
        f"collection {coll.name!r} in {resolve_index_dir(args.index_dir, cfg)}: "
        f"{len(coll.slides())} slides, {len(coll)} vectors"
    )
    for route, info in coll.manifest.routes.items():
        print(f"  {route:<28} {info.factory:<24} {info.n_vectors:>9} × {info.dim}-d  model {info.identity}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from ..index import (
        IndexFormatError,
        load_index_config,
        read_manifest,
        resolve_index_dir,
    )
    from ..index.manifest import MANIFEST

    cfg = load_index_config(args.config)
    root = resolve_index_dir(args.index_dir, cfg)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    folders = [p for p in folders if (p / MANIFEST).exists()]
    if not folders:
        print(f"no collections in {root} (build one: spotwhisper index build --collection NAME --from-h5ad FILE.h5ad)")
        return 0
    print(f"{'collection':<24} {'slides':>6} {'vectors':>9}  routes (factory)                     updated")
    broken = 0
    for folder in folders:
        try:
            m = read_manifest(folder)
        except IndexFormatError as err:  # one broken collection must not hide the others
            broken += 1
            print(f"{folder.name:<24} {'?':>6} {'?':>9}  BROKEN: {err}")
            continue
        n = max((r.n_vectors for r in m.routes.values()), default=0)
        routes = ", ".join(f"{r} ({i.factory})" for r, i in m.routes.items())
        print(f"{folder.name:<24} {len(m.slides()):>6} {n:>9}  {routes:<36} {m.updated}")
    if broken:
        print(f"{broken} collection(s) cannot be read; rebuild them with `spotwhisper index build --overwrite` "
              "or remove their folders", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ..collection import SlideStore
    from ..index import CollectionIndex, load_index_config

    info = CollectionIndex.open(args.collection, index_dir=args.index_dir, cfg=load_index_config(args.config)).info()
    info["damaged_slides"] = SlideStore(info["folder"]).check(info["slides"])  # listed, file missing or unreadable
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print(f"collection {info['collection']}  ({info['folder']})")
    print(f"  generation {info['generation']}, created {info['created']}, updated {info['updated']}")
    print(f"  spotwhisper {info['spotwhisper_version']}, faiss {info['faiss_version']}")
    print(
        f"  {info['n_slides']} slides in {info['n_shards']} shard(s), {info['n_vectors']} vectors: "
        f"{', '.join(info['slides'])}"
    )
    if info["damaged_slides"]:
        print(f"  {len(info['damaged_slides'])} damaged (not searched): "
              + "; ".join(f"{s}: {p}" for s, p in info["damaged_slides"].items()))
    for route, r in info["routes"].items():
        print(
            f"  route {route}: model {r['model']}, {r['factory']}, {r['n_vectors']} vectors, "
            f"{r['ram_mb_per_million']} MB RAM per million vectors, {r['disk_mb']} MB on disk"
            + (", float32 copies kept" if r["stored_vectors"] else "")
        )
    return 0


def _cmd_remove_slide(args: argparse.Namespace) -> int:
    from ..collection import remove_slide
    from ..index import CollectionIndex

    n = remove_slide(args.collection, args.slide, args.index_dir)
    coll = CollectionIndex.open(args.collection, index_dir=args.index_dir)
    print(f"removed slide {args.slide!r} ({n} vectors) from {coll.name!r}; {len(coll.slides())} slides left")
    return 0


def _guarded(func):
    """Report a held lock (another process writing) as a user error rather than a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except TimeoutError as err:
            raise UserError(str(err)) from err

    return run


def register(subparsers) -> None:
    """Add ``spotwhisper index`` with ``build``, ``list``, ``info`` and ``remove-slide``."""
    sub = command_group(subparsers, "index", "FAISS collections: build, list, info, remove-slide",
                        "Build and inspect FAISS collections (one folder per collection under indexes/).", metavar="WHAT")

    p = sub.add_parser(
        "build",
        help="run the pipeline on slides (or take .h5ad with embeddings) and index them into a collection",
        description="spotwhisper index build --collection demo C2 C3 runs tiles → features → inferred expression → "
        "proteins → embeddings on each slide and indexes every route; --from-h5ad indexes AnnData that already "
        "hold embeddings.",
    )
    p.add_argument("--collection", required=True, help="collection name (folder under the index dir)")
    p.add_argument(
        "--from-h5ad", nargs="+", metavar="FILE", help="AnnData with embeddings in obsm (one slide per obs['section'])"
    )
    p.add_argument("slides", nargs="*", metavar="SLIDE",
                   help="slides to run the pipeline on: her2st sections (C2), .h5ad files with spots, or images")
    p.add_argument("--data-dir", default=None, help="folder holding her2st/ (default: $SPOTWHISPER_DATA_DIR)")
    add_mpp(p)
    p.add_argument("--image", default=None, metavar="IMG",
                   help="an H&E image to index as one slide; with --spots its spot centres, else a grid of tiles")
    p.add_argument("--spots", default=None, metavar="CSV",
                   help="with --image: CSV of spot centres, columns x, y (full-resolution px) and optionally barcode/id "
                   "(the table the UI's upload reads); µm/px from the image, --mpp, else the spot pitch")
    p.add_argument("--name", default=None, help="slide id of --image (default: its file name)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="run the pipeline in this process (local) or as Ray Data batch jobs (ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray instance (--engine ray)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--route",
        action="append",
        metavar="ROUTE=OBSM_KEY",
        help="route to index and its obsm key (repeatable; default: configured routes present)",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="ROUTE=NAME[@VERSION]",
        help="model that made a route's embeddings (default: read from uns)",
    )
    p.add_argument(
        "--factory",
        action="append",
        metavar="[ROUTE=]STRING",
        help="faiss factory string, for all routes or per route (default: configs/index.yaml rules)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing collection")
    mode.add_argument("--add", action="store_true", help="add the slides to an existing collection")
    _add_index_dir(p)
    p.set_defaults(func=_guarded(_cmd_build))

    p = sub.add_parser("list", help="collections in the index folder")
    _add_index_dir(p)
    p.set_defaults(func=_guarded(_cmd_list))

    p = sub.add_parser("info", help="manifest of one collection: routes, models, sizes")
    p.add_argument("--collection", required=True)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_index_dir(p)
    p.set_defaults(func=_guarded(_cmd_info))

    p = sub.add_parser("remove-slide", help="remove one slide's vectors (rewrites only its shard)")
    p.add_argument("--collection", required=True)
    p.add_argument("slide", help="slide name (e.g. C2)")
    _add_index_dir(p)
    p.set_defaults(func=_guarded(_cmd_remove_slide))

