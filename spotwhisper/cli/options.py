"""Options and errors every ``spotwhisper`` command shares (one definition each).

Kept free of heavy imports: ``spotwhisper --help`` and every subcommand's ``--help`` import the
command modules, which import only this, argparse and the standard library at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--data-dir`` option (falls back to ``$SPOTWHISPER_DATA_DIR``)."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding her2st/ (default: $SPOTWHISPER_DATA_DIR)",
    )


def add_index_dir(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--index-dir`` option (falls back to ``$SPOTWHISPER_INDEX_DIR``, else ``indexes/``)."""
    parser.add_argument(
        "--index-dir",
        default=None,
        help="folder holding collections (default: $SPOTWHISPER_INDEX_DIR, else indexes/)",
    )


def add_config(parser: argparse.ArgumentParser, name: str | None, what: str, flag: str = "--config") -> None:
    """Add a config option: a YAML file or a config name, default ``configs/<name>.yaml`` (one in
    ``--config-dir`` wins). ``name=None``: the command's own default file."""
    default = f"configs/{name}.yaml" if name else "the shipped one"
    parser.add_argument(flag, default=name, help=f"{what}: a YAML file or config name (default {default})")


def command_group(subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None,
                  metavar: str = "ACTION") -> argparse._SubParsersAction:
    """Add a command with actions (``spotwhisper index build|list|…``) → the subparsers its actions are
    added to. Without an action the command prints its help and exits with status 2."""
    parser = subparsers.add_parser(name, help=help_text, description=description or help_text)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser.add_subparsers(dest=f"{name}_action", metavar=metavar)


#: what a slide argument may be (help text of every command that reads slides)
SLIDE_KINDS = "her2st section id (C2), .h5ad with an image, Space Ranger output folder, or image file"


def add_mpp(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--mpp`` option of commands that read slides."""
    parser.add_argument(
        "--mpp", type=float, default=None,
        help="µm per pixel, when the image does not say; for a Space Ranger folder, per full-resolution pixel "
        "(give it when the spot pitch is not Visium's 100 µm, e.g. 200 µm ST arrays). The log names the µm/px used",
    )


def absolute_out(value: str | Path | None) -> str | None:
    """A command line's ``--out`` relative to the working directory, made absolute (None stays None: the
    config's prefix, which :func:`spotwhisper.userdata.output_path` puts under the results folder)."""
    return None if value is None else str(Path(value).expanduser().resolve())
