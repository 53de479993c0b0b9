"""Commit staged slides into a FAISS collection with its slide files — all at once or not at all.

A new collection (``create``, ``overwrite``, or ``add`` to a missing one) is built complete —
every route's index and every ``slides/<slide>.h5ad`` — inside ``<index_dir>/.tmp-ray-*`` and then
renamed into place (``overwrite`` swaps folders under the old collection's exclusive lock). A kill
at any point leaves either the previous collection or the new one, never a mix. ``add`` to an
existing collection commits batches of slides through the index layer (each batch atomic); a
rerun skips slides the collection already holds, so it also resumes cleanly.

The driver reads only what indexing needs from each staged file (obs, embeddings, scale factors),
``commit_batch_slides`` slides at a time; the slide files are hard-linked (or copied) from staging.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..index import (
    CollectionExistsError,
    CollectionIndex,
    IndexConfig,
    build_from_anndata,
    choose_factory,
    list_collections,
    load_index_config,
    resolve_index_dir,
)
from ..index.from_anndata import resolve_routes
from ..index.locking import collection_lock
from .build import slide_name
from .config import CollectionConfig, load_collection_config
from .staging import StagedSlide, read_index_view, staged_n_obs
from .store import SlideStore

log = logging.getLogger(__name__)


def publish(items: Sequence[StagedSlide], collection: str, index_dir: str | Path | None = None, mode: str = "create",
            cfg: CollectionConfig | None = None, index_cfg: IndexConfig | None = None,
            progress: bool = True) -> CollectionIndex:
    """Index the staged slides ``items`` into ``collection`` (``mode``: create | overwrite | add)."""
    if mode not in ("create", "overwrite", "add"):
        raise ValueError(f"mode must be 'create', 'overwrite' or 'add', got {mode!r}")
    if not items:
        raise ValueError("no staged slides to index")
    cfg = cfg or load_collection_config()
    index_cfg = index_cfg or load_index_config()
    root = resolve_index_dir(index_dir, index_cfg)
    exists = collection in list_collections(root, index_cfg)
    if exists and mode == "create":
        raise CollectionExistsError(
            f"collection {collection!r} exists in {root}: pass --overwrite to replace it or --add to add slides")
    if exists and mode == "add":
        coll = CollectionIndex.open(collection, index_dir=root, cfg=index_cfg)
        _add_batches(coll, items, cfg, index_cfg, progress)
        return coll
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root, collection)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".tmp-ray-{collection}-", dir=root))
    try:
        _build_batches(items, collection, tmp_root, cfg, index_cfg, progress)
        _move_into_place(tmp_root / collection, root / collection, replace=exists, timeout=index_cfg.lock_timeout)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return CollectionIndex.open(collection, index_dir=root, cfg=index_cfg)


def _remove_leftovers(root: Path, collection: str) -> None:
    """Delete what a killed commit of ``collection`` left (``.tmp-ray-<name>-*``, ``.old-<name>-*``).
    Two jobs building the same collection at once are not supported: the later one would fail."""
    for prefix in (f".tmp-ray-{collection}-", f".old-{collection}-"):
        for path in root.glob(f"{prefix}*"):
            if "-" in path.name[len(prefix):]:  # another collection's (mkdtemp suffixes have no "-")
                continue
            log.info("removing %s, left by an interrupted commit", path)
            shutil.rmtree(path, ignore_errors=True)


def _batches(items: Sequence[StagedSlide], size: int) -> list[list[StagedSlide]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _build_batches(items: Sequence[StagedSlide], collection: str, root: Path, cfg: CollectionConfig,
                   index_cfg: IndexConfig, progress: bool) -> None:
    """A new collection in ``root``: the first batch trains and builds, later batches are added."""
    batches = _batches(items, cfg.commit_batch_slides)
    for i, batch in enumerate(tqdm(batches, desc="indexing", unit="batch", disable=not progress)):
        views = [read_index_view(it.path, list(index_cfg.routes.values())) for it in batch]
        if i == 0:
            factory = None
            if len(batches) > 1:  # size the index for the whole collection, not the first batch
                total = sum(staged_n_obs(it.path) for it in items)
                routes = resolve_routes(views, None, index_cfg)
                factory = {r: choose_factory(total, int(views[0].obsm[k].shape[1]), index_cfg.factory)
                           for r, k in routes.items()}
            coll = build_from_anndata(views, collection, index_dir=root, cfg=index_cfg, factory=factory)
        else:
            build_from_anndata(views, collection, index_dir=root, cfg=index_cfg, mode="add")
        _link_slide_files(coll.folder, batch, views)


def _add_batches(coll: CollectionIndex, items: Sequence[StagedSlide], cfg: CollectionConfig, index_cfg: IndexConfig,
                 progress: bool) -> None:
    """Add staged slides to an existing collection; slides it already holds only get their slide file."""
    for batch in tqdm(_batches(items, cfg.commit_batch_slides), desc="indexing", unit="batch", disable=not progress):
        views = [read_index_view(it.path, list(index_cfg.routes.values())) for it in batch]
        have = set(coll.slides())
        new = [(it, v) for it, v in zip(batch, views) if slide_name(v) not in have]
        if len(new) < len(batch):
            log.info("%d slide(s) already in %r; not added again", len(batch) - len(new), coll.name)
        if new:
            build_from_anndata([v for _, v in new], coll.name, index_dir=coll.folder.parent, cfg=index_cfg, mode="add")
        _link_slide_files(coll.folder, batch, views, only_missing=True)
    coll.refresh()


def _link_slide_files(folder: Path, batch: Sequence[StagedSlide], views, only_missing: bool = False) -> None:
    """``<folder>/slides/<slide>.h5ad`` from each staged file: hard link, else copy; atomic per file."""
    store = SlideStore(folder)
    for item, view in zip(batch, views):
        dst = store.path(slide_name(view))
        if only_missing and dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.link.part")
        tmp.unlink(missing_ok=True)
        try:
            os.link(item.path, tmp)
        except OSError:  # another filesystem, or no hard links
            shutil.copy2(item.path, tmp)
        os.replace(tmp, dst)


def _move_into_place(new: Path, final: Path, replace: bool, timeout: float) -> None:
    """Rename the finished collection ``new`` to ``final``; with ``replace`` swap out the old one
    under its exclusive lock (readers finish loading first) and delete it afterwards."""
    if not replace:
        if final.exists():
            raise CollectionExistsError(f"collection {final.name!r} appeared in {final.parent} while building")
        new.rename(final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
    with collection_lock(final, exclusive=True, timeout=timeout):
        final.rename(old / final.name)
        try:
            new.rename(final)
        except BaseException:
            (old / final.name).rename(final)  # put the previous collection back
            raise
    shutil.rmtree(old, ignore_errors=True)
