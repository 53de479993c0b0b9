"""The pipeline as a Ray Data batch job: ``spotwhisper index build --engine ray``.

Slides flow through ``ray.data.from_items(specs).map_batches(SlideWorker, ...)``: a pool of actors,
each loading the models once (:meth:`SlideWorker.__init__`) and then running tiles → features →
inferred expression → proteins → embeddings on one slide per call, writing the result to the
staging folder (:mod:`spotwhisper.collection.staging`). Only small status records travel back through
the object store. When every slide is staged, the driver commits them into the FAISS collection in
one atomic step (:mod:`spotwhisper.collection.publish`). The vectors equal those of the local engine
(``spotwhisper.collection.build_collection``): both call the same ``process_slide``.

Ray is used as found: this process's running session, else ``address`` in ``configs/scale.yaml``
or ``$RAY_ADDRESS`` (an existing cluster), else a local instance with ``num_cpus`` CPUs that is shut
down again at the end. A local instance started here listens on 127.0.0.1 only (every Ray process:
GCS, raylet, workers, agents; :func:`start_local_ray`) and has no dashboard; securing a cluster is
the README's "Scaling out" section.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import kill_point
from ..collection import (
    CollectionConfig,
    commit_build,
    load_collection_config,
    plan_build,
    staging,
)
from ..collection.staging import StagedSlide
from ..config import load_config
from ..extras import require
from ..index import CollectionIndex, load_index_config, resolve_index_dir
from ..pipeline import Models, PipelineConfig
from .config import ScaleConfig, load_scale_config

log = logging.getLogger(__name__)
_GB = 1 << 30


#: Ray reads this at import and, when it is "0", takes 127.0.0.1 as the node address (so every server
#: binds loopback) instead of the address other machines would reach
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_mode() -> Iterator[None]:
    """Ray's "no cluster" mode for the block: 127.0.0.1 stays the node address (Ray otherwise turns it
    into the machine's network address), also in the processes started meanwhile."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(_RAY_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_RAY_CLUSTER_ENV, None)
        else:
            os.environ[_RAY_CLUSTER_ENV] = before_env


def start_local_ray(num_cpus: int, object_store_memory: int | None = None) -> None:
    """``ray.init`` a local instance bound to 127.0.0.1: the node address is loopback, so the GCS,
    raylet, object manager, workers and agents listen there only; no dashboard."""
    import ray

    with _loopback_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 log_to_driver=False, _node_ip_address=LOOPBACK)


def join_ray(address: str) -> None:
    """``ray.init(address=...)``; a cluster on this machine's loopback (``127.0.0.1:port``, as
    :func:`start_local_ray` makes) is joined on loopback."""
    import ray

    local = address.split("://")[-1].rsplit(":", 1)[0] in (LOOPBACK, "localhost")
    with _loopback_mode() if local else contextlib.nullcontext():
        ray.init(address=address, log_to_driver=False)


@contextlib.contextmanager
def ray_session(cfg: ScaleConfig, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the ``with`` block: keep a running session, join ``cfg.address`` /
    ``$RAY_ADDRESS``, or start a local instance of ``num_cpus`` (default ``cfg.num_cpus``) CPUs bound
    to 127.0.0.1 (:func:`start_local_ray`). Disconnects (and stops a local instance) only when it
    connected here."""
    ray = require("ray", "the Ray engine (spotwhisper.scale)")

    if ray.is_initialized():
        yield
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining the Ray cluster at %s", address)
        join_ray(address)
    else:
        start_local_ray(num_cpus or cfg.num_cpus, int(cfg.object_store_gb * _GB) if cfg.object_store_gb else None)
    try:
        yield
    finally:
        ray.shutdown()


class SlideWorker:
    """Ray Data actor: loads the pipeline models once, then stages the slides of each batch."""

    def __init__(self, pipeline: PipelineConfig, data_dir: str | None, mpp: float | None, torch_threads: int):
        import torch

        torch.set_num_threads(torch_threads)
        self.models = Models.load(pipeline)
        self.pipeline, self.data_dir, self.mpp = pipeline, data_dir, mpp
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """``batch`` columns spec / label / path (one row per slide) → one status row per slide."""
        done = [staging.stage_slide(StagedSlide(str(s), str(lb), Path(str(p))), self.models, self.pipeline, self.data_dir,
                            self.mpp, self.worker)
                for s, lb, p in zip(batch["spec"], batch["label"], batch["path"])]
        return {"path": [str(it.path) for it in done], "status": [it.status for it in done],
                "n_spots": [it.n_spots for it in done], "seconds": [it.seconds for it in done],
                "error": [it.error for it in done], "worker": [it.worker for it in done],
                "peak_rss_mb": [it.peak_rss_mb for it in done]}


def _actor_count(cfg: ScaleConfig, n_slides: int) -> int:
    """Actors to start: ``cfg.actors``, else as many as the cluster's CPUs, memory (and GPUs) hold;
    at most one per slide. Raises ``ValueError`` when not even one actor fits (it would wait forever)."""
    import ray

    if cfg.actors is not None:  # trusted as given (e.g. an autoscaling cluster that starts empty)
        return max(1, min(cfg.actors, n_slides))
    res = ray.cluster_resources()
    fits = {"CPU": res.get("CPU", 0) // cfg.cpus_per_actor, "memory": res.get("memory", 0) // (cfg.memory_per_actor_gb * _GB)}
    if cfg.gpus_per_actor:
        fits["GPU"] = res.get("GPU", 0) // cfg.gpus_per_actor
    if min(fits.values()) < 1:
        raise ValueError(
            f"the Ray cluster cannot hold one slide actor: it has {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU, "
            f"{res.get('memory', 0) / _GB:.1f} GB memory; an actor asks for {cfg.cpus_per_actor:g} CPU, "
            f"{cfg.gpus_per_actor:g} GPU, {cfg.memory_per_actor_gb:g} GB (lower them in configs/scale.yaml)")
    return max(1, min(int(min(fits.values())), n_slides))


def _run_actors(todo: list[StagedSlide], cfg: ScaleConfig, pipeline: PipelineConfig, data_dir: str | None,
                mpp: float | None, progress: bool) -> None:
    """Stage the slides of ``todo`` on a Ray actor pool; updates the items in place as results arrive."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray_progress_bars
    n_actors = _actor_count(cfg, len(todo))
    env = {k: os.environ[k] for k in cfg.forward_env if k in os.environ}
    extra = {"num_gpus": cfg.gpus_per_actor} if cfg.gpus_per_actor else {}
    ds = ray.data.from_items([{"spec": it.spec, "label": it.label, "path": str(it.path)} for it in todo],
                             override_num_blocks=len(todo))
    ds = ds.map_batches(
        SlideWorker,
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=1),
        fn_constructor_kwargs={"pipeline": pipeline, "data_dir": data_dir, "mpp": mpp,
                               "torch_threads": cfg.torch_threads},
        num_cpus=cfg.cpus_per_actor,
        memory=cfg.memory_per_actor_gb * _GB,
        runtime_env={"env_vars": env} if env else None,
        **extra,
    )
    by_path = {str(it.path): it for it in todo}
    log.info("processing %d slides on %d Ray actors", len(todo), n_actors)
    with tqdm(total=len(todo), desc="slides (ray)", unit="slide", disable=not progress) as bar:
        for row in ds.iter_rows():
            it = by_path[str(row["path"])]
            it.status, it.error, it.worker = str(row["status"]), str(row["error"]), str(row["worker"])
            it.n_spots, it.seconds, it.peak_rss_mb = int(row["n_spots"]), float(row["seconds"]), float(row["peak_rss_mb"])
            bar.update(1)
            if it.status == staging.FAILED:
                log.warning("%s failed: %s", it.spec, it.error)
            kill_point("stage")


