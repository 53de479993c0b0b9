"""``spotwhisper demo`` — the main job on the embedded default: build (or reuse) the her2st demo
collection from the data directory, answer an example query, and serve the search UI.

The first answer comes early: the UI is served at once (saying what is being prepared), the
smallest section is processed first with every CPU thread and committed as a collection of one
slide, and the example is answered on it — here and in the UI's chat; the other sections are then
added one at a time in the background (each commit atomic), appearing in the UI's slide picker as
they are ready, with progress printed here and shown in the UI.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from ..extras import require
from .options import add_data_dir, add_index_dir

EXAMPLE_QUERY = "tertiary lymphoid structures"
DEMO_COLLECTION = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build the her2st demo collection, answer an example query and open the search UI",
        description="Build (smallest section first) or reuse the demo collection of the her2st sections that "
        "have H&E, answer an example query as soon as the first section is ready, serve the search UI on "
        "http://HOST:PORT and add the other sections in the background (they appear in the UI as they are "
        "ready). Everything uses the shipped default models.",
    )
    add_data_dir(p)
    p.add_argument("--sections", nargs="+", default=None, help="sections to include (default: every section with H&E)")
    p.add_argument("--collection", default=DEMO_COLLECTION, help="collection name (default: demo)")
    add_index_dir(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild the collection even if it exists")
    p.add_argument("--query", default=EXAMPLE_QUERY, help=f"example query to answer (default: {EXAMPLE_QUERY!r})")
    p.add_argument("--no-serve", action="store_true",
                   help="no UI: answer the example, finish building the collection, then stop")
    p.add_argument("--out-dir", type=Path, default=Path("search_results"), help="where the example's overlay PNG goes")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo)


def demo_sections(data_dir, sections: list[str] | None) -> list[tuple[str, int]]:
    """``(section, spots)`` of the sections with an H&E image (or ``sections``), smallest first.
    Reads only file listings and spot tables (fast)."""
    from ..datadir import her2st_root
    from ..io.her2st import image_path, list_sections

    root = her2st_root(data_dir)
    names = sections or [s for s in list_sections(root) if image_path(root, s) is not None]
    if not names:
        raise FileNotFoundError(f"{root}: no her2st section has an H&E image; the demo needs at least one")
    out = []
    for s in names:
        table = root / "data" / "ST-spotfiles" / f"{s}_selection.tsv"
        n = sum(1 for _ in table.open(encoding="utf-8")) - 1 if table.is_file() else 10**9
        out.append((s, n))
    return sorted(out, key=lambda t: (t[1], t[0]))


def _existing_slides(args: argparse.Namespace, console: Console) -> tuple[list[str], bool]:
    """Slides of the demo collection already on disk, and whether it must be overwritten."""
    from ..collection import open_collection
    from ..index.errors import ModelMismatchError, UnknownCollectionError

    if args.rebuild:
        return [], True
    try:
        return open_collection(args.collection, args.index_dir).slides(), False
    except UnknownCollectionError:
        return [], False
    except ModelMismatchError as err:
        console.print(f"collection {args.collection!r} was built with other models ({err}); rebuilding it")
        return [], True


def _serve_early(args: argparse.Namespace, build, answer: dict):
    """Serve the UI over an engine that searches nothing until the first slide is committed
    (:func:`attach` then gives it the collection) → ``(app, engine)``. (Serving from a second thread
    while the slide is processed was measured no faster on 2 cores: both compete for them.)"""
    from spotwhisper.ui.app import launch

    from ..search.engine import SearchEngine

    engine = SearchEngine()  # the shipped text model; slides come with the collection
    app = launch(engine, host=args.host, port=args.port, example=args.query, block=False,
                 answered=lambda: answer.get("answered"), build_status=build.status)
    return app, engine


def attach(engine, collection: str, index_dir) -> None:
    """Point a served engine at the (now existing) collection: its slide files and FAISS indexes."""
    from ..collection import open_collection

    opened = open_collection(collection, index_dir, engine.text)
    engine.store, engine.index = opened.store, opened.index


def run_demo(args: argparse.Namespace) -> int:
    start = time.monotonic()
    if not args.no_serve:
        require("gradio", "spotwhisper demo (the UI; --no-serve answers in the terminal without it)")
    import os

    # idle OpenMP threads sleep instead of spinning: on a shared machine spinning burns the CPU the
    # first slide needs (measured: 67 -> 47 CPU s to the first answer at load 7 on 2 cores)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from ..collection.progressive import ProgressiveBuild
    from ..search.engine import open_engine
    from ..search.render import render_hits, save_png, score_label

    console = Console()
    threads = args.threads or torch.get_num_threads() or 1
    torch.set_num_threads(threads)
    sections = demo_sections(args.data_dir, args.sections)
    names = [s for s, _ in sections]
    console.print(f"demo sections (smallest first): {', '.join(f'{s} ({n} spots)' for s, n in sections)}")
    have, overwrite = _existing_slides(args, console)

    served: dict = {}  # the engine the UI searches, once it has the collection

    def announce(slide: str) -> None:
        engine = served.get("engine")
        if engine is not None and engine.index is not None:
            engine.index.refresh()  # the engine lists the slides its index manifest lists
        console.print(f"[green]ready:[/green] {slide} — {build.status().line()}")

    build = ProgressiveBuild(args.collection, names, args.data_dir, index_dir=args.index_dir, overwrite=overwrite,
                             on_ready=announce)
    build.mark_ready([s for s in have if s in set(names)])
    answer: dict = {}
    app = engine = None
    if not build.status().ready:
        if not args.no_serve:
            app, engine = _serve_early(args, build, answer)
            torch.set_num_threads(threads)  # the UI asks for 1 thread per request; the first slide gets them all
        first = build.pending()[0]
        console.print(f"processing {first} first ({torch.get_num_threads()} threads), then the other "
                      f"{len(names) - 1} section(s) in the background")
        if build.run_first(progress=not args.no_progress) is None:
            failed = build.status().failed
            raise RuntimeError(f"{first} could not be processed: {failed.get(first, 'unknown error')}")
    if engine is None:
        engine = open_engine(args.collection, args.index_dir)
    else:
        attach(engine, args.collection, args.index_dir)
    served["engine"] = engine
    result = engine.search(args.query)
    seconds = time.monotonic() - start
    answer["answered"] = (args.query, result, seconds)
    console.print(f"\n[bold]Example query:[/bold] {args.query!r}  [dim](first answer {seconds:.1f} s after start)[/dim]")
    console.print(result.summary())
    best = result.slides[0]
    png = save_png(render_hits(best, result.threshold, legend=score_label(result)), args.out_dir / f"demo_{best.slide}.png")
    console.print(f"overlay of the best slide: {png}")
    if build.pending():
        console.print(f"{len(build.pending())} section(s) still to add: {', '.join(build.pending())}")
    if args.no_serve:
        build.run_rest()
        console.print(build.status().line())
        return 0
    build.start()
    if app is None:
        from spotwhisper.ui.app import launch

        app = launch(engine, host=args.host, port=args.port, example=args.query, block=False,
                     answered=answer["answered"], build_status=build.status)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    app.close()
    st = build.status()
    if not st.finished:  # slides are committed one by one: a rerun adds only the missing ones
        console.print(f"stopped: {st.line()}; run `spotwhisper demo` again to add the rest")
        import os
        import sys

        sys.stdout.flush()
        os._exit(0)  # the background build may be inside a torch call; its slide is simply not committed
    return 0
