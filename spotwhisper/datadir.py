"""Where the data lives: ``--data-dir`` beats ``$SPOTWHISPER_DATA_DIR``; there is no silent default."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPOTWHISPER_DATA_DIR"


class DataDirError(FileNotFoundError):
    """The data directory is not set or does not hold the expected files."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the data directory given explicitly or through ``$SPOTWHISPER_DATA_DIR``."""
    value = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if not value:
        raise DataDirError(
            f"no data directory: pass --data-dir DIR or set {ENV_VAR} "
            "(e.g. `export SPOTWHISPER_DATA_DIR=../shared/data`, or fetch it with `spotwhisper data fetch her2st`)"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataDirError(f"data directory {path} does not exist")
    return path


def her2st_root(data_dir: str | Path | None = None) -> Path:
    """The her2st folder (holding ``data/ST-cnts``) inside the data directory, or the directory itself."""
    base = resolve_data_dir(data_dir)
    for candidate in (base / "her2st", base):
        if (candidate / "data" / "ST-cnts").is_dir():
            return candidate
    raise DataDirError(f"{base}: no her2st data (expected her2st/data/ST-cnts/*.tsv.gz inside it)")