def run_slides_ray(specs: Sequence[str], data_dir: str | Path | None = None, *, collection: str,
                   index_dir: str | Path | None = None, mpp: float | None = None, num_cpus: int | None = None,
                   cfg: ScaleConfig | None = None, pipeline: PipelineConfig | None = None,
                   collection_cfg: CollectionConfig | None = None, progress: bool = True) -> list[StagedSlide]:
    """Stage every slide of ``specs`` for ``collection`` on Ray, reusing slides staged by an earlier
    (interrupted) run. Returns one :class:`StagedSlide` per spec, in order, with ``status``
    ``reused`` or ``processed``; raises :class:`SlidesFailedError` when any slide failed."""
    collection_cfg = collection_cfg or load_collection_config()
    pipeline = pipeline or load_config(PipelineConfig, "pipeline")
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    folder = staging.staging_folder(collection, index_dir, collection_cfg)
    fingerprint = staging.model_fingerprint(pipeline, collection_cfg)
    items = staging.plan_staging(list(map(str, specs)), folder, data_dir, mpp, fingerprint)
    return _stage_on_ray(items, data_dir, mpp, num_cpus, cfg or load_scale_config(), pipeline, progress)


def _stage_on_ray(items: list[StagedSlide], data_dir: str | None, mpp: float | None, num_cpus: int | None,
                  cfg: ScaleConfig, pipeline: PipelineConfig, progress: bool) -> list[StagedSlide]:
    todo = [it for it in items if it.status != staging.REUSED]
    log.info("%d slides: %d staged already, %d to process", len(items), len(items) - len(todo), len(todo))
    if todo:
        todo[0].path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with ray_session(cfg, num_cpus):
            _run_actors(todo, cfg, pipeline, data_dir, mpp, progress)
        spots = sum(it.n_spots for it in todo)
        log.info("Ray: %d spots in %.1f s (%.2f spots/s)", spots, time.perf_counter() - start,
                 spots / max(time.perf_counter() - start, 1e-9))
    failed = [it for it in items if it.status == staging.FAILED]
    if failed:
        raise staging.SlidesFailedError(failed, len(items))
    return items


def build_collection_ray(collection: str, specs: Sequence[str], data_dir: str | Path | None = None, *,
                         index_dir: str | Path | None = None, mode: str = "create", mpp: float | None = None,
                         num_cpus: int | None = None, cfg: ScaleConfig | None = None,
                         pipeline: PipelineConfig | None = None, collection_cfg: CollectionConfig | None = None,
                         progress: bool = True) -> CollectionIndex:
    """Pipeline over ``specs`` on Ray → FAISS indexes + slide files in ``<index_dir>/<collection>/``.

    Same result as the local engine. Every input is checked before Ray starts. Resumable: rerun the
    same command after a kill and finished slides are taken from staging; the collection appears
    (or replaces the old one) in one step when complete. ``mode``: create | overwrite | add.
    ``num_cpus`` sizes a local Ray instance started here.
    """
    cfg = cfg or load_scale_config()
    collection_cfg = collection_cfg or load_collection_config()
    pipeline = pipeline or load_config(PipelineConfig, "pipeline")
    root = resolve_index_dir(index_dir, load_index_config())
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    items = plan_build(collection, specs, data_dir, root, mode, mpp, pipeline, collection_cfg)
    _stage_on_ray(items, data_dir, mpp, num_cpus, cfg, pipeline, progress)
    return commit_build(items, collection, root, mode, collection_cfg, progress)
