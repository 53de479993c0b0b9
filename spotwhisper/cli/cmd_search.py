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
        "matches. 'A minus B' contrasts two queries. Writes one overlay PNG, a CSV of spot scores and a GeoJSON "
        "of regions (QuPath) per slide into --out-dir.",
    )
    p.add_argument("query", help='what to find, e.g. "tertiary lymphoid structures" or "tumour minus immune cells"')
    p.add_argument("--collection", required=True, help="collection built with `spotwhisper index build`")
    add_index_dir(p)
    p.add_argument("--slides", nargs="+", default=None, help="only these slides")
    p.add_argument("--threshold", type=float, default=None, help="relevance (log-odds vs reference descriptions) of a hit (default configs/search.yaml)")
    p.add_argument("--weights", default=None, help="route weights, e.g. transcriptome=1,image=0.5,protein=0")
    p.add_argument("--out-dir", type=Path, default=Path("search_results"), help="where overlays, CSV and GeoJSON go")
    p.add_argument("--top", type=int, default=3, help="slides to report")
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


def cmd_search(args: argparse.Namespace) -> int:
    from ..search.engine import open_engine
    from ..search.export import slug, write_csv, write_geojson
    from ..search.regions import regions_table
    from ..search.render import render_hits, save_png

    engine = open_engine(args.collection, args.index_dir)
    result = engine.search(args.query, slides=args.slides, weights=parse_weights(args.weights), threshold=args.threshold)
    console = Console()
    written = []
    report = []
    if not result.readable:  # nothing was scored: no map, only the sentence
        if args.json:
            print(json.dumps({"query": args.query, "readable": False, "message": result.summary()}, indent=1))
        else:
            console.print(result.summary())
        return 0
    for hits in result.slides[: args.top]:
        stem = args.out_dir / f"{hits.slide}_{slug(args.query, 60, 'query')}"
        written.append(save_png(render_hits(hits, result.threshold), stem.with_suffix(".png")))
        written.append(write_csv(hits.spot_table(), stem.with_suffix(".csv")))
        written.append(write_geojson(hits.regions, args.query, stem.with_suffix(".geojson"), slide=hits.slide))
        report.append({"slide": hits.slide, "found": hits.found, "best_spot": round(hits.best_spot, 3),
                       "spots_at_threshold": int((hits.fused >= result.threshold).sum()),
                       "regions": regions_table(hits.regions),
                       "no_region": None if hits.found else hits.no_region_reason(result.threshold, result.query.text),
                       "why": hits.explanation.sentence(6) if hits.explanation else None})
    if args.json:
        print(json.dumps({"query": args.query, "readable": True, "routes": result.routes, "found": result.found,
                          "threshold": result.threshold, "unit": result.unit,
                          "false_region_rate": result.false_region_rate, "without_regions": result.without_regions(),
                          "slides": report}, indent=1))
        return 0
    console.print(result.summary())
    for item in report:
        if not item["regions"]:
            continue
        table = Table(title=f"{item['slide']}: regions", title_justify="left")
        for col in item["regions"][0]:
            table.add_column(col, justify="right")
        for row in item["regions"]:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0
