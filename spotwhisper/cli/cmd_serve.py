"""``spotwhisper serve`` — the search UI over a built collection."""

from __future__ import annotations

import argparse

from ..extras import require
from .options import add_config, add_index_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the search UI (chat, heat maps, explanations, export) over a built collection",
        description="Open a collection built with `spotwhisper index build` (or `spotwhisper demo`) and serve "
        "the Gradio search UI on http://HOST:PORT. Slides added to the collection (or a rebuild of it) while it "
        "serves appear in the slide picker within seconds, without a restart. A language model is optional: set SPOTWHISPER_LLM_BASE_URL "
        "and SPOTWHISPER_LLM_MODEL (and SPOTWHISPER_LLM_API_KEY) for an OpenAI-compatible endpoint.",
    )
    p.add_argument("--collection", required=True, help="collection name (a folder under the index dir)")
    add_index_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_config(p, "ui", "UI settings")
    p.add_argument("--example", default=None, help="query pre-filled in the chat box")
    p.add_argument("--wait", action="store_true",
                   help="serve even when the collection does not exist yet; its slides appear once it is built")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    require("gradio", "spotwhisper serve (the UI)")
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import UI_CONFIG, load_ui_config

    from ..collection import LiveCollection, open_collection
    from ..index import UnknownCollectionError
    from ..names import check_name
    from ..search.engine import SearchEngine

    check_name(args.collection, "collection")
    cfg = load_ui_config(args.config or UI_CONFIG)
    try:  # an existing collection is opened (and its models checked) before anything is served
        live = LiveCollection(args.collection, args.index_dir, opened=open_collection(args.collection, args.index_dir))
    except UnknownCollectionError:
        if not args.wait:
            raise
        live = LiveCollection(args.collection, args.index_dir)
        print(f"collection {args.collection!r} does not exist yet in {live.root}; serving, its slides appear as soon "
              f"as it is built (spotwhisper index build --collection {args.collection} …)")
    engine = SearchEngine.following(live)  # slides added, removed or rebuilt while serving are seen without a restart
    print(f"collection {args.collection!r}: {len(engine.slide_names())} slide(s) ({', '.join(engine.slide_names())})")
    launch(engine, host=args.host, port=args.port, example=args.example, cfg=cfg)
    return 0
