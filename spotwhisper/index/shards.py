"""Shards: folders holding the vectors of whole slides, one faiss index per route.

A shard folder ``shards/<id>/`` holds ``metadata.parquet`` (one row per vector, with its ``id``),
``<route>.faiss`` and, for lossy codes, ``<route>.vectors.npy`` (float32 copies in metadata row
order). Shards are immutable: a shard is written into a temporary folder and renamed into place;
changing one (removing a slide) writes a new shard. All shards of a route start from the same
trained template, so searching shards one by one and merging by score gives the results of a
single index holding every vector (exactly, for Flat and for IVF with a shared quantizer).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..atomic import temp_dir
from .config import IndexSearchConfig
from .errors import IndexFormatError
from .factory import ivf_of, new_index, reconstruct, remove_ids, search_params
from .manifest import RouteInfo, ShardInfo, now_iso
from .metadata import ID, read_parquet, write_parquet

SHARDS = "shards"
METADATA = "metadata.parquet"


@dataclass
class Shard:
    """A shard loaded in memory: metadata rows, an index per route, optional float32 copies."""

    info: ShardInfo
    metadata: pd.DataFrame
    indexes: dict[str, faiss.Index]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    _positions: pd.Index | None = field(default=None, repr=False)

    def ids_of(self, slides: Sequence[str] | None = None) -> np.ndarray:
        """Vector ids of ``slides`` (all when None) in this shard, int64."""
        if slides is None:
            return self.metadata[ID].to_numpy(np.int64)
        return self.metadata.loc[self.metadata["slide"].isin(slides), ID].to_numpy(np.int64)

    def route_vectors(self, route: str, ids: np.ndarray) -> np.ndarray:
        """Vectors of ``ids`` for ``route``: the stored float32 copy when there is one, else reconstructed."""
        if route in self.vectors:
            if self._positions is None:
                self._positions = pd.Index(self.metadata[ID].to_numpy(np.int64))
            pos = self._positions.get_indexer(np.asarray(ids, dtype=np.int64))
            return np.asarray(self.vectors[route][pos], dtype=np.float32)
        return reconstruct(self.indexes[route], ids)


def shard_folder(collection: Path, shard_id: str) -> Path:
    """``<collection>/shards/<shard_id>``."""
    return Path(collection) / SHARDS / shard_id


def empty_index(collection: Path, info: RouteInfo) -> faiss.Index:
    """A new empty index of a route: a copy of its trained template, or a fresh untrained-free index."""
    if info.template:
        return read_faiss(Path(collection) / info.template)
    return new_index(info.factory, info.dim)


def write_shard(
    collection: Path,
    shard_id: str,
    metadata: pd.DataFrame,
    indexes: Mapping[str, faiss.Index],
    vectors: Mapping[str, np.ndarray],
    files: Mapping[str, str] | None = None,
) -> ShardInfo:
    """Write a shard atomically (temporary folder renamed to ``shards/<shard_id>``) and describe it.

    ``metadata`` holds the ``id`` column; ``vectors`` are the float32 copies to keep (may be empty);
    ``files`` names a route's files when they are not named by the route (:meth:`Manifest.file_names`).
    """
    name = {**{r: r for r in indexes}, **(files or {})}
    tmp = temp_dir(Path(collection) / SHARDS, f".tmp-{shard_id}-")
    try:
        write_parquet(metadata.reset_index(drop=True), tmp / METADATA)
        for route, index in indexes.items():
            faiss.write_index(index, str(tmp / f"{name[route]}.faiss"))
        for route, vec in vectors.items():
            np.save(tmp / f"{name[route]}.vectors.npy", np.ascontiguousarray(vec, dtype=np.float32))
        tmp.rename(shard_folder(collection, shard_id))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    slides = list(pd.unique(metadata["slide"].astype(str)))
    return ShardInfo(id=shard_id, slides=slides, n_vectors=len(metadata), created=now_iso())


def build_shard(
    collection: Path,
    shard_id: str,
    metadata: pd.DataFrame,
    vectors: Mapping[str, np.ndarray],
    routes: Mapping[str, RouteInfo],
) -> ShardInfo:
    """Add ``vectors[route]`` (unit float32, one row per ``metadata`` row) to copies of each route's template.

    The shard is written with :func:`write_shard`; ``metadata`` holds the ``id`` column.
    """
    ids = metadata[ID].to_numpy(np.int64)
    indexes, copies = {}, {}
    for route, info in routes.items():
        index = empty_index(collection, info)
        index.add_with_ids(vectors[route], ids)
        indexes[route] = index
        if info.stored_vectors:
            copies[route] = vectors[route]
    return write_shard(collection, shard_id, metadata, indexes, copies, {r: i.file or r for r, i in routes.items()})


def load_shard(collection: Path, info: ShardInfo, routes: Mapping[str, str]) -> Shard:
    """Load a shard listed in the manifest (float32 copies are memory-mapped). A missing, truncated
    or corrupt file is an :class:`IndexFormatError` naming it."""
    folder = shard_folder(collection, info.id)
    try:
        metadata = read_parquet(folder / METADATA)
    except IndexFormatError:
        raise
    except Exception as err:  # pyarrow raises many types for a damaged file
        raise IndexFormatError(f"{folder / METADATA}: unreadable shard metadata ({type(err).__name__}: {err}); "
                               "rebuild the collection (index build --overwrite)") from err
    indexes, vectors = {}, {}
    for route, file in routes.items():  # route → the name of its files (Manifest.file_names)
        path = folder / f"{file}.faiss"
        if not path.is_file():
            raise IndexFormatError(f"{folder}: shard lacks {path.name} for route {route!r}")
        indexes[route] = read_faiss(path)
        if indexes[route].ntotal != len(metadata):
            raise IndexFormatError(f"{path}: holds {indexes[route].ntotal} vectors, its shard metadata "
                                   f"{len(metadata)}; the shard is damaged — rebuild the collection (index build --overwrite)")
        copy = folder / f"{file}.vectors.npy"
        if copy.is_file():
            try:
                vectors[route] = np.load(copy, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise IndexFormatError(f"{copy}: unreadable float32 copies ({err}); rebuild the collection") from err
    return Shard(info, metadata, indexes, vectors)


def read_faiss(path: Path) -> faiss.Index:
    """``faiss.read_index`` with an :class:`IndexFormatError` naming the file when it is truncated or corrupt."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise IndexFormatError(f"{path}: corrupt or truncated faiss index ({first[:200]}); "
                               "rebuild the collection (index build --overwrite)") from err


