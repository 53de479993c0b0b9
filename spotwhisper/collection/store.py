"""Per-slide AnnData beside a collection's FAISS indexes: ``<collection>/slides/<slide>.h5ad``.

The index holds vectors for fast top-k across a collection; the slide files hold what a search
shows and explains: inferred expression, proteins, every route's embeddings, spot geometry and
a display image.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import anndata as ad

from ..io import read_h5ad, write_h5ad

SLIDES = "slides"


class SlideStore:
    """Read/write slide files of one collection folder, with a small in-memory LRU cache."""

    def __init__(self, folder: str | Path, cache_size: int = 16):
        self.folder = Path(folder) / SLIDES
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ad.AnnData] = OrderedDict()

    def slides(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.h5ad")) if self.folder.is_dir() else []

    def path(self, slide: str) -> Path:
        return self.folder / f"{slide}.h5ad"

    def get(self, slide: str) -> ad.AnnData:
        if slide in self._cache:
            self._cache.move_to_end(slide)
            return self._cache[slide]
        if not self.path(slide).exists():
            raise KeyError(f"no slide {slide!r} in this collection (slides: {', '.join(self.slides()) or 'none'})")
        adata = read_h5ad(self.path(slide))
        self._cache[slide] = adata
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return adata

    def put(self, slide: str, adata: ad.AnnData) -> Path:
        self._cache.pop(slide, None)
        return write_h5ad(adata, self.path(slide))

    def remove(self, slide: str) -> None:
        self._cache.pop(slide, None)
        self.path(slide).unlink(missing_ok=True)
