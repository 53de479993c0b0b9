"""A collection: FAISS indexes of one or more routes over many slides, with metadata and a manifest.

Folder layout (see ``indexes/README.md``)::

    <index_dir>/<collection>/
        manifest.json             models, factory strings, shards, versions (the source of truth)
        .lock                     reader/writer lock
        templates/<route>-g<N>.faiss   trained empty IVF/PQ index every shard starts from
        shards/<id>/metadata.parquet, <route>.faiss, [<route>.vectors.npy]

Writers hold the exclusive lock, write new shard folders, replace the manifest atomically and
then delete what it no longer lists; readers load everything under the shared lock.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..routes import canonical_route
from ..atomic import temp_dir
from ..names import check_name, is_valid_name
from .config import IndexConfig, load_index_config, resolve_index_dir
from .errors import (
    CollectionExistsError,
    IndexFormatError,
    UnknownCollectionError,
    UnknownSlideError,
)
from .factory import gpus_available, to_search_device
from .locking import collection_lock
from .manifest import MANIFEST, Manifest, RouteModel, read_manifest
from .metadata import ID, SlideData
from .results import IndexHits, make_hits
from .shards import (
    SHARDS,
    Shard,
    load_shard,
    merge_indexes,
    rewrite_without,
    search_shards,
)
from .vectors import as_unit_vectors
from .writer import add_shards, collect_garbage, commit, fill, next_shard_id, validated

log = logging.getLogger(__name__)
def list_collections(index_dir: str | Path | None = None, cfg: IndexConfig | None = None) -> list[str]:
    """Names of the collections in the index folder (sub-folders holding a manifest), sorted."""
    root = resolve_index_dir(index_dir, cfg)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def locate_collection(
    path_or_name: str | Path, index_dir: str | Path | None = None, cfg: IndexConfig | None = None
) -> Path:
    """The folder of a collection given as a folder path or a name inside the index folder.

    A replace (``--overwrite``) interrupted between its two renames — only where the file system
    cannot exchange folders atomically — leaves the previous collection in ``.old-<name>-*/<name>``
    until the next build puts it back; readers are pointed there meanwhile.
    """
    p = Path(path_or_name)
    if (p / MANIFEST).is_file():
        return p
    root = resolve_index_dir(index_dir, cfg)
    candidate = root / str(path_or_name)
    if (candidate / MANIFEST).is_file():
        return candidate
    if is_valid_name(str(path_or_name)):
        prefix = f".old-{path_or_name}-"
        for aside in sorted(root.glob(f"{prefix}*/{path_or_name}/{MANIFEST}")):
            if "-" not in aside.parent.parent.name[len(prefix):]:
                return aside.parent
    known = list_collections(root)
    raise UnknownCollectionError(
        f"unknown collection {str(path_or_name)!r}: no {MANIFEST} in {p if p.is_dir() else candidate}; "
        f"collections in {root}: {', '.join(known) if known else 'none'}"
    )


class CollectionIndex:
    """FAISS indexes of a collection, loaded in memory (use :meth:`open` or :meth:`build`)."""

    def __init__(self, folder: Path, manifest: Manifest, shards: list[Shard], cfg: IndexConfig):
        self.folder = Path(folder)
        self.manifest = manifest
        self.cfg = cfg
        self._set_shards(shards)

    # ------------------------------------------------------------------ opening and building
    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        index_dir: str | Path | None = None,
        models: Mapping[str, RouteModel] | None = None,
        cfg: IndexConfig | None = None,
    ) -> CollectionIndex:
        """Load a collection (folder path or name in the index folder); ``models`` are checked against the manifest."""
        cfg = cfg or load_index_config()
        folder = locate_collection(path, index_dir, cfg)
        with collection_lock(folder, exclusive=False, timeout=cfg.lock_timeout):
            manifest = read_manifest(folder)
            if models:
                manifest.check_models(dict(models))  # before loading any shard
            shards = [load_shard(folder, info, manifest.file_names()) for info in manifest.shards]
        return cls(folder, manifest, shards, cfg)

    @classmethod
    def build(
        cls,
        name: str,
        slides: Sequence[SlideData],
        models: Mapping[str, RouteModel],
        *,
        index_dir: str | Path | None = None,
        cfg: IndexConfig | None = None,
        factory: str | Mapping[str, str] | None = None,
        train_vectors: Mapping[str, np.ndarray] | None = None,
        expected_vectors: int | None = None,
        overwrite: bool = False,
    ) -> CollectionIndex:
        """Build collection ``name`` from ``slides`` (vectors for every route in ``models``), atomically.

        The factory string of a route comes from ``factory`` or the config rules for
        ``expected_vectors`` (default: the vectors given). IVF/PQ templates are trained once on a
        sample of ``train_vectors[route]`` (default: the slides' vectors); later slides are added
        to copies of them. An existing collection is replaced only with ``overwrite=True``.
        """
        cfg = cfg or load_index_config()
        check_name(name, "collection")
        models = {canonical_route(r): m for r, m in models.items()}  # older route names (text …) are read as routes
        if isinstance(factory, Mapping):
            factory = {canonical_route(r): f for r, f in factory.items()}
        if train_vectors is not None:
            train_vectors = {canonical_route(r): v for r, v in train_vectors.items()}
        for route in models:
            check_name(route, "route")
        slides = validated(slides, models)
        root = resolve_index_dir(index_dir, cfg)
        folder = root / name
        if folder.exists():
            if not (folder / MANIFEST).is_file():
                raise IndexFormatError(f"{folder} exists but is not a collection (no {MANIFEST}); move it away first")
            if not overwrite:
                raise CollectionExistsError(
                    f"collection {name!r} exists in {root}: "
                    "pass overwrite=True (--overwrite) or add slides to it (--add)"
                )
            with collection_lock(folder, exclusive=True, timeout=cfg.lock_timeout):
                old = read_manifest(folder)
                collect_garbage(folder, old)  # leftovers of a crashed writer would clash with new shard ids
                manifest = Manifest(
                    name, created=old.created, generation=old.generation, next_id=old.next_id, next_shard=old.next_shard
                )
                fill(folder, manifest, slides, models, cfg, factory, train_vectors, expected_vectors)
                commit(folder, manifest)
            return cls.open(folder, cfg=cfg)
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(root, f".tmp-{name}-")
        try:
            manifest = Manifest(name)
            fill(tmp, manifest, slides, models, cfg, factory, train_vectors, expected_vectors)
            commit(tmp, manifest)
            try:
                tmp.rename(folder)
            except OSError as err:
                raise CollectionExistsError(f"collection {name!r} appeared in {root} while building ({err})") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(folder, cfg=cfg)

    # ------------------------------------------------------------------ reading
    @property
    def name(self) -> str:
        return self.manifest.collection

    def routes(self) -> list[str]:
        """Route names of this collection."""
        return list(self.manifest.routes)

    def slides(self) -> list[str]:
        """Slides in this collection."""
        return self.manifest.slides()

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        return (
            f"CollectionIndex({self.name!r}, {len(self.slides())} slides, {len(self)} vectors, routes={self.routes()})"
        )

    def check_models(self, models: Mapping[str, RouteModel]) -> None:
        """Raise :class:`ModelMismatchError` when a route was built with another model than ``models[route]``."""
        self.manifest.check_models(dict(models))

    def search(
        self,
        route: str,
        queries: np.ndarray,
        k: int = 10,
        *,
        slides: Sequence[str] | None = None,
        model: RouteModel | None = None,
    ) -> IndexHits:
        """Top-``k`` spots by cosine similarity for each query vector ``(q, D)`` (or one ``(D,)``).

        ``slides`` restricts the search to those slides; ``model`` (the caller's encoder) is
        checked against the one the route was built with.
        """
        route = canonical_route(route)
        info = self.manifest.route(route)
        if model is not None:
            self.check_models({route: model})
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.cfg.search.max_k:
            raise ValueError(f"k must be an integer in [1, {self.cfg.search.max_k}], got {k!r}")
        q = as_unit_vectors(queries, info.dim, f"query vectors for route {route!r}")
        if slides is not None:
            slides = [slides] if isinstance(slides, str) else list(slides)
            self._check_slides(slides)
        scores, ids = search_shards(self._shards, route, q, int(k), self.cfg.search, slides, self._devices)
        return make_hits(route, scores, ids, self._meta)

    def vectors_for(self, route: str, slide: str) -> SlideData:
        """All vectors of ``slide`` in ``route`` ``(n, D)`` with their metadata rows (ids included).

        Exact for Flat/IVF-Flat/HNSW; for PQ the stored float32 copy when kept, else the PQ reconstruction.
        """
        route = canonical_route(route)
        self.manifest.route(route)
        self._check_slides([slide])
        shard = next(s for s in self._shards if slide in s.info.slides)
        rows = shard.metadata[shard.metadata["slide"] == slide].reset_index(drop=True)
        ids = rows[ID].to_numpy(np.int64)
        return SlideData(slide, rows, {route: shard.route_vectors(route, ids)})

    def merged_index(self, route: str) -> faiss.Index:
        """One faiss index holding every shard's vectors of ``route`` (``merge_from``), e.g. for export or a GPU."""
        route = canonical_route(route)
        self.manifest.route(route)
        if not self._shards:
            raise ValueError(f"collection {self.name!r} holds no vectors")
        return merge_indexes([s.indexes[route] for s in self._shards])

    def info(self) -> dict:
        """Summary: manifest fields, per-route vectors, factory, memory per million vectors, disk use."""
        routes = {}
        for name, r in self.manifest.routes.items():
            disk = sum(p.stat().st_size for p in (self.folder / SHARDS).glob(f"*/{name}.*") if p.is_file())
            routes[name] = {
                "model": str(r.identity),
                "factory": r.factory,
                "n_vectors": r.n_vectors,
                "lossy": r.lossy,
                "stored_vectors": r.stored_vectors,
                "bytes_per_vector": r.bytes_per_vector,
                "ram_mb_per_million": round(r.bytes_per_vector * 1e6 / 2**20, 1),
                "disk_mb": round(disk / 2**20, 2),
            }
        m = self.manifest
        return {
            "collection": m.collection,
            "folder": str(self.folder),
            "generation": m.generation,
            "created": m.created,
            "updated": m.updated,
            "spotwhisper_version": m.spotwhisper_version,
            "faiss_version": m.faiss_version,
            "n_slides": len(self.slides()),
            "n_shards": len(m.shards),
            "n_vectors": len(self),
            "slides": self.slides(),
            "routes": routes,
        }

    def refresh(self) -> bool:
        """Reload when another process changed the collection; True when something changed."""
        with collection_lock(self.folder, exclusive=False, timeout=self.cfg.lock_timeout):
            if read_manifest(self.folder).generation == self.manifest.generation:
                return False
            self._reload()
        return True

    # ------------------------------------------------------------------ writing
    def add_slides(self, slides: Sequence[SlideData]) -> None:
        """Add slides (vectors for every route of the collection) as new shards; nothing else is rewritten."""
        with collection_lock(self.folder, exclusive=True, timeout=self.cfg.lock_timeout):
            manifest = read_manifest(self.folder)
            collect_garbage(self.folder, manifest)
            models = {r: info.identity for r, info in manifest.routes.items()}
            add_shards(self.folder, manifest, validated(slides, models, manifest.slides()), self.cfg)
            commit(self.folder, manifest)
            self._reload()

    def add_slide(self, slide: SlideData) -> None:
        """Add one slide (see :meth:`add_slides`)."""
        self.add_slides([slide])

    def remove_slide(self, slide: str) -> int:
        """Remove ``slide``: only the shard holding it is rewritten (or dropped). Returns the vectors removed."""
        with collection_lock(self.folder, exclusive=True, timeout=self.cfg.lock_timeout):
            manifest = read_manifest(self.folder)
            collect_garbage(self.folder, manifest)
            old = manifest.shard_of(slide)
            if old is None:
                raise UnknownSlideError(
                    f"collection {manifest.collection!r} has no slide {slide!r} (slides: {manifest.slides()})"
                )
            fresh = load_shard(self.folder, old, manifest.file_names())
            n_removed = int((fresh.metadata["slide"] == slide).sum())
            new = rewrite_without(self.folder, fresh, [slide], next_shard_id(manifest), manifest.routes)
            pos = manifest.shards.index(old)
            manifest.shards[pos : pos + 1] = [new] if new is not None else []
            for info in manifest.routes.values():
                info.n_vectors -= n_removed
            commit(self.folder, manifest)
            self._reload()
        return n_removed

    # ------------------------------------------------------------------ internals
    def _set_shards(self, shards: list[Shard]) -> None:
        self._shards = shards
        frames = [s.metadata for s in shards]
        self._meta = (
            pd.concat(frames, ignore_index=True).set_index(ID) if frames else pd.DataFrame(index=pd.Index([], name=ID))
        )
        self._devices = {}
        if self.cfg.gpu == "auto" and gpus_available() > 0:
            self._devices = {
                (s.info.id, r): to_search_device(ix, self.cfg.gpu) for s in shards for r, ix in s.indexes.items()
            }

    def _reload(self) -> None:
        """Re-read the manifest and load new shards, reusing unchanged ones (caller holds a lock)."""
        manifest = read_manifest(self.folder)
        loaded = {s.info.id: s for s in self._shards}
        routes = manifest.file_names()
        shards = [loaded[i.id] if i.id in loaded else load_shard(self.folder, i, routes) for i in manifest.shards]
        self.manifest = manifest
        self._set_shards(shards)

    def _check_slides(self, slides: Sequence[str]) -> None:
        unknown = sorted(set(slides) - set(self.slides()))
        if unknown:
            raise UnknownSlideError(f"collection {self.name!r} has no slide(s) {unknown} (slides: {self.slides()})")