def rewrite_without(
    collection: Path, shard: Shard, slides: Sequence[str], new_id: str, routes: Mapping[str, RouteInfo]
) -> ShardInfo | None:
    """Write shard ``new_id`` = ``shard`` minus ``slides`` (None when nothing is left).

    Uses faiss ``remove_ids`` where the index supports it (Flat, IVF); HNSW is rebuilt from the
    remaining vectors. ``shard`` must be freshly loaded from disk (it is modified).
    """
    drop = shard.metadata["slide"].isin(slides).to_numpy()
    if drop.all():
        return None
    keep_meta = shard.metadata.loc[~drop].reset_index(drop=True)
    drop_ids, keep_ids = shard.metadata[ID].to_numpy(np.int64)[drop], keep_meta[ID].to_numpy(np.int64)
    indexes, copies = {}, {}
    for route, info in routes.items():
        index = shard.indexes[route]
        if route in shard.vectors:
            copies[route] = np.asarray(shard.vectors[route])[~drop]
        if not remove_ids(index, drop_ids):
            remaining = copies.get(route)
            if remaining is None:
                remaining = reconstruct(index, keep_ids)
            index = empty_index(collection, info)
            index.add_with_ids(remaining, keep_ids)
        indexes[route] = index
    return write_shard(collection, new_id, keep_meta, indexes, copies, {r: i.file or r for r, i in routes.items()})


def search_shards(
    shards: Sequence[Shard],
    route: str,
    queries: np.ndarray,
    k: int,
    cfg: IndexSearchConfig,
    slides: Sequence[str] | None = None,
    devices: Mapping[tuple[str, str], faiss.Index] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``route`` in every shard and keep the best ``k`` by score → ``(scores (q,k) float32, ids (q,k) int64)``.

    Missing hits have id ``-1`` and score ``-inf``. Where a shard keeps float32 copies of a lossy
    route, ``cfg.rerank × k`` candidates are re-scored exactly (PQ recall → near IVF-Flat).
    ``slides`` restricts the search to their vectors;
    ``devices`` maps ``(shard id, route)`` to a GPU copy of the index to search instead.
    """
    nq = len(queries)
    all_d, all_i = [np.full((nq, 0), -np.inf, np.float32)], [np.full((nq, 0), -1, np.int64)]
    for shard in shards:
        ids = None
        if slides is not None:
            ids = shard.ids_of(slides)
            if len(ids) == 0:
                continue
            if len(ids) == len(shard.metadata):
                ids = None
        index = (devices or {}).get((shard.info.id, route), shard.indexes[route])
        exact = route in shard.vectors and cfg.rerank > 1
        kk = min(k * cfg.rerank if exact else k, shard.indexes[route].ntotal)
        if kk == 0:
            continue
        dist, lab = index.search(queries, kk, params=search_params(shard.indexes[route], cfg, kk, ids))
        if exact:
            dist, lab = rerank(queries, lab, lambda i, s=shard: s.route_vectors(route, i), k)
        all_d.append(np.where(lab >= 0, dist, -np.inf).astype(np.float32))
        all_i.append(lab)
    dist, lab = np.hstack(all_d), np.hstack(all_i)
    if dist.shape[1] < k:
        pad = k - dist.shape[1]
        dist = np.hstack([dist, np.full((nq, pad), -np.inf, np.float32)])
        lab = np.hstack([lab, np.full((nq, pad), -1, np.int64)])
    order = np.argsort(-dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(lab, order, 1)


def rerank(queries: np.ndarray, ids: np.ndarray, lookup, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of the candidate ``ids`` ``(q, c)`` with ``queries`` ``(q, D)``; best ``k`` per query.

    ``lookup(ids_1d) -> (n, D)`` returns the float32 vectors of ids; ``-1`` candidates stay last.
    """
    valid = ids >= 0
    vecs = np.zeros((*ids.shape, queries.shape[1]), dtype=np.float32)
    vecs[valid] = lookup(ids[valid])
    scores = np.where(valid, np.einsum("qcd,qd->qc", vecs, queries), -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def merge_indexes(indexes: Sequence[faiss.Index]) -> faiss.Index:
    """One index holding every vector of ``indexes`` (same template), via faiss ``merge_from``.

    The inputs keep their vectors. HNSW indexes, which faiss cannot merge, are rebuilt by re-adding.
    """
    if not indexes:
        raise ValueError("no indexes to merge")
    for index in indexes:  # faiss merges IVF lists only without direct maps (rebuilt lazily on reconstruct)
        if (ivf := ivf_of(index)) is not None:
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    merged = faiss.clone_index(indexes[0])
    for other in indexes[1:]:
        try:
            merged.merge_from(faiss.clone_index(other), 0)  # merge_from empties its argument
        except RuntimeError:
            ids = faiss.vector_to_array(faiss.downcast_index(other).id_map).astype(np.int64)
            merged.add_with_ids(reconstruct(other, ids), ids)
    return merged
