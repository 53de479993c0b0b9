"""``sw.Collection``: a FAISS collection on disk from Python — the objects the CLI uses.

::

    coll = sw.Collection.build("mine", ["C2", "C3", "outs/"])          # = spotwhisper index build
    coll = sw.Collection.open("demo")
    coll.add(adata)                                                     # a slide processed with sw.tl.infer
    result = coll.search("tertiary lymphoid structures")                # = spotwhisper search
    result = coll.search(like=("C2", 1))                                # spots like region 1 of C2's last search
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import pandas as pd

from .. import keys
from ..collection import LiveCollection, build_collection, index_slides, remove_slide
from ..index import CollectionIndex, resolve_index_dir
from ..search.engine import SearchEngine
from ..search.example import Example, example_spots
from ..search.result import SearchResult
from .loaded import loaded_models, text_model
from .reading import slide_id


class Collection:
    """A built collection (FAISS indexes + slide files), followed as it changes: slides another process
    adds are searched at the next call (:class:`~spotwhisper.collection.LiveCollection`)."""

    def __init__(self, name: str, index_dir: str | Path | None = None):
        self.name = name
        self.index_dir = resolve_index_dir(index_dir)
        self._live = LiveCollection(name, self.index_dir, text_model())
        self.engine = SearchEngine.following(self._live, text_model=text_model())
        if self._live.current() is None:
            raise FileNotFoundError(f"no collection {name!r} in {self.index_dir} (build it: sw.Collection.build)")

    # -- making ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, name: str, index_dir: str | Path | None = None) -> Collection:
        """Open collection ``name`` (a folder of ``index_dir``, default ``$SPOTWHISPER_INDEX_DIR`` or ``indexes/``)."""
        return cls(name, index_dir)

    @classmethod
    def build(cls, name: str, slides: Sequence, index_dir: str | Path | None = None, *, data_dir: str | Path | None = None,
              mpp: float | None = None, overwrite: bool = False, progress: bool = True) -> Collection:
        """Build collection ``name`` from ``slides``: what :func:`spotwhisper.read` takes (section ids,
        Space Ranger folders, ``.h5ad``, images — run through the pipeline, staged, resumable) or AnnData
        processed with :func:`spotwhisper.tl.infer`. The collection appears whole or not at all."""
        mode = "overwrite" if overwrite else "create"
        _write(name, slides, index_dir, mode, data_dir, mpp, progress)
        return cls(name, index_dir)

    def add(self, slides, *, data_dir: str | Path | None = None, mpp: float | None = None, progress: bool = True) -> Collection:
        """Add slides (as :meth:`build` takes them; one AnnData alone too); returns ``self``."""
        _write(self.name, [slides] if isinstance(slides, (ad.AnnData, str, Path)) else slides, self.index_dir, "add",
               data_dir, mpp, progress)
        self.engine.sync(force=True)
        return self

    def remove(self, slide: str) -> int:
        """Remove ``slide`` (its vectors, then its file) → the number of vectors removed."""
        n = remove_slide(self.name, slide, self.index_dir)
        self.engine.sync(force=True)
        return n

    # -- reading --------------------------------------------------------------------------------
    @property
    def index(self) -> CollectionIndex:
        """The FAISS indexes (routes, manifest) of the latest committed state."""
        self.engine.sync()
        return self.engine.index

    def slides(self) -> list[str]:
        """Slide ids, in the order the collection lists them."""
        return self.engine.slide_names()

    def slide(self, name: str) -> ad.AnnData:
        """The processed AnnData of one slide (keys of :func:`spotwhisper.tl.infer`); do not modify it — copy first."""
        return self.engine.slide(name)

    def search(self, query: str | None = None, *, like=None, slides: list[str] | None = None,
               weights: dict[str, float] | None = None, threshold: float | None = None, explain: bool = True) -> SearchResult:
        """Search the collection for a text ``query`` or for spots ``like`` an example: ``(slide, spec)`` with
        ``spec`` as :func:`spotwhisper.tl.search` takes it (indices, obs names, a mask, ``{"box": …}``, a
        GeoJSON, or a region id of a search written into ``coll.slide(slide)`` — rarely; pass an AnnData
        searched with ``sw.tl.search`` as ``(adata, region)`` instead). Slides ranked best first."""
        if (query is None) == (like is None):
            raise ValueError("give a text query or like= (an example), not both and not neither")
        if query is not None:
            return self.engine.search(query, slides=slides, weights=weights, threshold=threshold, explain=explain)
        return self.engine.search_like(self.example(*like), slides=slides, weights=weights, threshold=threshold,
                                       explain=explain)

    def example(self, slide, spec, key: str = "search") -> Example:
        """An :class:`~spotwhisper.search.example.Example` on a slide of the collection (a slide id, or an
        AnnData of it searched with ``sw.tl.search``, whose regions ``spec`` may then name)."""
        adata = slide if isinstance(slide, ad.AnnData) else self.slide(str(slide))
        name = slide_id(adata)
        spots, label = example_spots(adata, spec, name, key)
        return Example(name, spots, label)

    def nearest(self, slide, spec, k: int | None = None) -> pd.DataFrame:
        """The ``k`` spots of the whole collection nearest an example by FAISS (route, rank, cosine, slide,
        spot, x, y) — the index's own answer, before regions and calibration."""
        from ..search.example import ExampleQuery, prototypes
        from ..search.scoring import EXAMPLE_ROUTES

        ex = self.example(slide, spec)
        protos = prototypes(self.engine.slide(ex.slide), ex, EXAMPLE_ROUTES, self.engine.cfg.like.weights, self.engine.cfg)
        route, table = self.engine.nearest_spots(ExampleQuery(ex, protos), k)
        if table is None:
            raise ValueError(f"collection {self.name!r} indexes none of the example routes ({', '.join(EXAMPLE_ROUTES)})")
        return table.assign(route=route)

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, {len(self.slides())} slides, {self.index_dir})"


def _write(name: str, slides: Sequence, index_dir, mode: str, data_dir, mpp, progress: bool) -> None:
    """Slides → the collection: specs through the pipeline (:func:`~spotwhisper.collection.build_collection`),
    AnnData as they are once processed (:func:`~spotwhisper.collection.index_slides`)."""
    slides = list(slides)
    if not slides:
        raise ValueError("no slides given")
    data = [s for s in slides if isinstance(s, ad.AnnData)]
    specs = [str(s) for s in slides if not isinstance(s, ad.AnnData)]
    if data and specs:
        raise ValueError("give slide specs (ids, paths) or AnnData, not both in one call")
    if specs:
        build_collection(name, specs, data_dir, index_dir=index_dir, mode=mode, mpp=mpp, progress=progress,
                         models=loaded_models())
        return
    missing = [slide_id(a) for a in data if keys.TEXT_EMB not in a.obsm]
    if missing:
        raise ValueError(f"slide(s) {missing} are not processed: run spotwhisper.tl.infer on them first")
    index_slides(data, name, index_dir, mode)
