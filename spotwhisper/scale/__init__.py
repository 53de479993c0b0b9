"""Scale-out: the pipeline as Ray Data batch jobs over slide collections, resumable per slide.

``build_collection_ray`` is what ``spotwhisper index build --engine ray`` runs. Slides are
processed by Ray actors (models loaded once per actor) and staged one file per slide
(:mod:`spotwhisper.collection.staging`); the collection is then committed atomically
(:mod:`spotwhisper.collection.publish`). Ray settings live in ``configs/scale.yaml``, staging and
commit settings in ``configs/collection.yaml``. Sharded FAISS indexes for large collections are
the index layer's job (:mod:`spotwhisper.index`).
"""

from .config import ScaleConfig, load_scale_config
from .ray_engine import SlideWorker, build_collection_ray, ray_session, run_slides_ray

__all__ = [
    "ScaleConfig",
    "SlideWorker",
    "build_collection_ray",
    "load_scale_config",
    "ray_session",
    "run_slides_ray",
]
