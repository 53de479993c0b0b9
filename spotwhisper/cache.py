"""Where derived, re-computable data is cached, and the fingerprints cache keys are made of.

The cache root is ``$SPOTWHISPER_CACHE_DIR`` or ``~/.cache/spotwhisper``. Every stage keeps its
cache in a sub-folder: ``features/`` (image features), ``text/`` (caption embeddings), ``oof/``
(out-of-fold predictions), ``bench/`` (benchmark models). Deleting the folder only costs
recomputation.

A cache key hashes every input that changes the output (:func:`cache_key`): the settings, the
*content* of the input files (:func:`files_fingerprint` — not their path, so a moved data folder
keeps its cache and an edited file does not), the weights of the models used, and the source code
that computes the output (:func:`code_fingerprint`), so a code change never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "SPOTWHISPER_CACHE_DIR"
_MB = 1 << 20
#: file_fingerprint results by (path, size, mtime, settings): a file is hashed once per process
_FILE_MEMO: dict[tuple, str] = {}


def cache_root() -> Path:
    """``$SPOTWHISPER_CACHE_DIR`` or ``~/.cache/spotwhisper``."""
    value = os.environ.get(CACHE_ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "spotwhisper"


def cache_dir(name: str) -> Path:
    """The cache sub-folder of one stage (not created)."""
    return cache_root() / name


def file_fingerprint(path: str | Path, chunk_mb: float = 1.0, full_hash_max_mb: float = 64.0) -> str:
    """SHA-256 of a file's content: whole file up to ``full_hash_max_mb``, else size + mtime +
    first and last ``chunk_mb`` MB (cheap for multi-GB slides)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns, chunk_mb, full_hash_max_mb)
    if memo in _FILE_MEMO:
        return _FILE_MEMO[memo]
    h = hashlib.sha256()
    if st.st_size <= full_hash_max_mb * _MB:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(4 * _MB), b""):
                h.update(block)
        out = f"sha256:{h.hexdigest()}"
    else:
        chunk = int(chunk_mb * _MB)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(chunk))
            fh.seek(max(0, st.st_size - chunk))
            h.update(fh.read(chunk))
        out = f"sha256-partial:{h.hexdigest()}"
    _FILE_MEMO[memo] = out
    return out


def files_fingerprint(files: Iterable[str | Path], root: str | Path) -> str:
    """Content fingerprint (16 hex) of ``files``: their paths relative to ``root`` and their
    :func:`file_fingerprint` — independent of where ``root`` is."""
    base = Path(root)
    entries = sorted((Path(f).relative_to(base).as_posix(), file_fingerprint(f)) for f in files)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def code_fingerprint(*modules: str) -> str:
    """Fingerprint (16 hex) of the source of ``modules`` (a package stands for all its ``.py`` files),
    e.g. ``code_fingerprint("spotwhisper.language", "spotwhisper.genes")``."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"code_fingerprint: no module {name!r}")
        if spec.submodule_search_locations:  # a package
            folder = Path(spec.origin).parent
            files = sorted(folder.rglob("*.py"))
        else:
            folder, files = Path(spec.origin).parent, [Path(spec.origin)]
        for f in files:
            h.update(f"{name}:{f.relative_to(folder).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(*parts: Any) -> str:
    """16-hex key of JSON-serialisable ``parts`` (settings, fingerprints, names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
