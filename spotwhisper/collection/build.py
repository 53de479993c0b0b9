"""Build a collection: run the pipeline over slides, index every route in FAISS, keep the slide files.

``build_collection`` is what ``spotwhisper index build SLIDES…`` runs (the local engine; the Ray
engine, :mod:`spotwhisper.scale`, stages slides and commits them with :mod:`.publish`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
from tqdm.auto import tqdm

from .. import keys
from ..index import CollectionIndex, build_from_anndata
from ..io.inputs import load_input
from ..pipeline import Models, PipelineConfig, process_slide
from .store import SlideStore

log = logging.getLogger(__name__)


def slide_name(adata: ad.AnnData) -> str:
    """The slide id of a processed AnnData (its single ``obs["section"]`` value)."""
    names = adata.obs[keys.SECTION].astype(str).unique()
    if len(names) != 1:
        raise ValueError(f"expected one slide per AnnData, found sections {list(names)}")
    return str(names[0])


def process_slides(specs: Sequence[str], data_dir: str | Path | None = None, models: Models | None = None,
                   cfg: PipelineConfig | None = None, mpp: float | None = None, progress: bool = True) -> list[ad.AnnData]:
    """Run :func:`~spotwhisper.pipeline.process_slide` on each slide spec (section id, .h5ad or image)."""
    models = models or Models.load(cfg)
    out = []
    for spec in tqdm(list(specs), desc="slides", unit="slide", disable=not progress):
        out.append(process_slide(load_input(spec, data_dir, mpp=mpp), models, cfg, progress=progress))
    return out


def index_slides(adatas: Sequence[ad.AnnData], collection: str, index_dir: str | Path | None = None,
                 mode: str = "create") -> CollectionIndex:
    """Index processed slides (every configured route they all hold) and store their slide files."""
    index = build_from_anndata(list(adatas), collection, index_dir=index_dir, mode=mode)
    store_slides(adatas, index.folder)
    return index


def store_slides(adatas: Sequence[ad.AnnData], folder: str | Path) -> list[str]:
    """Write ``<folder>/slides/<slide>.h5ad`` for every ``obs["section"]`` of ``adatas`` (what search
    reads besides the vectors: spots, coordinates, image, inferred expression, proteins) → slide ids."""
    store, names = SlideStore(Path(folder)), []
    for a in adatas:
        if keys.SECTION not in a.obs:
            raise ValueError("an AnnData without obs['section'] cannot be stored as slides")
        sections = a.obs[keys.SECTION].astype(str)
        for name in sections.unique():
            store.put(name, a if sections.nunique() == 1 else a[(sections == name).to_numpy()].copy())
            names.append(name)
    return names


def build_collection(collection: str, specs: Sequence[str], data_dir: str | Path | None = None, *,
                     index_dir: str | Path | None = None, mode: str = "create", models: Models | None = None,
                     mpp: float | None = None, progress: bool = True) -> CollectionIndex:
    """Pipeline over ``specs`` → FAISS indexes + slide files in ``<index_dir>/<collection>/``."""
    if not specs:
        raise ValueError("no slides given")
    adatas = process_slides(specs, data_dir, models, mpp=mpp, progress=progress)
    return index_slides(adatas, collection, index_dir, mode)


def remove_slide(collection: str, slide: str, index_dir: str | Path | None = None) -> int:
    """Remove a slide's vectors and its slide file; returns the number of vectors removed."""
    index = CollectionIndex.open(collection, index_dir=index_dir)
    n = index.remove_slide(slide)
    SlideStore(index.folder).remove(slide)
    return n
