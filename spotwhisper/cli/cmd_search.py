"""``spotwhisper search "QUERY" --collection NAME`` — ranked regions, explanations, overlay PNGs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .options import UserError, add_index_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="search a collection with free text; prints ranked regions and writes heat-map overlays",
        description="Score every spot of the collection's slides for QUERY through every route (inferred "
        "transcriptome, aligned image head, virtual proteins), calibrate each against reference descriptions "
        "of tissue (absolute relevance: nothing is found where nothing matches), fuse, and report connected "
        "regions at or above the threshold with the genes and proteins behind them, or say that no region "
        "matches. 'A minus B' contrasts two queries. For every slide it reports (the best --top), writes "
        "<slide>_<query>.png (heat map with colour bar), .csv (spot scores) and .geojson (regions, QuPath) "
        "into --out-dir; --ome-tiff adds the virtual protein panel on the H&E grid "
        "(<slide>_<query>_virtual_proteins.ome.tif). With --like or --like-geojson the query is an example instead: "
        "spots of one slide, compared by their pooled image vector, inferred transcriptome and aligned image "
        "embeddings, calibrated on the example's slide, as regions with the same files; the spots FAISS finds "
        "nearest across the collection are listed too.",
    )
    p.add_argument("query", nargs="?", default=None,
                   help='what to find, e.g. "tertiary lymphoid structures" or "tumour minus immune cells" (or --like)')
    p.add_argument("--like", default=None, metavar="SLIDE:REGION",
                   help="search by example: spots like these, e.g. C2:10x21,10x22 (spot ids) or C2:4000,5000,5600,6200 "
                   "(a box X0,Y0,X1,Y1 in full-resolution px); regions ranked across the collection")
    p.add_argument("--like-geojson", type=Path, default=None, metavar="FILE",
                   help="search by example: the spots inside the polygons of a GeoJSON (QuPath annotations, or the "
                   ".geojson this command writes); the slide from the file's 'slide' property or --like-slide")
    p.add_argument("--like-slide", default=None, help="the slide a --like-geojson file outlines (when it does not say)")
    p.add_argument("--collection", required=True, help="collection built with `spotwhisper index build`")
    add_index_dir(p)
    p.add_argument("--slides", nargs="+", default=None, help="only these slides")
    p.add_argument("--threshold", type=float, default=None, help="relevance (log-odds vs reference descriptions) of a hit (default configs/search.yaml)")
    p.add_argument("--weights", default=None, help="route weights, e.g. transcriptome=1,image=0.5,protein=0")
    p.add_argument("--out-dir", type=Path, default=Path("search_results"), help="where overlays, CSV and GeoJSON go")
    p.add_argument("--top", type=int, default=3, help="slides to report and write files for, best first (0 = all)")
    p.add_argument("--ome-tiff", action="store_true", help="also write each reported slide's virtual proteins (OME-TIFF)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_search)


def parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UserError(f"--weights: expected ROUTE=NUMBER pairs, got {item!r}") from None
        if not sep:
            raise UserError(f"--weights: expected ROUTE=NUMBER pairs, got {item!r}")
    return out


SUFFIXES = (".png", ".csv", ".geojson", "_virtual_proteins.ome.tif")


def write_slide_files(hits, result, query: str, out_dir: Path, ome_tiff: bool = False) -> list[Path]:
    """PNG (heat map + colour bar), CSV and GeoJSON of one slide of ``result`` (and its protein
    OME-TIFF), named ``<slide>_<query>`` inside ``out_dir`` under a stem no earlier output uses."""
    from ..names import safe_name, slug, unique_path
    from ..search.export import write_csv, write_geojson
    from ..search.render import render_hits, save_png, score_label

    stem = unique_path(out_dir, f"{safe_name(hits.slide, 64, 'slide')}_{slug(query, 60, 'query')}", SUFFIXES)
    name = stem.name
    written = [save_png(render_hits(hits, result.threshold, legend=score_label(result)), stem.with_name(name + ".png")),
               write_csv(hits.spot_table(), stem.with_name(name + ".csv")),
               write_geojson(hits.regions or hits.candidates, query if hits.regions else f"{query} (low-confidence candidates)",
                             stem.with_name(name + ".geojson"), slide=hits.slide)]
    if ome_tiff:
        from ..proteins import export_panel

        written.append(export_panel(hits.adata, stem.with_name(name + "_virtual_proteins.ome.tif")))
    return written


def example_of(engine, args: argparse.Namespace):
    """The :class:`~spotwhisper.search.example.Example` that ``--like`` / ``--like-geojson`` name, checked."""
    from ..names import check_name
    from ..search.example import Example, example_spots, geojson_slide, parse_like, read_geojson, spots_in_box

    if args.like is not None:
        slide, region = parse_like(args.like)
        adata = engine.slide(check_name(slide, "slide"))
        if all(isinstance(v, float) for v in region):
            spots = spots_in_box(adata, region)
            if not len(spots):
                raise UserError(f"--like {args.like}: no spot of {slide} has its centre in that box (full-resolution px)")
            return Example(slide, spots, f"{slide} box {','.join(f'{v:g}' for v in region)}")
        spots, _ = example_spots(adata, region, slide)
        return Example(slide, spots, f"{slide} {','.join(region[:3])}{'…' if len(region) > 3 else ''}")
    geo = read_geojson(args.like_geojson)
    slide = args.like_slide or geojson_slide(geo)
    if slide is None:
        raise UserError(f"{args.like_geojson}: the GeoJSON does not say which slide it outlines; add --like-slide SLIDE")
    spots, _ = example_spots(engine.slide(check_name(slide, "slide")), geo, slide)
    return Example(slide, spots, f"{slide} annotation {args.like_geojson.name}")


def cmd_search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..names import check_name
    from ..search.engine import open_engine
    from ..search.regions import regions_table

    given = [x for x in (args.query, args.like, args.like_geojson) if x is not None]
    if len(given) != 1:
        raise UserError("give a QUERY, --like SLIDE:REGION or --like-geojson FILE (exactly one)")
    for name in args.slides or []:
        check_name(name, "slide")  # before anything is read: a slide name is never a path
    if args.like_geojson is not None and not args.like_geojson.is_file():
        raise UserError(f"--like-geojson {args.like_geojson}: no such file")
    engine = open_engine(args.collection, args.index_dir)
    nearest = None
    if args.query is not None:
        result = engine.search(args.query, slides=args.slides, weights=parse_weights(args.weights), threshold=args.threshold)
    else:
        example = example_of(engine, args)
        result = engine.search_like(example, slides=args.slides, weights=parse_weights(args.weights), threshold=args.threshold)
        nearest = engine.nearest_spots(result.example)
        args.query = result.query.text
    console = Console()
    if not result.readable:  # nothing was scored: no map, only the sentence
        if args.json:
            print(json.dumps({"query": args.query, "readable": False, "message": result.summary()}, indent=1))
        else:
            console.print(result.summary())
        return 0
    top = args.top if args.top and args.top > 0 else len(result.slides)
    reported = result.slides[:top]
    rest = result.slides[top:]
    written, report = [], []
    for hits in reported:  # every slide reported gets its files, and only those
        written += write_slide_files(hits, result, args.query, args.out_dir, args.ome_tiff)
        report.append({"slide": hits.slide, "found": hits.found, "best_spot": round(hits.best_spot, 3),
                       "spots_at_threshold": int((hits.fused >= result.threshold).sum()),
                       "regions": regions_table(hits.regions),
                       "candidates": regions_table(hits.candidates), "confidence": hits.confidence,
                       "specificity": hits.specificity.to_dict() if hits.specificity is not None else None,
                       "familiarity": {k: v for k, v in hits.familiarity.items() if not isinstance(v, dict)} or None,
                       "no_region": None if hits.found else hits.no_region_reason(result.threshold, result.query.text),
                       "why": hits.explanation.sentence(6) if hits.explanation else None})
    route, near_spots = nearest if nearest is not None else (None, None)
    if args.json:
        print(json.dumps({"query": args.query, "readable": True, "routes": result.routes, "found": result.found,
                          "threshold": result.threshold, "unit": result.unit,
                          "false_region_rate": result.false_region_rate, "without_regions": result.without_regions(),
                          "slides": report, "not_reported": [h.slide for h in rest],
                          "files": [str(p) for p in written],
                          **({"nearest": {"route": route, "spots": near_spots.to_dict("records")}} if near_spots is not None else {})},
                         indent=1, default=float))
        return 0
    console.print(replace(result, slides=reported).summary())
    if rest:
        console.print(f"{len(rest)} more slide(s) scored lower: {', '.join(h.slide for h in rest)} "
                      f"(--top {len(result.slides)} to report them and write their files)")
    for item in report:
        if not item["regions"]:
            continue
        table = Table(title=f"{item['slide']}: regions", title_justify="left")
        for col in item["regions"][0]:
            table.add_column(col, justify="right")
        for row in item["regions"]:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    if near_spots is not None:
        near = Table(title=f"nearest spots across the collection (FAISS, route {route})", title_justify="left")
        for col in ("rank", "slide", "spot", "score", "x", "y"):
            near.add_column(col, justify="right")
        for row in near_spots.head(10).itertuples():
            near.add_row(str(row.rank + 1), row.slide, row.spot, f"{row.score:.3f}", f"{row.x:.0f}", f"{row.y:.0f}")
        console.print(near)
    console.print(f"wrote {len(written)} file(s) for {len(reported)} slide(s) into {args.out_dir}: "
                  + ", ".join(p.name for p in written))
    return 0
