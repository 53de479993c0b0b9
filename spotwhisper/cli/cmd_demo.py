"""``spotwhisper demo`` — the main job on the embedded default: build (or reuse) the her2st demo
collection from the data directory, answer an example query, and serve the search UI."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from .cmd_data import cmd_info
from .options import add_data_dir, add_index_dir

EXAMPLE_QUERY = "tertiary lymphoid structures"
DEMO_COLLECTION = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build the her2st demo collection, answer an example query and open the search UI",
        description="Print what the data directory holds, build (first run, a few minutes) or reuse the demo "
        "collection of the her2st sections that have H&E, answer an example query on it, and serve the "
        "search UI on http://HOST:PORT. Everything uses the shipped default models.",
    )
    add_data_dir(p)
    p.add_argument("--sections", nargs="+", default=None, help="sections to include (default: every section with H&E)")
    p.add_argument("--collection", default=DEMO_COLLECTION, help="collection name (default: demo)")
    add_index_dir(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild the collection even if it exists")
    p.add_argument("--query", default=EXAMPLE_QUERY, help=f"example query to answer (default: {EXAMPLE_QUERY!r})")
    p.add_argument("--no-serve", action="store_true", help="stop after the example query (no UI)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo)


def demo_engine(args: argparse.Namespace, console: Console):
    """Open the demo collection, building it when missing, stale (other models) or asked to."""
    from ..collection import build_collection
    from ..index.errors import ModelMismatchError, UnknownCollectionError
    from ..io.describe import describe_sections
    from ..search.engine import open_engine

    if not args.rebuild:
        try:
            engine = open_engine(args.collection, args.index_dir)
            console.print(f"reusing collection {args.collection!r} ({', '.join(engine.slide_names())})")
            return engine
        except UnknownCollectionError:
            pass
        except ModelMismatchError as err:
            console.print(f"collection {args.collection!r} was built with other models ({err}); rebuilding")
    sections = args.sections
    if not sections:
        table = describe_sections(args.data_dir)
        sections = table.loc[table["image"].notna(), "section"].tolist()
    console.print(f"building collection {args.collection!r} from {', '.join(sections)} (first run: a few minutes)")
    build_collection(args.collection, sections, args.data_dir, index_dir=args.index_dir, mode="overwrite",
                     progress=not args.no_progress)
    return open_engine(args.collection, args.index_dir)


def run_demo(args: argparse.Namespace) -> int:
    from ..search.render import render_hits, save_png

    console = Console()
    cmd_info(argparse.Namespace(data_dir=args.data_dir, sections=args.sections, no_progress=True))
    engine = demo_engine(args, console)
    result = engine.search(args.query)
    console.print(f"\n[bold]Example query:[/bold] {args.query!r}")
    console.print(result.summary())
    best = result.slides[0]
    png = save_png(render_hits(best, result.threshold), Path("search_results") / f"demo_{best.slide}.png")
    console.print(f"overlay of the best slide: {png}")
    if args.no_serve:
        return 0
    from spotwhisper.ui.app import launch

    launch(engine, host=args.host, port=args.port, example=args.query)
    return 0
