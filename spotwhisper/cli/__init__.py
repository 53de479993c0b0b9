"""``spotwhisper`` command line: one subcommand group per pipeline stage.

Each command module ``cmd_<command>.py`` in this package exposes ``register(subparsers)``, adding
its subcommands; a subcommand sets ``func`` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..config import CONFIG_DIR_ENV

#: Commands (module ``cmd_<name>``), in the order ``--help`` lists them.
COMMAND_MODULES = ["demo", "data", "tiles", "features", "train", "predict", "index", "search", "bench", "serve"]

EPILOG = """\
Start here:
  spotwhisper demo --data-dir ../shared/data     build the demo collection and open the search UI
  spotwhisper data info --data-dir DIR           what a data directory holds
  spotwhisper <command> --help                   options of one command

The data directory can also be set once: export SPOTWHISPER_DATA_DIR=/path/to/data
"""


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def add_index_dir(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--index-dir`` option (falls back to ``$SPOTWHISPER_INDEX_DIR``, else ``indexes/``)."""
    parser.add_argument(
        "--index-dir",
        default=None,
        help="folder holding collections (default: $SPOTWHISPER_INDEX_DIR, else indexes/)",
    )


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--data-dir`` option (falls back to ``$SPOTWHISPER_DATA_DIR``)."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding her2st/ (default: $SPOTWHISPER_DATA_DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotwhisper",
        description="Search H&E slides with free text: inferred transcriptomes, virtual proteins, image-text models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spotwhisper {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "--config-dir",
        default=None,
        help="folder of your own YAML configs; a file there (e.g. search.yaml, bench/regions.yaml) wins over the "
        "shipped one of the same name (default: $SPOTWHISPER_CONFIG_DIR)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.cmd_{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.cmd_{name}":
                continue  # stage not built yet
            raise
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line on stderr, without the source line (``-vv`` shows it)."""
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.config_dir is not None:  # through the environment, so Ray workers and subprocesses see it too
        os.environ[CONFIG_DIR_ENV] = str(Path(args.config_dir).expanduser().resolve())
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # restores the default display when the command returns
            if args.verbose < 2:
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, KeyError) as err:
        if args.verbose >= 2:
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
