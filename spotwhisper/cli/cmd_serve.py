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
        "the Gradio search UI on http://HOST:PORT. A language model is optional: set SPOTWHISPER_LLM_BASE_URL "
        "and SPOTWHISPER_LLM_MODEL (and SPOTWHISPER_LLM_API_KEY) for an OpenAI-compatible endpoint.",
    )
    p.add_argument("--collection", required=True, help="collection name (a folder under the index dir)")
    add_index_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_config(p, "ui", "UI settings")
    p.add_argument("--example", default=None, help="query pre-filled in the chat box")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    require("gradio", "spotwhisper serve (the UI)")
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import UI_CONFIG, load_ui_config

    from ..search.engine import open_engine

    cfg = load_ui_config(args.config or UI_CONFIG)
    engine = open_engine(args.collection, args.index_dir)
    print(f"collection {args.collection!r}: {len(engine.slide_names())} slide(s) ({', '.join(engine.slide_names())})")
    launch(engine, host=args.host, port=args.port, example=args.example, cfg=cfg)
    return 0
