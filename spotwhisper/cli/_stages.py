"""Grouped subcommands (``train``, ``predict``): each stage adds its own sub-subcommand.

A stage module ``spotwhisper.cli.stage_<name>`` may define ``register_train(sub)`` and/or
``register_predict(sub)``. Every stage module is imported; one that fails to import is an error.
"""

from __future__ import annotations

import argparse


def register_group(subparsers: argparse._SubParsersAction, group: str, help_text: str) -> None:
    from . import stage_expression, stage_imagetext, stage_proteins, stage_text
    from .options import command_group

    sub = command_group(subparsers, group, help_text, metavar="WHAT")
    for module in (stage_expression, stage_proteins, stage_text, stage_imagetext):  # pipeline order
        hook = getattr(module, f"register_{group}", None)
        if hook is not None:
            hook(sub)
