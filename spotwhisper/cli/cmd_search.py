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
        "(<slide>_<query>_virtual_proteins.ome.tif).",
    )
    p.add_argument("query", help='what to find, e.g. "tertiary lymphoid structures" or "tumour minus immune cells"')
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
               write_geojson(hits.regions, query, stem.with_name(name + ".geojson"), slide=hits.slide)]
    if ome_tiff:
        from ..proteins import export_panel

        written.append(export_panel(hits.adata, stem.with_name(name + "_virtual_proteins.ome.tif")))
    return written


def cmd_search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..names import check_name
    from ..search.engine import open_engine
    from ..search.regions import regions_table

    for name in args.slides or []:
        check_name(name, "slide")  # before anything is read: a slide name is never a path
    engine = open_engine(args.collection, args.index_dir)
    result = engine.search(args.query, slides=args.slides, weights=parse_weights(args.weights), threshold=args.threshold)
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
                       "no_region": None if hits.found else hits.no_region_reason(result.threshold, result.query.text),
                       "why": hits.explanation.sentence(6) if hits.explanation else None})
    if args.json:
        print(json.dumps({"query": args.query, "readable": True, "routes": result.routes, "found": result.found,
                          "threshold": result.threshold, "unit": result.unit,
                          "false_region_rate": result.false_region_rate, "without_regions": result.without_regions(),
                          "slides": report, "not_reported": [h.slide for h in rest],
                          "files": [str(p) for p in written]}, indent=1))
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
    console.print(f"wrote {len(written)} file(s) for {len(reported)} slide(s) into {args.out_dir}: "
                  + ", ".join(p.name for p in written))
    return 0
