"""Where derived, re-computable data is cached: ``$SPOTWHISPER_CACHE_DIR`` or ``~/.cache/spotwhisper``.

Every stage keeps its cache in a sub-folder: ``features/`` (image features), ``text/`` (caption
embeddings), ``oof/`` (out-of-fold predictions), ``bench/`` (benchmark models). Deleting the
folder only costs recomputation.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "SPOTWHISPER_CACHE_DIR"


def cache_root() -> Path:
    """``$SPOTWHISPER_CACHE_DIR`` or ``~/.cache/spotwhisper``."""
    value = os.environ.get(CACHE_ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "spotwhisper"


def cache_dir(name: str) -> Path:
    """The cache sub-folder of one stage (not created)."""
    return cache_root() / name
