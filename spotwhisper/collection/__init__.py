"""Collections: what a set of searchable slides is on disk, in one place (``indexes/README.md``).

A collection is the folder ``<index_dir>/<name>/``: FAISS indexes per route with their manifest
(:class:`spotwhisper.index.CollectionIndex`) and one processed slide file per slide
(``slides/<slide>.h5ad``, :class:`.store.SlideStore`). This package builds, stages, commits and
opens them; it does not answer queries (:mod:`spotwhisper.search` does, over an opened collection).

* :mod:`.build` — run the pipeline over slides and index them (``spotwhisper index build``, local engine)
* :mod:`.staging` — per-slide staged outputs, keyed by input, models and configs (resumable builds)
* :mod:`.publish` — commit staged slides into a collection all at once (used by the Ray engine)
* :mod:`.store` — the slide files beside the indexes
* :mod:`.opened` — :func:`open_collection`: indexes + slide files + the model check
* :mod:`.config` — :class:`CollectionConfig` (``configs/collection.yaml``)
"""

from .build import build_collection, index_slides, process_slides, remove_slide, slide_name, store_slides
from .config import CollectionConfig, load_collection_config
from .opened import OpenedCollection, open_collection
from .publish import publish
from .staging import (
    SlidesFailedError,
    StagedSlide,
    clear_staging,
    model_fingerprint,
    plan_staging,
    stage_slide,
    staging_folder,
)
from .store import SLIDES, SlideStore

__all__ = [
    "SLIDES",
    "CollectionConfig",
    "OpenedCollection",
    "SlideStore",
    "SlidesFailedError",
    "StagedSlide",
    "build_collection",
    "clear_staging",
    "index_slides",
    "load_collection_config",
    "model_fingerprint",
    "open_collection",
    "plan_staging",
    "process_slides",
    "publish",
    "remove_slide",
    "slide_name",
    "stage_slide",
    "staging_folder",
    "store_slides",
]
