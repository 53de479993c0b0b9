"""Per-slide AnnData beside a collection's FAISS indexes: ``<collection>/slides/<slide>.h5ad``.

The index holds vectors for fast top-k across a collection; the slide files hold what a search
shows and explains: inferred expression, proteins, every route's embeddings, spot geometry and
a display image.

A slide file can be damaged behind a reader's back (deleted, truncated, overwritten): reading one
raises :class:`DamagedSlideError`, which names the slide and what is wrong — never the file's path
(the message may reach a browser) — so a reader can report that slide and carry on with the others;
:meth:`SlideStore.check` tells the damaged slides of a list (the manifest's) without reading them whole.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import anndata as ad

from ..io import read_h5ad, write_h5ad
from ..names import check_name

log = logging.getLogger(__name__)
SLIDES = "slides"
MISSING = "slide file missing"
UNREADABLE = "slide file unreadable"


class DamagedSlideError(KeyError):
    """A slide of the collection whose file is missing or cannot be read; ``str()`` names the slide, not the path."""

    def __init__(self, slide: str, problem: str):
        super().__init__(f"slide {slide!r}: {problem} (rebuild it with `spotwhisper index build --add`, or "
                         f"`spotwhisper index remove-slide` it)")
        self.slide, self.problem = slide, problem

    def __str__(self) -> str:
        return str(self.args[0])


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

    def check(self, slides: list[str]) -> dict[str, str]:
        """The damaged ones among ``slides`` (say, those the manifest lists) → ``{slide: problem}``: the
        file is missing, or it is not an HDF5 file whose whole length is there (a truncated file is
        caught; only the file's header is read)."""
        import h5py

        damaged = {}
        for slide in slides:
            path = self.path(slide)
            if not path.is_file():
                damaged[slide] = MISSING
                continue
            try:
                with h5py.File(path, "r") as f:
                    if "obs" not in f:
                        damaged[slide] = UNREADABLE
            except OSError:
                damaged[slide] = UNREADABLE
        return damaged

    def get(self, slide: str) -> ad.AnnData:
        """The slide's AnnData (cached); ``KeyError`` for a slide the folder does not hold,
        :class:`DamagedSlideError` when its file cannot be read."""
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
            try:
                adata = read_h5ad(path)
            except (OSError, ValueError) as err:  # truncated, corrupt, deleted meanwhile: the path stays in the log
                log.info("slide %r: cannot read %s (%s)", slide, path, err)
                raise DamagedSlideError(slide, MISSING if not path.exists() else UNREADABLE) from None
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
