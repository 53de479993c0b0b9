"""Per-slide AnnData beside a collection's FAISS indexes: ``<collection>/slides/<slide>.h5ad``.

The index holds vectors for fast top-k across a collection; the slide files hold what a search
shows and explains: inferred expression, proteins, every route's embeddings, spot geometry and
a display image.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import anndata as ad

from ..io import read_h5ad, write_h5ad
from ..names import check_name

SLIDES = "slides"


class SlideStore:
    """Read/write slide files of one collection folder, with a small in-memory LRU cache.

    Thread-safe: many sessions of a server read through one store (a slide is read from disk once
    even when several threads ask for it together). Slide names are checked
    (:func:`spotwhisper.names.check_name`), so a name can never reach outside ``slides/``.
    """

    def __init__(self, folder: str | Path, cache_size: int = 16):
        self.folder = Path(folder) / SLIDES
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ad.AnnData] = OrderedDict()
        self._lock = threading.Lock()  # the cache
        self._load_lock = threading.Lock()  # one read from disk at a time

    def slides(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.h5ad")) if self.folder.is_dir() else []

    def path(self, slide: str) -> Path:
        return self.folder / f"{check_name(slide, 'slide')}.h5ad"

    def _cached(self, slide: str) -> ad.AnnData | None:
        with self._lock:
            adata = self._cache.get(slide)
            if adata is not None:
                self._cache.move_to_end(slide)
            return adata

    def get(self, slide: str) -> ad.AnnData:
        adata = self._cached(slide)
        if adata is not None:
            return adata
        path = self.path(slide)
        with self._load_lock:
            adata = self._cached(slide)  # another thread may have read it meanwhile
            if adata is not None:
                return adata
            if not path.exists():
                raise KeyError(f"no slide {slide!r} in this collection (slides: {', '.join(self.slides()) or 'none'})")
            adata = read_h5ad(path)
            with self._lock:
                self._cache[slide] = adata
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return adata

    def put(self, slide: str, adata: ad.AnnData) -> Path:
        path = self.path(slide)
        with self._lock:
            self._cache.pop(slide, None)
        return write_h5ad(adata, path)

    def remove(self, slide: str) -> None:
        path = self.path(slide)
        with self._lock:
            self._cache.pop(slide, None)
        path.unlink(missing_ok=True)
