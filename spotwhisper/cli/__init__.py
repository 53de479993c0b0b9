"""``spotwhisper`` command line: one subcommand group per pipeline stage.

Each command module ``cmd_<command>.py`` in this package exposes ``register(subparsers)``, adding
its subcommands; a subcommand sets ``func`` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..config import CONFIG_DIR_ENV
from ..extras import MissingExtraError
from .options import UserError, add_data_dir, add_index_dir  # noqa: F401 - re-exported for command modules

#: Commands (module ``cmd_<name>``), in the order ``--help`` lists them.
COMMANDS = ["demo", "data", "tiles", "features", "train", "predict", "index", "search", "bench", "serve"]

EPILOG = """\
Start here:
  spotwhisper demo --data-dir ../shared/data     build the demo collection and open the search UI
  spotwhisper data info --data-dir DIR           what a data directory holds
  spotwhisper <command> --help                   options of one command

The data directory can also be set once: export SPOTWHISPER_DATA_DIR=/path/to/data
"""


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
    # Every command module is imported (an import error is an error, not a missing command); they
    # import heavy libraries only inside their command functions, so --help starts fast.
    from . import (
        cmd_bench,
        cmd_data,
        cmd_demo,
        cmd_features,
        cmd_index,
        cmd_predict,
        cmd_search,
        cmd_serve,
        cmd_tiles,
        cmd_train,
    )

    modules = {"demo": cmd_demo, "data": cmd_data, "tiles": cmd_tiles, "features": cmd_features, "train": cmd_train,
               "predict": cmd_predict, "index": cmd_index, "search": cmd_search, "bench": cmd_bench, "serve": cmd_serve}
    for name in COMMANDS:
        modules[name].register(sub)
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
    except (UserError, FileNotFoundError, ValueError, KeyError, MissingExtraError) as err:
        if args.verbose >= 2:
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
