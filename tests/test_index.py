"""Collections: build, exact search, metadata, add/remove slides, errors, atomic writes, locks."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from spotwhisper.index import (
    BadVectorsError,
    CollectionExistsError,
    CollectionIndex,
    DimensionMismatchError,
    ModelMismatchError,
    RouteModel,
    SlideData,
    UnknownCollectionError,
    UnknownRouteError,
    UnknownSlideError,
    as_unit_vectors,
    choose_factory,
    list_collections,
    load_index_config,
)
from spotwhisper.index.config import FactoryConfig
from spotwhisper.index.locking import collection_lock
from tests.index_support import one_faiss_thread  # noqa: F401  (autouse)

DIM = 24
MODELS = {"transcriptome": RouteModel("toy-text", DIM, "v1")}


def make_slide(name: str, n: int, seed: int, dim: int = DIM) -> SlideData:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {"spot": [f"{name}_{i}" for i in range(n)], "x": rng.uniform(0, 5000, n), "y": rng.uniform(0, 5000, n)}
    )
    meta["label"] = np.where(np.arange(n) % 2 == 0, "tumour", "stroma")
    return SlideData(name, meta, {"transcriptome": rng.standard_normal((n, dim)).astype(np.float32)})


@pytest.fixture
def slides():
    return [make_slide("A", 120, 1), make_slide("B", 80, 2), make_slide("C", 60, 3)]


@pytest.fixture
def coll(tmp_path, slides):
    return CollectionIndex.build("toy", slides, MODELS, index_dir=tmp_path, cfg=load_index_config())


def brute_force(slides, query, k, only=None):
    vecs = np.vstack([as_unit_vectors(s.vectors["transcriptome"]) for s in slides if only is None or s.slide in only])
    names = [f"{s.slide}" for s in slides if only is None or s.slide in only for _ in range(len(s))]
    spots = np.concatenate([s.metadata["spot"].to_numpy() for s in slides if only is None or s.slide in only])
    scores = vecs @ as_unit_vectors(query)[0]
    order = np.argsort(-scores)[:k]
    return scores[order], [names[i] for i in order], spots[order]


def test_factory_rules_follow_collection_size():
    cfg = FactoryConfig()
    assert choose_factory(1_000, 256, cfg) == "Flat"
    assert choose_factory(100_000, 256, cfg) == "IVF256,Flat"  # sqrt(1e5) = 316 → 256
    assert choose_factory(5_000_000, 256, cfg) == "IVF2048_HNSW32,PQ32"
    assert choose_factory(5_000_000, 384, cfg) == "IVF2048_HNSW32,PQ48"


def test_vectors_are_checked_and_normalised():
    x = as_unit_vectors([[3.0, 4.0], [0.0, 2.0]])
    assert x.dtype == np.float32 and np.allclose(x, [[0.6, 0.8], [0, 1]])
    with pytest.raises(BadVectorsError, match="NaN or infinite"):
        as_unit_vectors([[1.0, np.nan]])
    with pytest.raises(BadVectorsError, match="all-zero"):
        as_unit_vectors([[0.0, 0.0]])
    with pytest.raises(BadVectorsError, match="empty"):
        as_unit_vectors(np.zeros((0, 4)))
    with pytest.raises(DimensionMismatchError, match="dimension 2"):
        as_unit_vectors([[1.0, 0.0]], dim=3)


def test_search_matches_brute_force_with_metadata(coll, slides):
    query = slides[1].vectors["transcriptome"][5] + 0.3 * slides[0].vectors["transcriptome"][7]
    res = coll.search("transcriptome", query, k=10)
    scores, names, spots = brute_force(slides, query, 10)
    np.testing.assert_allclose(res.scores[0], scores, rtol=1e-5)
    hits = res.for_query(0)
    assert list(hits["slide"]) == names and list(hits["spot"]) == list(spots)
    assert list(hits["rank"]) == list(range(10)) and (np.diff(hits["score"]) <= 1e-7).all()
    assert {"x", "y", "x0", "label", "id"} <= set(hits.columns)


def test_search_restricted_to_slides(coll, slides):
    query = slides[0].vectors["transcriptome"][:3]
    res = coll.search("transcriptome", query, k=5, slides=["B", "C"])
    assert set(res.hits["slide"]) <= {"B", "C"}
    for i in range(3):
        scores, _, spots = brute_force(slides, query[i], 5, only={"B", "C"})
        assert list(res.for_query(i)["spot"]) == list(spots)


def test_k_larger_than_collection_pads(coll):
    res = coll.search("transcriptome", np.ones(DIM), k=300)
    assert (res.ids[0, 260:] == -1).all() and np.isneginf(res.scores[0, 260:]).all()
    assert len(res.hits) == 260


def test_vectors_for_returns_the_slide_exactly(coll, slides):
    got = coll.vectors_for("transcriptome", "B")
    np.testing.assert_allclose(got.vectors["transcriptome"], as_unit_vectors(slides[1].vectors["transcriptome"]), atol=1e-6)
    assert list(got.metadata["spot"]) == list(slides[1].metadata["spot"])


def test_add_and_remove_slide_touch_only_their_shard(tmp_path, coll, slides):
    coll.add_slide(make_slide("D", 40, 4))
    assert coll.slides() == ["A", "B", "C", "D"] and len(coll) == 300
    shards = {s.id: (tmp_path / "toy" / "shards" / s.id).stat().st_ino for s in coll.manifest.shards}
    d_vec = coll.vectors_for("transcriptome", "D").vectors["transcriptome"][0]
    assert coll.search("transcriptome", d_vec, k=1).hits.loc[0, "spot"] == "D_0"
    ids_c = coll.vectors_for("transcriptome", "C").metadata["id"].tolist()

    assert coll.remove_slide("D") == 40  # D had its own shard: dropped, nothing rewritten
    after = {s.id: (tmp_path / "toy" / "shards" / s.id).stat().st_ino for s in coll.manifest.shards}
    assert after == {k: v for k, v in shards.items() if k in after} and len(after) == len(shards) - 1

    assert coll.remove_slide("A") == 120  # A shared a shard with B and C: that shard is rewritten
    res = coll.search("transcriptome", slides[0].vectors["transcriptome"][:5], k=20)
    assert "A" not in set(res.hits["slide"])
    assert coll.vectors_for("transcriptome", "C").metadata["id"].tolist() == ids_c  # ids survive rewrites
    reopened = CollectionIndex.open("toy", index_dir=tmp_path)
    assert reopened.slides() == ["B", "C"] and len(reopened) == 140
    assert sorted(p.name for p in (tmp_path / "toy" / "shards").iterdir()) == [s.id for s in reopened.manifest.shards]
    with pytest.raises(UnknownSlideError, match="slides: \\['B', 'C'\\]"):
        coll.remove_slide("A")


def test_lossy_index_keeps_float32_copies(tmp_path):
    slides = [make_slide("A", 1500, 1), make_slide("B", 1000, 2)]
    cfg = load_index_config()
    coll = CollectionIndex.build("pq", slides, MODELS, index_dir=tmp_path, cfg=cfg, factory="IVF16,PQ4")
    info = coll.manifest.routes["transcriptome"]
    assert info.lossy and info.stored_vectors and info.template
    np.testing.assert_allclose(
        coll.vectors_for("transcriptome", "B").vectors["transcriptome"], as_unit_vectors(slides[1].vectors["transcriptome"]), atol=1e-6
    )
    cfg.store_vectors = "never"
    coll2 = CollectionIndex.build("pq2", slides, MODELS, index_dir=tmp_path, cfg=cfg, factory="IVF16,PQ4")
    approx = coll2.vectors_for("transcriptome", "B").vectors["transcriptome"]
    exact = as_unit_vectors(slides[1].vectors["transcriptome"])
    assert not np.allclose(approx, exact, atol=1e-3)  # PQ reconstruction only approximates …
    assert np.mean(np.sum(approx * exact, axis=1)) > 0.5  # … but stays close
    assert coll2.remove_slide("A") == 1500 and coll2.slides() == ["B"]


def test_hnsw_collection_supports_removal(tmp_path, slides):
    coll = CollectionIndex.build("hnsw", slides, MODELS, index_dir=tmp_path, factory="HNSW16")
    coll.remove_slide("B")  # faiss HNSW cannot remove ids: the shard is rebuilt
    q = slides[2].vectors["transcriptome"][3]
    assert coll.search("transcriptome", q, k=1).hits.loc[0, "spot"] == "C_3"
    assert "B" not in set(coll.search("transcriptome", slides[1].vectors["transcriptome"], k=10).hits["slide"])


def test_bad_input_errors(tmp_path, coll, slides):
    with pytest.raises(UnknownCollectionError, match="collections in .*: toy"):
        CollectionIndex.open("nope", index_dir=tmp_path)
    with pytest.raises(CollectionExistsError):
        CollectionIndex.build("toy", slides, MODELS, index_dir=tmp_path)
    with pytest.raises(BadVectorsError, match="empty"):
        coll.search("transcriptome", np.zeros((0, DIM)), k=3)
    with pytest.raises(DimensionMismatchError, match="dimension 7"):
        coll.search("transcriptome", np.ones((2, 7)), k=3)
    with pytest.raises(UnknownRouteError, match="routes: \\['transcriptome'\\]"):
        coll.search("image", np.ones(DIM), k=3)
    with pytest.raises(UnknownSlideError, match="Z"):
        coll.search("transcriptome", np.ones(DIM), k=3, slides=["Z"])
    with pytest.raises(ValueError, match="k must be"):
        coll.search("transcriptome", np.ones(DIM), k=0)
    with pytest.raises(ValueError, match="already in the collection"):
        coll.add_slide(make_slide("A", 5, 9))
    with pytest.raises(DimensionMismatchError):
        coll.add_slide(make_slide("E", 5, 9, dim=DIM + 1))


def test_model_mismatch_is_refused(tmp_path, coll):
    CollectionIndex.open(
        "toy", index_dir=tmp_path, models={"transcriptome": RouteModel("toy-text", DIM)}
    )  # unversioned: name + dim suffice
    with pytest.raises(ModelMismatchError, match="built with toy-text@v1"):
        CollectionIndex.open("toy", index_dir=tmp_path, models={"transcriptome": RouteModel("toy-text", DIM, "v2")})
    with pytest.raises(ModelMismatchError, match="other-model"):
        coll.search("transcriptome", np.ones(DIM), k=1, model=RouteModel("other-model", DIM, "v1"))
    with pytest.raises(ModelMismatchError, match="32-d"):
        coll.check_models({"transcriptome": RouteModel("toy-text", 32, "v1")})


def test_non_finite_input_leaves_no_collection(tmp_path, slides):
    slides[1].vectors["transcriptome"][3, 2] = np.inf
    with pytest.raises(BadVectorsError, match="slide 'B'"):
        CollectionIndex.build("broken", slides, MODELS, index_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_crash_while_writing_keeps_the_old_collection(tmp_path, coll, monkeypatch):
    import spotwhisper.index.writer as writer

    calls = {"n": 0}
    real = writer.build_shard

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    cfg = load_index_config()
    cfg.shards.max_vectors = 50  # two slides → two shards; the second write fails
    monkeypatch.setattr(writer, "build_shard", flaky)
    coll.cfg = cfg
    with pytest.raises(RuntimeError, match="disk full"):
        coll.add_slides([make_slide("D", 40, 4), make_slide("E", 40, 5)])
    with pytest.raises(RuntimeError, match="disk full"):
        calls["n"] = 0
        CollectionIndex.build(
            "fresh", [make_slide("D", 40, 4), make_slide("E", 40, 5)], MODELS, index_dir=tmp_path, cfg=cfg
        )
    assert list_collections(tmp_path) == ["toy"] and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    again = CollectionIndex.open("toy", index_dir=tmp_path)
    assert again.slides() == ["A", "B", "C"] and again.manifest.generation == 1
    monkeypatch.setattr(writer, "build_shard", real)
    coll.add_slide(make_slide("D", 40, 4))  # the next commit removes the orphaned shard folder
    assert sorted(p.name for p in (tmp_path / "toy" / "shards").iterdir()) == [s.id for s in coll.manifest.shards]


def test_readers_keep_their_snapshot_and_refresh(tmp_path, coll, slides):
    reader = CollectionIndex.open("toy", index_dir=tmp_path)
    coll.remove_slide("A")  # deletes the shard files the reader loaded
    q = slides[0].vectors["transcriptome"][0]
    assert reader.search("transcriptome", q, k=1).hits.loc[0, "spot"] == "A_0"
    assert reader.refresh() is True and "A" not in reader.slides()
    assert reader.refresh() is False


def test_writer_lock_blocks_other_writers(tmp_path, coll):
    cfg = load_index_config()
    cfg.lock_timeout = 0.2
    coll.cfg = cfg
    with collection_lock(tmp_path / "toy", exclusive=True):
        with pytest.raises(TimeoutError, match=".lock"):
            coll.remove_slide("A")
        with pytest.raises(TimeoutError):
            CollectionIndex.open("toy", index_dir=tmp_path, cfg=cfg)
    with collection_lock(tmp_path / "toy", exclusive=False):
        CollectionIndex.open("toy", index_dir=tmp_path, cfg=cfg)  # readers share


def test_index_dir_from_environment(tmp_path, monkeypatch, slides):
    monkeypatch.setenv("SPOTWHISPER_INDEX_DIR", str(tmp_path / "env"))
    CollectionIndex.build("envcoll", slides[:1], MODELS)
    assert os.path.isfile(tmp_path / "env" / "envcoll" / "manifest.json")
    assert list_collections() == ["envcoll"]


def test_overwrite_replaces_the_collection(tmp_path, coll):
    reader = CollectionIndex.open("toy", index_dir=tmp_path)
    models = {"transcriptome": RouteModel("toy-text", DIM, "v2")}
    new = CollectionIndex.build("toy", [make_slide("X", 30, 7)], models, index_dir=tmp_path, overwrite=True)
    assert new.slides() == ["X"] and new.manifest.routes["transcriptome"].model_version == "v2"
    assert new.vectors_for("transcriptome", "X").metadata["id"].min() >= 260  # ids are never reused
    assert [p.name for p in (tmp_path / "toy" / "shards").iterdir()] == [s.id for s in new.manifest.shards]
    assert reader.refresh() and reader.slides() == ["X"]


def test_collection_written_with_the_older_route_names_opens_and_grows(tmp_path, slides):
    """A collection on disk from before the one route vocabulary (routes ``text`` / ``image_text_aligned``,
    files ``shards/<id>/text.faiss``) opens as it is: its routes read as ``transcriptome`` / ``image``, the
    old names still work in calls, and slides added or removed keep its file names."""
    import json

    old_models = {"text": RouteModel("toy-text", DIM, "v1"), "image_text_aligned": RouteModel("toy-img", DIM, "v1")}
    two = [SlideData(s.slide, s.metadata, {"text": s.vectors["text"] if "text" in s.vectors else s.vectors["transcriptome"],
                                           "image_text_aligned": s.vectors["transcriptome"][:, ::-1].copy()})
           for s in slides[:2]]
    CollectionIndex.build("legacy", two, old_models, index_dir=tmp_path)
    folder = tmp_path / "legacy"
    manifest = json.loads((folder / "manifest.json").read_text())
    # rewrite it as the older code wrote it: old route names as keys and file names, no "file" field
    renames = {"transcriptome": "text", "image": "image_text_aligned"}
    manifest["routes"] = {renames[r]: {k: v for k, v in info.items() if k != "file"} for r, info in manifest["routes"].items()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for shard in (folder / "shards").iterdir():
        for new, old in renames.items():
            (shard / f"{new}.faiss").rename(shard / f"{old}.faiss")
    assert sorted(p.name for p in next((folder / "shards").iterdir()).iterdir()) == [
        "image_text_aligned.faiss", "metadata.parquet", "text.faiss"]

    coll = CollectionIndex.open("legacy", index_dir=tmp_path)
    assert sorted(coll.routes()) == ["image", "transcriptome"]
    q = slides[1].vectors["transcriptome"][4]
    assert coll.search("transcriptome", q, k=1).hits.loc[0, "spot"] == "B_4"
    assert coll.search("text", q, k=1).hits.loc[0, "spot"] == "B_4"  # the old name in a call
    coll.check_models({"text": RouteModel("toy-text", DIM, "v1")})
    coll.add_slides([SlideData(slides[2].slide, slides[2].metadata,
                               {"transcriptome": slides[2].vectors["transcriptome"],
                                "image": slides[2].vectors["transcriptome"][:, ::-1].copy()})])
    coll.remove_slide("A")
    files = {p.name for shard in (folder / "shards").iterdir() for p in shard.iterdir()}
    assert files == {"image_text_aligned.faiss", "metadata.parquet", "text.faiss"}, files
    again = CollectionIndex.open("legacy", index_dir=tmp_path)
    assert again.slides() == ["B", "C"] and sorted(again.routes()) == ["image", "transcriptome"]
    assert again.search("image", slides[2].vectors["transcriptome"][0, ::-1].copy(), k=1).hits.loc[0, "spot"] == "C_0"
    assert json.loads((folder / "manifest.json").read_text())["routes"]["transcriptome"]["file"] == "text"
