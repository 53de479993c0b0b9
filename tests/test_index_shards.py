"""Sharded collections: search over shards = search of one index holding all vectors; memory figures."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from spotwhisper.index import (
    CollectionIndex,
    RouteModel,
    SlideData,
    as_unit_vectors,
    bytes_per_vector,
    load_index_config,
)
from spotwhisper.index.factory import new_index, search_params
from tests.index_support import one_faiss_thread  # noqa: F401  (autouse)

DIM = 32
MODELS = {"img": RouteModel("toy-image", DIM, "w1")}


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random cluster centres (a gaussian mixture), so IVF lists are meaningful."""
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, centres.shape[1]))
    return as_unit_vectors(x)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, DIM))
    slides = []
    for i, n in enumerate([700, 500, 900, 400, 600, 900]):
        meta = pd.DataFrame({"spot": [f"S{i}_{j}" for j in range(n)]})
        slides.append(SlideData(f"S{i}", meta, {"img": clustered(n, i + 1, centres)}))
    queries = clustered(25, 99, centres)
    return slides, queries


def sharded(tmp_path, slides, name, factory):
    cfg = load_index_config()
    cfg.shards.max_vectors = 1200  # → several shards of whole slides
    cfg.search.nprobe = 4
    cfg.search.rerank = 1  # plain faiss scores, to compare with one index
    return CollectionIndex.build(name, slides, MODELS, index_dir=tmp_path, cfg=cfg, factory=factory)


@pytest.fixture(scope="module")
def ivfpq(tmp_path_factory, data):
    return sharded(tmp_path_factory.mktemp("ivfpq"), data[0], "ivfpq", "IVF16,PQ8")


def all_vectors(slides):
    return np.vstack([s.vectors["img"] for s in slides])


def test_flat_shards_equal_one_exact_index(tmp_path, data):
    slides, queries = data
    coll = sharded(tmp_path, slides, "flat", "Flat")
    assert len(coll.manifest.shards) >= 3
    single = faiss.IndexFlatIP(DIM)
    single.add(all_vectors(slides))  # ids are 0..n-1 in slide order, as in the collection
    d_ref, i_ref = single.search(queries, 10)
    res = coll.search("img", queries, k=10)
    np.testing.assert_array_equal(res.ids, i_ref)
    np.testing.assert_allclose(res.scores, d_ref, rtol=1e-5)


def test_ivfpq_shards_with_one_trained_quantizer_equal_one_index(ivfpq, data):
    slides, queries = data
    coll = ivfpq
    assert len(coll.manifest.shards) >= 3
    single = faiss.read_index(str(coll.folder / coll.manifest.routes["img"].template))  # the shared trained template
    single.add_with_ids(all_vectors(slides), np.arange(len(coll), dtype=np.int64))
    d_ref, i_ref = single.search(queries, 10, params=search_params(single, coll.cfg.search, 10))
    res = coll.search("img", queries, k=10)
    np.testing.assert_array_equal(res.ids, i_ref)
    np.testing.assert_allclose(res.scores, d_ref, rtol=1e-6)
    # merging the shards (faiss merge_from) gives the same index again
    merged = coll.merged_index("img")
    assert merged.ntotal == len(coll)
    d_m, i_m = merged.search(queries, 10, params=search_params(merged, coll.cfg.search, 10))
    np.testing.assert_array_equal(i_m, i_ref)
    np.testing.assert_array_equal(coll.search("img", queries, k=10).ids, i_ref)  # merging left the shards intact


def test_rerank_with_stored_copies_gives_exact_scores(ivfpq, data):
    slides, queries = data
    exact = faiss.IndexFlatIP(DIM)
    exact.add(all_vectors(slides))
    _, i_ref = exact.search(queries, 10)
    plain = ivfpq.search("img", queries, k=10).ids
    ivfpq.cfg.search.rerank = 4
    try:
        res = ivfpq.search("img", queries, k=10)
    finally:
        ivfpq.cfg.search.rerank = 1
    vectors = all_vectors(slides)
    np.testing.assert_allclose(res.scores, np.einsum("qkd,qd->qk", vectors[res.ids], queries), rtol=1e-5)
    assert (np.diff(res.scores, axis=1) <= 1e-7).all()

    def recall(ids):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, i_ref)])

    assert recall(res.ids) > recall(plain) and recall(res.ids) > 0.9


def test_ivf_flat_recall_against_exact(tmp_path, data):
    slides, queries = data
    coll = sharded(tmp_path, slides, "ivf", "IVF16,Flat")
    exact = faiss.IndexFlatIP(DIM)
    exact.add(all_vectors(slides))
    _, i_ref = exact.search(queries, 10)
    got = coll.search("img", queries, k=10).ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, i_ref)])
    assert recall > 0.9  # nprobe 4 of 16 lists on clustered data


def test_slide_filter_across_shards(tmp_path, data):
    slides, queries = data
    coll = sharded(tmp_path, slides, "flat", "Flat")
    keep = ["S1", "S4"]
    res = coll.search("img", queries, k=5, slides=keep)
    assert set(res.hits["slide"]) == set(keep)
    ref = faiss.IndexFlatIP(DIM)
    ref.add(np.vstack([s.vectors["img"] for s in slides if s.slide in keep]))
    d_ref, _ = ref.search(queries, 5)
    np.testing.assert_allclose(res.scores, d_ref, rtol=1e-5)


def test_memory_per_vector_from_code_size():
    assert bytes_per_vector(new_index("Flat", 256)) == 256 * 4 + 16  # float32 codes + IDMap2 id maps
    ivfpq = new_index("IVF64,PQ32", 256)
    assert bytes_per_vector(ivfpq) == 32 + 8  # 32 one-byte codes + int64 id
    assert bytes_per_vector(new_index("IVF64,Flat", 256)) == 256 * 4 + 8


def test_info_reports_memory_per_million(ivfpq, data):
    slides, _ = data
    route = ivfpq.info()["routes"]["img"]
    assert route["bytes_per_vector"] == 16 and route["ram_mb_per_million"] == round(16e6 / 2**20, 1)
    assert route["n_vectors"] == sum(len(s) for s in slides) and route["stored_vectors"]


def test_gpu_path_is_guarded():
    from spotwhisper.index.factory import gpus_available, to_search_device

    index = new_index("Flat", 8)
    assert to_search_device(index, "off") is index
    if gpus_available() == 0:  # faiss-cpu: "auto" keeps the CPU index
        assert to_search_device(index, "auto") is index
