"""Indexing real her2st sections from AnnData, and the ``spotwhisper index`` commands.

The embeddings are a PCA of the sections' log1p expression — a real, deterministic embedding of
real spots (the index does not care which model made its vectors).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scanpy as sc

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.index import (
    CollectionIndex,
    ModelMismatchError,
    RouteModel,
    build_from_anndata,
    model_from_uns,
)
from spotwhisper.io import write_h5ad
from tests.index_support import one_faiss_thread  # noqa: F401  (autouse)

DIM = 16


def with_embedding(adata, name="pca-test"):
    """A copy of ``adata`` with a PCA embedding in ``obsm["text_emb"]`` and its model in uns."""
    a = adata.copy()
    b = a.copy()
    sc.pp.normalize_total(b)
    sc.pp.log1p(b)
    sc.pp.pca(b, n_comps=DIM, random_state=0)
    a.obsm[keys.TEXT_EMB] = b.obsm["X_pca"].astype(np.float32)
    a.uns[keys.EMBEDDING_MODELS] = {keys.TEXT_EMB: {"name": name, "version": "v0", "dim": DIM}}
    return a


@pytest.fixture(scope="module")
def sections(data_dir):
    from spotwhisper.io import read_her2st

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="her2st C3")  # two C3 positions lack counts (known)
        return [with_embedding(read_her2st(data_dir, s)) for s in ("C2", "C3")]


def test_build_from_anndata_keeps_coordinates_and_labels(tmp_path, sections):
    c2, c3 = sections
    coll = build_from_anndata([c2, c3], "her2st", index_dir=tmp_path)
    assert coll.slides() == ["C2", "C3"] and len(coll) == c2.n_obs + c3.n_obs
    assert coll.manifest.routes["transcriptome"].identity == RouteModel("pca-test", DIM, "v0")
    got = coll.vectors_for("transcriptome", "C2")
    meta = got.metadata
    assert list(meta["spot"]) == list(c2.obs_names)
    np.testing.assert_allclose(meta[["x", "y"]].to_numpy(), c2.obsm["spatial"])  # her2st: slide px = full-res px
    side = c2.uns["spatial"]["C2"]["scalefactors"][keys.SPOT_SPACING]
    np.testing.assert_allclose(meta["x1"] - meta["x0"], side)
    ann = c2.obs["cluster_annotation"]
    assert list(meta["cluster_annotation"]) == [
        None if v != v else str(v) for v in ann.astype(object)
    ]  # missing stays missing
    # a spot's own vector finds that spot first, with its coordinates
    i = 42
    hit = coll.search("transcriptome", c2.obsm[keys.TEXT_EMB][i], k=3).for_query(0).iloc[0]
    assert hit["spot"] == c2.obs_names[i] and hit["slide"] == "C2" and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert (hit["x"], hit["y"]) == tuple(c2.obsm["spatial"][i])


def test_unembedded_spots_are_left_out(tmp_path, sections, caplog):
    c2 = sections[0].copy()
    c2.obsm[keys.TEXT_EMB][:10] = np.nan  # 'not embedded', as the image-text stage marks it
    coll = build_from_anndata(c2, "partial", index_dir=tmp_path)
    assert len(coll) == c2.n_obs - 10 and "not embedded" in caplog.text


def test_model_read_from_stage_records(sections):
    a = sections[0].copy()
    del a.uns[keys.EMBEDDING_MODELS]
    assert model_from_uns(a, keys.TEXT_EMB) is None
    a.uns["text_emb_info"] = {"fingerprint": "abc123", "dim": DIM}
    assert model_from_uns(a, keys.TEXT_EMB) == RouteModel("spotwhisper-text", DIM, "abc123")
    a.obsm["image_text_emb_plip"] = np.ones((a.n_obs, 8), np.float32)
    a.uns[keys.IMAGE_TEXT_INFO] = {"plip": {"weights": "vinid/plip", "embed_dim": 8}}
    assert model_from_uns(a, "image_text_emb_plip") == RouteModel("plip", 8, "vinid/plip")


def test_cli_build_list_info_remove(tmp_path, sections, capsys):
    files = []
    for a in sections:
        files.append(tmp_path / f"{a.obs['section'].iloc[0]}.h5ad")
        write_h5ad(a, files[-1])
    idx = ["--index-dir", str(tmp_path / "indexes")]
    assert main(["index", "build", "--collection", "demo", "--from-h5ad", str(files[0]), *idx]) == 0
    assert main(["index", "build", "--collection", "demo", "--from-h5ad", str(files[1]), "--add", *idx]) == 0
    assert main(["index", "list", *idx]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "Flat" in out
    assert main(["index", "info", "--collection", "demo", "--json", *idx]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["slides"] == ["C2", "C3"] and info["routes"]["transcriptome"]["n_vectors"] == sum(a.n_obs for a in sections)
    slides = tmp_path / "indexes" / "demo" / "slides"  # search reads spots and images from these
    assert sorted(p.name for p in slides.iterdir()) == ["C2.h5ad", "C3.h5ad"]
    assert main(["index", "remove-slide", "--collection", "demo", "C2", *idx]) == 0
    assert CollectionIndex.open("demo", index_dir=tmp_path / "indexes").slides() == ["C3"]
    assert sorted(p.name for p in slides.iterdir()) == ["C3.h5ad"]
    capsys.readouterr()
    assert main(["index", "info", "--collection", "nope", *idx]) == 1
    err = capsys.readouterr().err
    assert "unknown collection 'nope'" in err and err.rstrip().endswith(": demo")  # lists the known ones
    assert main(["index", "build", "--collection", "demo", "--from-h5ad", str(files[1]), *idx]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # a different model for an existing collection is refused
    args = [
        "index",
        "build",
        "--collection",
        "demo",
        "--from-h5ad",
        str(files[0]),
        "--add",
        "--model",
        "text=other@v9",
        *idx,
    ]
    assert main(args) == 1
    assert "built with pca-test@v0" in capsys.readouterr().err
    with pytest.raises(ModelMismatchError):
        CollectionIndex.open("demo", index_dir=tmp_path / "indexes", models={"transcriptome": RouteModel("other", DIM)})
