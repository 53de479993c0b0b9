"""Collections: what a set of searchable slides is on disk, in one place (``indexes/README.md``).

A collection is the folder ``<index_dir>/<name>/``: FAISS indexes per route with their manifest
(:class:`spotwhisper.index.CollectionIndex`) and one processed slide file per slide
(``slides/<slide>.h5ad``, :class:`.store.SlideStore`). This package builds, stages, commits and
opens them; it does not answer queries (:mod:`spotwhisper.search` does, over an opened collection).

* :mod:`.build` — run the pipeline over slides and index them (``spotwhisper index build``, local engine)
* :mod:`.staging` — per-slide staged outputs, keyed by input, models and configs (resumable builds)
* :mod:`.publish` — commit staged slides into a collection all at once (both engines), recover after a kill
* :mod:`.store` — the slide files beside the indexes
* :mod:`.reader` — :func:`open_collection`: indexes + slide files + the model check
* :mod:`.watch` — :class:`LiveCollection`: an opened collection that follows its manifest (``serve``)
* :mod:`.config` — :class:`CollectionConfig` (``configs/collection.yaml``)
"""

from .build import (
    build_collection,
    commit_build,
    index_slides,
    plan_build,
    process_slides,
    remove_slide,
    store_slides,
)
from .config import CollectionConfig, load_collection_config
from .reader import OpenedCollection, open_collection
from .publish import move_into_place, publish, recover
from .staging import (
    SlidesFailedError,
    StagedSlide,
    clear_staging,
    model_fingerprint,
    plan_staging,
    slide_name,
    stage_slide,
    staging_folder,
)
from .store import SLIDES, DamagedSlideError, SlideStore
from .watch import LiveCollection

__all__ = [
    "SLIDES",
    "CollectionConfig",
    "DamagedSlideError",
    "LiveCollection",
    "OpenedCollection",
    "SlideStore",
    "SlidesFailedError",
    "StagedSlide",
    "build_collection",
    "clear_staging",
    "commit_build",
    "index_slides",
    "load_collection_config",
    "model_fingerprint",
    "move_into_place",
    "open_collection",
    "plan_build",
    "plan_staging",
    "process_slides",
    "publish",
    "recover",
    "remove_slide",
    "slide_name",
    "stage_slide",
    "staging_folder",
    "store_slides",
]
