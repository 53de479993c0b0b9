"""Build a collection: run the pipeline over slides, index every route in FAISS, keep the slide files.

``build_collection`` is what ``spotwhisper index build SLIDES…`` runs (the local engine; the Ray
engine, :mod:`spotwhisper.scale`, runs the same stages on actors). Both check every input before
any slide is processed, stage each finished slide (:mod:`.staging`; a rerun after a kill reuses
them) and commit them with :func:`.publish.publish`: the whole collection — indexes, metadata,
slide files, manifest last — is built in a temporary folder and moved into place in one step.
:func:`index_slides` does the same for AnnData already in memory (``--from-h5ad``, uploads).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
from tqdm.auto import tqdm

from .. import keys
from ..atomic import kill_point, temp_dir
from ..config import load_config
from ..index import (
    CollectionExistsError,
    CollectionIndex,
    IndexConfig,
    RouteModel,
    build_from_anndata,
    list_collections,
    load_index_config,
    resolve_index_dir,
)
from ..io.inputs import load_input
from ..names import check_name
from ..pipeline import Models, PipelineConfig, process_slide
from .config import CollectionConfig, load_collection_config
from .publish import build_lock, check_mode, move_into_place, publish, recover
from .staging import (
    FAILED,
    REUSED,
    SlidesFailedError,
    StagedSlide,
    clear_staging,
    model_fingerprint,
    plan_staging,
    stage_slide,
    staging_folder,
)
from ..timing import stage
from .store import SlideStore

log = logging.getLogger(__name__)


def process_slides(specs: Sequence[str], data_dir: str | Path | None = None, models: Models | None = None,
                   cfg: PipelineConfig | None = None, mpp: float | None = None, progress: bool = True) -> list[ad.AnnData]:
    """Run :func:`~spotwhisper.pipeline.process_slide` on each slide spec (section id, .h5ad or image), in memory."""
    models = models or Models.load(cfg)
    out = []
    for spec in tqdm(list(specs), desc="slides", unit="slide", disable=not progress):
        out.append(process_slide(load_input(spec, data_dir, mpp=mpp), models, cfg, progress=progress))
    return out


def check_target(collection: str, root: Path, mode: str, cfg: IndexConfig) -> None:
    """Refuse a bad collection name, a bad mode, or ``create`` of an existing collection — before any work."""
    check_name(collection, "collection")
    check_mode(mode)
    if mode == "create" and collection in list_collections(root, cfg):
        raise CollectionExistsError(
            f"collection {collection!r} exists in {root}: pass --overwrite to replace it or --add to add slides")


def plan_build(collection: str, specs: Sequence[str], data_dir: str | Path | None, root: Path, mode: str,
               mpp: float | None, pipeline: PipelineConfig, cfg: CollectionConfig) -> list[StagedSlide]:
    """Check the target and every input (each spec resolvable, none given twice, names valid) and
    plan the staging of each slide; nothing is processed yet. Shared by the local and Ray engines."""
    if not specs:
        raise ValueError("no slides given")
    check_target(collection, root, mode, load_index_config())
    folder = staging_folder(collection, root, cfg)
    return plan_staging(list(map(str, specs)), folder, data_dir, mpp, model_fingerprint(pipeline, cfg))


def build_collection(collection: str, specs: Sequence[str], data_dir: str | Path | None = None, *,
                     index_dir: str | Path | None = None, mode: str = "create", models: Models | None = None,
                     mpp: float | None = None, progress: bool = True, pipeline: PipelineConfig | None = None,
                     collection_cfg: CollectionConfig | None = None) -> CollectionIndex:
    """Pipeline over ``specs`` → FAISS indexes + slide files in ``<index_dir>/<collection>/``, in this process.

    ``mode``: create | overwrite (the new collection replaces the old one whole: its slides are
    gone) | add. Every input is checked before the first slide is processed; finished slides are
    staged, so a rerun after a kill resumes; the collection appears (or is replaced) in one step.
    """
    collection_cfg = collection_cfg or load_collection_config()
    pipeline = pipeline or load_config(PipelineConfig, "pipeline")
    root = resolve_index_dir(index_dir, load_index_config())
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    items = plan_build(collection, specs, data_dir, root, mode, mpp, pipeline, collection_cfg)
    todo = [it for it in items if it.status != REUSED]
    if len(todo) < len(items):
        log.info("%d of %d slides staged already; reusing them", len(items) - len(todo), len(items))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    for it in tqdm(todo, desc="slides", unit="slide", disable=not progress):
        models = models or Models.load(pipeline)
        stage_slide(it, models, pipeline, data_dir, mpp, worker)
        if it.status == FAILED:
            log.warning("%s failed: %s", it.spec, it.error)
        kill_point("stage")
    failed = [it for it in items if it.status == FAILED]
    if failed:
        raise SlidesFailedError(failed, len(items))
    return commit_build(items, collection, root, mode, collection_cfg, progress)


def commit_build(items: Sequence[StagedSlide], collection: str, root: Path, mode: str, cfg: CollectionConfig,
                 progress: bool = True) -> CollectionIndex:
    """Commit the staged slides of a build (:func:`.publish.publish`), then clear their staging
    folder unless ``keep_staging``. Shared by the local and Ray engines."""
    with stage("index", collection):
        coll = publish(items, collection, root, mode, cfg, progress=progress)
    if not cfg.keep_staging:
        clear_staging(staging_folder(collection, root, cfg))
    return coll


def index_slides(adatas: Sequence[ad.AnnData], collection: str, index_dir: str | Path | None = None,
                 mode: str = "create", *, routes: Mapping[str, str] | None = None,
                 models: Mapping[str, RouteModel] | None = None, cfg: IndexConfig | None = None,
                 factory: str | Mapping[str, str] | None = None) -> CollectionIndex:
    """Index processed slides (every configured route they all hold, or ``routes``) and store their
    slide files, atomically: a new or replaced collection is built whole in a temporary folder and
    moved into place; ``add`` writes the new slide files, then commits their vectors."""
    cfg = cfg or load_index_config()
    root = resolve_index_dir(index_dir, cfg)
    check_target(collection, root, mode, cfg)
    names = [n for a in adatas for n in _sections(a)]
    if len(set(names)) < len(names):
        raise ValueError(f"a slide is given twice: {sorted({n for n in names if names.count(n) > 1})}")
    kwargs = {"routes": routes, "models": models, "cfg": cfg, "factory": factory}
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root, collection, cfg.lock_timeout):
        recover(root, collection)
        exists = collection in list_collections(root, cfg)
        if exists and mode == "add":
            coll = CollectionIndex.open(collection, index_dir=root, cfg=cfg)
            taken = sorted(set(names) & set(coll.slides()))
            if taken:
                raise ValueError(f"slide(s) {taken} already in collection {collection!r} (remove them first)")
            store_slides(adatas, coll.folder)  # not searched until the manifest lists them
            kill_point("add:slides")
            return build_from_anndata(list(adatas), collection, index_dir=root, mode="add", **kwargs)
        if exists and mode == "create":
            raise CollectionExistsError(f"collection {collection!r} appeared in {root} (pass --overwrite or --add)")
        tmp = temp_dir(root, f".tmp-{collection}-")
        try:
            built = build_from_anndata(list(adatas), collection, index_dir=tmp, mode="create", **kwargs)
            kill_point("commit:indexed")
            store_slides(adatas, built.folder)
            kill_point("commit:complete")
            move_into_place(built.folder, root / collection, replace=exists, timeout=cfg.lock_timeout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return CollectionIndex.open(collection, index_dir=root, cfg=cfg)


def _sections(adata: ad.AnnData) -> list[str]:
    if keys.SECTION not in adata.obs:
        raise ValueError("an AnnData without obs['section'] cannot be stored as slides")
    return [check_name(str(s), "slide") for s in adata.obs[keys.SECTION].astype(str).unique()]


def store_slides(adatas: Sequence[ad.AnnData], folder: str | Path) -> list[str]:
    """Write ``<folder>/slides/<slide>.h5ad`` for every ``obs["section"]`` of ``adatas`` (what search
    reads besides the vectors: spots, coordinates, image, inferred expression, proteins) → slide ids.
    Section names are checked first (:func:`spotwhisper.names.check_name`): nothing is written outside."""
    store, names = SlideStore(Path(folder)), []
    checked = [(a, _sections(a)) for a in adatas]
    for a, sections in checked:
        column = a.obs[keys.SECTION].astype(str)
        for name in sections:
            store.put(name, a if len(sections) == 1 else a[(column == name).to_numpy()].copy())
            names.append(name)
    return names


def remove_slide(collection: str, slide: str, index_dir: str | Path | None = None) -> int:
    """Remove a slide's vectors (the manifest stops listing it: it is no longer searched), then its
    slide file; returns the number of vectors removed."""
    index = CollectionIndex.open(collection, index_dir=index_dir)
    n = index.remove_slide(check_name(slide, "slide"))
    SlideStore(index.folder).remove(slide)
    return n
