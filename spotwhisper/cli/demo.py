"""``spotwhisper demo`` — the main job on the embedded default: the her2st demo collection."""

from __future__ import annotations

import argparse

from . import add_data_dir
from .data import cmd_info


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="load the demo collection from the data directory and show what it holds",
        description="Load the her2st demo collection from the data directory (--data-dir or "
        "$SPOTWHISPER_DATA_DIR) and print its sections, spots, genes, image sizes and µm per pixel.",
    )
    add_data_dir(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo, sections=None)


def run_demo(args: argparse.Namespace) -> int:
    return cmd_info(args)
