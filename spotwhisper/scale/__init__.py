"""Scale-out: the pipeline as Ray Data batch jobs over slide collections, resumable per slide.

``build_collection_ray`` is what ``spotwhisper index build --engine ray`` runs. Slides are
processed by Ray actors (models loaded once per actor) and staged one file per slide
(:mod:`.staging`); the collection is then committed atomically (:mod:`.publish`). Settings live in
``configs/scale.yaml``. Sharded FAISS indexes for large collections are the index layer's job
(:mod:`spotwhisper.index`).
"""

from .config import ScaleConfig, load_scale_config
from .publish import publish
from .ray_engine import SlideWorker, build_collection_ray, ray_session, run_slides_ray
from .staging import (
    SlidesFailedError,
    StagedSlide,
    clear_staging,
    plan_staging,
    stage_slide,
    staging_folder,
)

__all__ = [
    "ScaleConfig",
    "SlideWorker",
    "SlidesFailedError",
    "StagedSlide",
    "build_collection_ray",
    "clear_staging",
    "load_scale_config",
    "plan_staging",
    "publish",
    "ray_session",
    "run_slides_ray",
    "stage_slide",
    "staging_folder",
]
