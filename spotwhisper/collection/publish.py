"""Commit staged slides into a FAISS collection with its slide files — all at once or not at all.

Both engines (local, :func:`spotwhisper.collection.build_collection`; Ray,
:mod:`spotwhisper.scale`) commit through here. A new collection (``create``, ``overwrite``, or
``add`` to a missing one) is built complete — every route's index, metadata, every
``slides/<slide>.h5ad``, the manifest last — inside ``<index_dir>/.tmp-<name>-*`` and then moved
into place in one step (:func:`move_into_place`: a rename; for ``overwrite`` an atomic exchange of
the two folders under the old collection's exclusive lock, then the old one is deleted). A kill at
any point leaves either the previous collection or the new one, never a mix, and the next build
cleans what the killed one left (:func:`recover`). ``add`` to an existing collection commits
batches of slides: slide files first (not listed by the manifest, so not searched), then the
index layer's atomic manifest update; a rerun skips slides the collection already holds.

The driver reads only what indexing needs from each staged file (obs, embeddings, scale factors),
``commit_batch_slides`` slides at a time; the slide files are hard-linked (or copied) from staging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import exchange, kill_point, temp_dir
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
from ..index.manifest import MANIFEST
from ..names import check_name
from .config import CollectionConfig, load_collection_config
from .staging import StagedSlide, read_index_view, slide_name, staged_n_obs
from .store import SlideStore

log = logging.getLogger(__name__)


def publish(items: Sequence[StagedSlide], collection: str, index_dir: str | Path | None = None, mode: str = "create",
            cfg: CollectionConfig | None = None, index_cfg: IndexConfig | None = None,
            progress: bool = True) -> CollectionIndex:
    """Index the staged slides ``items`` into ``collection`` (``mode``: create | overwrite | add)."""
    check_mode(mode)
    check_name(collection, "collection")
    if not items:
        raise ValueError("no staged slides to index")
    cfg = cfg or load_collection_config()
    index_cfg = index_cfg or load_index_config()
    root = resolve_index_dir(index_dir, index_cfg)
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root, collection, index_cfg.lock_timeout):
        recover(root, collection)
        exists = collection in list_collections(root, index_cfg)
        if exists and mode == "create":
            raise CollectionExistsError(
                f"collection {collection!r} exists in {root}: pass --overwrite to replace it or --add to add slides")
        if exists and mode == "add":
            coll = CollectionIndex.open(collection, index_dir=root, cfg=index_cfg)
            _add_batches(coll, items, cfg, index_cfg, progress)
            return coll
        tmp_root = temp_dir(root, f".tmp-{collection}-")
        try:
            _build_batches(items, collection, tmp_root, cfg, index_cfg, progress)
            kill_point("commit:complete")
            move_into_place(tmp_root / collection, root / collection, replace=exists, timeout=index_cfg.lock_timeout)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    return CollectionIndex.open(collection, index_dir=root, cfg=index_cfg)


def check_mode(mode: str) -> None:
    """``ValueError`` unless ``mode`` is create, overwrite or add."""
    if mode not in ("create", "overwrite", "add"):
        raise ValueError(f"mode must be 'create', 'overwrite' or 'add', got {mode!r}")


@contextlib.contextmanager
def build_lock(root: Path, collection: str, timeout: float, poll: float = 0.1) -> Iterator[None]:
    """Hold the index folder's build lock (POSIX ``flock`` on the folder itself) for the block: two
    commits never run at once, so one never cleans up the other's temporary folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: commits are not serialised
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{root}: another build is committing a collection (waited {timeout:.0f} s "
                                       f"to commit {collection!r})") from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)


def _leftovers(root: Path, collection: str, kind: str) -> list[Path]:
    """``.tmp-<collection>-*`` / ``.old-<collection>-*`` folders of this collection (not of ``<collection>-x``:
    ``mkdtemp`` suffixes hold no ``-``)."""
    prefix = f".{kind}-{collection}-"
    return sorted(p for p in root.glob(f"{prefix}*") if "-" not in p.name[len(prefix):])


def recover(root: Path, collection: str) -> None:
    """Undo what a killed commit of ``collection`` left in ``root`` (call under :func:`build_lock`):
    when the collection is missing but an interrupted two-step swap left the previous one in
    ``.old-<name>-*``, put it back; then delete every ``.tmp-<name>-*`` and ``.old-<name>-*``."""
    final = root / collection
    if not (final / MANIFEST).is_file():
        for old in _leftovers(root, collection, "old"):
            if (old / collection / MANIFEST).is_file() and not final.exists():
                (old / collection).rename(final)
                log.warning("restored collection %r from %s, left by an interrupted commit", collection, old.name)
                break
    kinds = ("tmp", "tmp-ray", "old")  # tmp-ray: the name earlier versions gave Ray commits
    for path in [p for kind in kinds for p in _leftovers(root, collection, kind)]:
        log.info("removing %s, left by an interrupted commit", path.name)
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
        kill_point("commit:indexed")
        _link_slide_files(coll.folder, batch, views)


def _add_batches(coll: CollectionIndex, items: Sequence[StagedSlide], cfg: CollectionConfig, index_cfg: IndexConfig,
                 progress: bool) -> None:
    """Add staged slides to an existing collection, batch by batch: the new slides' files first
    (invisible until the manifest lists them), then their vectors (an atomic manifest update);
    slides the collection already holds are skipped (a rerun after a kill resumes)."""
    for batch in tqdm(_batches(items, cfg.commit_batch_slides), desc="indexing", unit="batch", disable=not progress):
        views = [read_index_view(it.path, list(index_cfg.routes.values())) for it in batch]
        have = set(coll.slides())
        new = [(it, v) for it, v in zip(batch, views) if slide_name(v) not in have]
        if len(new) < len(batch):
            log.info("%d slide(s) already in %r; not added again", len(batch) - len(new), coll.name)
        if new:
            _link_slide_files(coll.folder, [it for it, _ in new], [v for _, v in new])
            kill_point("add:slides")
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


def move_into_place(new: Path, final: Path, replace: bool, timeout: float) -> None:
    """Make the finished collection ``new`` the collection ``final`` in one step: a rename, or with
    ``replace`` an atomic exchange of the two folders under the old collection's exclusive lock
    (readers finish loading first), after which the old one is deleted. Where the file system
    cannot exchange folders, the old one is renamed aside first; :func:`recover` puts it back if
    the process dies in between."""
    if not replace:
        if final.exists():
            raise CollectionExistsError(f"collection {final.name!r} appeared in {final.parent} while building")
        new.rename(final)
        return
    with collection_lock(final, exclusive=True, timeout=timeout):
        if exchange(new, final):
            kill_point("commit:swapped")
            shutil.rmtree(new, ignore_errors=True)  # now the previous collection
            return
        old = temp_dir(final.parent, f".old-{final.name}-")
        final.rename(old / final.name)
        kill_point("commit:old-moved")
        try:
            new.rename(final)
        except BaseException:
            (old / final.name).rename(final)  # put the previous collection back
            raise
    shutil.rmtree(old, ignore_errors=True)
