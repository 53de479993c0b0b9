"""faiss indexes: choosing a factory string, training, search parameters, ids, memory, GPU.

Every index compares L2-normalised vectors by inner product (``METRIC_INNER_PRODUCT``).
IVF indexes carry the collection's int64 ids themselves; other indexes (Flat, HNSW) are wrapped
in ``IDMap2`` so ids survive removals and vectors can be reconstructed by id.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

from .config import FactoryConfig, IndexSearchConfig

log = logging.getLogger(__name__)


def nlist_for(n: int, cfg: FactoryConfig) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest ``nlist_per_sqrt_n × sqrt(n)``, clamped."""
    target = max(1.0, cfg.nlist_per_sqrt_n * math.sqrt(max(n, 1)))
    nlist = 2 ** round(math.log2(target))
    return int(min(max(nlist, cfg.min_nlist), cfg.max_nlist))


def choose_factory(n: int, dim: int, cfg: FactoryConfig) -> str:
    """The faiss factory string for a route of ``n`` vectors of dimension ``dim`` (first matching rule)."""
    for rule in cfg.rules:
        if rule.max_vectors is None or n < rule.max_vectors:
            pq_m = max(1, dim // cfg.pq_dims_per_byte)
            while dim % pq_m:  # PQ needs m | dim
                pq_m -= 1
            return rule.factory.format(nlist=nlist_for(n, cfg), pq_m=pq_m)
    raise ValueError(
        f"no factory rule matches {n} vectors (configs/index.yaml factory.rules must end with max_vectors: null)"
    )


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF part of ``index``, or None for Flat / HNSW indexes."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty inner-product index from ``factory`` (``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"`` …)."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"faiss cannot build factory string {factory!r} for dimension {dim}: {err}") from err
    if ivf_of(index) is None:
        index = faiss.IndexIDMap2(index)
    return index


def train_index(factory: str, dim: int, sample: np.ndarray, *, seed: int = 0, gpu: str = "off") -> faiss.Index:
    """An empty index of ``factory`` trained on ``sample`` ``(n, dim)`` unit float32 (no-op for Flat).

    With ``gpu == "auto"`` and faiss-gpu seeing a GPU, the k-means of the inverted lists assigns on all GPUs
    (faiss's ``clustering_index``); the trained index is a CPU index either way (logged)."""
    index = new_index(factory, dim)
    if index.is_trained:
        return index
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            faiss.downcast_index(ivf).do_polysemous_training = False  # slow, and only for Hamming-filtered search
        if ivf.nlist > len(sample):
            raise ValueError(
                f"{factory}: {ivf.nlist} inverted lists need at least as many training vectors, got {len(sample)}"
            )
        if gpu == "auto" and gpus_available() > 0:
            try:
                ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
                log.info("%s: training %d inverted lists on %d GPU(s)", factory, ivf.nlist, gpus_available())
            except (RuntimeError, AttributeError) as err:
                log.warning("%s: training on the CPU: faiss could not use the GPU (%s)", factory, err)
    index.train(sample)
    return index


def training_sample(vectors: np.ndarray, factory: str, dim: int, cfg: FactoryConfig, seed: int = 0) -> np.ndarray:
    """Rows of ``vectors`` to train ``factory`` on: ``train_per_list × nlist`` (capped), drawn without replacement."""
    probe = new_index(factory, dim)
    if probe.is_trained:
        return vectors[:0]
    ivf = ivf_of(probe)
    lists = ivf.nlist if ivf is not None else 0
    if is_lossy(probe):
        lists = max(lists, 256)  # 8-bit PQ/SQ codebooks have 256 centroids each
    want = cfg.train_per_list * lists
    want = min(want, cfg.max_train, len(vectors))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=want, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _inner(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)


def search_params(
    index: faiss.Index, cfg: IndexSearchConfig, k: int, ids: np.ndarray | None = None
) -> faiss.SearchParameters | None:
    """faiss search parameters for ``index``: nprobe / efSearch from ``cfg``, restricted to ``ids`` when given."""
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)) if ids is not None else None
    ivf = ivf_of(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(nprobe=min(cfg.nprobe, ivf.nlist))
    elif isinstance(_inner(index), faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(cfg.ef_search, k))
    elif sel is None:
        return None
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
        params._sel = sel  # keep the selector alive as long as the parameters
    return params


def code_bytes(index: faiss.Index) -> int:
    """Bytes of one vector's code, without ids or graph links (``4 × dim`` for exact storage)."""
    ivf = ivf_of(index)
    if ivf is not None:
        return int(ivf.code_size)
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    return int(inner.sa_code_size())


def is_lossy(index: faiss.Index) -> bool:
    """True when reconstructed vectors only approximate the originals (PQ, SQ …)."""
    return code_bytes(index) < 4 * index.d


def bytes_per_vector(index: faiss.Index) -> float:
    """Estimated RAM per vector (bytes): code + id (8 B, IVF) or id maps (16 B, IDMap2) + HNSW links."""
    if ivf_of(index) is not None:
        return float(code_bytes(index) + 8)
    total = float(code_bytes(index) + 16)
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        links = (
            faiss.vector_to_array(inner.hnsw.neighbors).size / inner.ntotal
            if inner.ntotal
            else inner.hnsw.nb_neighbors(0)  # level 0 holds 2 × M links; upper levels add little
        )
        total += 4.0 * links
    return total


def remove_ids(index: faiss.Index, ids: np.ndarray) -> bool:
    """Remove ``ids`` in place; False when this index type cannot remove (HNSW) and must be rebuilt."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    try:
        index.remove_ids(faiss.IDSelectorBatch(ids))
    except RuntimeError:
        return False
    return True


def reconstruct(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """Vectors stored under ``ids`` ``(n, dim)`` float32 (approximate for lossy codes)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    ivf = ivf_of(index)
    if ivf is not None and ivf.direct_map.type != faiss.DirectMap.Hashtable:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # in memory only; removed before writes
    return index.reconstruct_batch(ids)


def gpus_available() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def to_search_device(index: faiss.Index, gpu: str) -> faiss.Index:
    """``index`` copied to all GPUs when ``gpu == "auto"`` and faiss-gpu sees one; else ``index`` itself."""
    if gpu != "auto" or gpus_available() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as err:  # e.g. an index type without a GPU version
        log.warning("keeping the index on the CPU: faiss could not move it to the GPU (%s)", err)
        return index
