"""On-disk cache of tile features, keyed by (slide content, model + weights, tile layout).

A key is the SHA-256 of a JSON description of everything that changes the features: the slide's
content fingerprint, the encoder (name, weights id, input size, mean/std), the tile geometry
(kind, side in µm and px, sub-tile grid, output px, a hash of the tile centres) and the stain
normalisation settings. Entries are ``<cache_dir>/<model>/<key>.npz``, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..cache import cache_dir, file_fingerprint
from ..io.slide import ArraySlide, Slide
from ..tiles.views import SlideView

log = logging.getLogger(__name__)

#: Bump when the cached arrays change meaning, so old entries are no longer used.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``<cache root>/features`` (see :mod:`spotwhisper.cache`)."""
    return cache_dir("features")


def slide_fingerprint(slide: Slide, chunk_mb: float = 1.0, full_hash_max_mb: float = 64.0) -> str:
    """Content fingerprint of a slide: of its file, or of the pixels of an in-memory slide; a
    :class:`~spotwhisper.tiles.views.SlideView` adds what it changes (µm/px, stain) to its base's."""
    if isinstance(slide, SlideView):
        base = slide_fingerprint(slide.base, chunk_mb, full_hash_max_mb)
        return "view:" + hashlib.sha256(json.dumps([base, slide.spec()], sort_keys=True).encode()).hexdigest()
    if isinstance(slide, ArraySlide):
        arr = slide._array
        return "array:" + hashlib.sha256(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode()).hexdigest()
    path = Path(slide.path)
    if path.is_dir():  # multi-file formats (MRXS …): hash the folder listing
        entries = sorted((str(q.relative_to(path)), q.stat().st_size, q.stat().st_mtime_ns) for q in path.rglob("*") if q.is_file())
        return "dir:" + hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return file_fingerprint(path, chunk_mb, full_hash_max_mb)


def array_fingerprint(arr: np.ndarray, decimals: int = 2) -> str:
    """SHA-256 of a float array rounded to ``decimals`` (tile centres in px)."""
    a = np.round(np.asarray(arr, dtype=np.float64), decimals) + 0.0  # +0.0 turns -0.0 into 0.0
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


def make_key(parts: dict[str, Any]) -> str:
    """Cache key (32 hex chars) of a JSON-serialisable description."""
    text = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class FeatureCache:
    """``.npz`` entries under ``root/<model>/<key>.npz``; corrupt or mismatched entries count as misses."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def path(self, model: str, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        return self.root / safe / f"{key}.npz"

    def load(self, model: str, key: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
        """Arrays of entry ``key`` when present and every array in ``shapes`` has that shape."""
        p = self.path(model, key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as err:  # noqa: BLE001 - truncated / corrupt file
            log.warning("feature cache entry %s is unreadable (%s); recomputing", p, err)
            return None
        for name, shape in shapes.items():
            if name not in arrays or arrays[name].shape != tuple(shape):
                got = arrays[name].shape if name in arrays else "missing"
                log.warning("feature cache entry %s: %s has shape %s, expected %s; recomputing", p, name, got, shape)
                return None
        return arrays

    def save(self, model: str, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        """Write ``arrays`` (+ ``meta`` as JSON) atomically: a temporary file, then ``os.replace``."""
        p = self.path(model, key)
        with atomic_file(p, suffix=".part.npz") as tmp:
            np.savez(tmp, **arrays, meta=np.asarray(json.dumps(meta, sort_keys=True, default=str)))
        return p
