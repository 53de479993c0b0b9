"""Grouped subcommands (``train``, ``predict``): each stage adds its own sub-subcommand.

A stage module ``spotwhisper.cli.stage_<name>`` may define ``register_train(sub)`` and/or
``register_predict(sub)``; missing stages are skipped so the CLI works while stages are built.
"""

from __future__ import annotations

import argparse
import importlib

#: Stage modules, in pipeline order.
STAGES = ["expression", "proteins", "text", "imagetext"]


def register_group(subparsers: argparse._SubParsersAction, group: str, help_text: str) -> None:
    parser = subparsers.add_parser(group, help=help_text, description=help_text)
    sub = parser.add_subparsers(dest=f"{group}_what", metavar="WHAT")
    for stage in STAGES:
        try:
            module = importlib.import_module(f"spotwhisper.cli.stage_{stage}")
        except ModuleNotFoundError as err:
            if err.name == f"spotwhisper.cli.stage_{stage}":
                continue
            raise
        hook = getattr(module, f"register_{group}", None)
        if hook is not None:
            hook(sub)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
