"""The Python API (``import spotwhisper as sw``) on real sections: read every input, infer, search,
compare, plot, and a collection from Python — the keys written are those of ``spotwhisper.keys``."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import MINI_WINDOW, ROOT, synthetic_he

matplotlib.use("Agg")


def test_import_is_cheap_and_lazy():
    code = ("import sys, spotwhisper as sw; heavy = [m for m in ('torch', 'scanpy', 'faiss', 'anndata', 'gradio') "
            "if m in sys.modules]; print(heavy); print(callable(sw.read), sw.tl.__name__, sw.pl.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout.splitlines()
    assert out[0] == "[]"  # import spotwhisper alone pulls nothing heavy
    assert out[1] == "True spotwhisper.api.tl spotwhisper.api.pl"
    import spotwhisper as sw

    assert "like" in sw.tl.search.__doc__ and "K_fused" in sw.tl.search.__doc__  # help(sw.tl.search) names its keys
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sw.nope  # noqa: B018


@pytest.fixture(scope="module")
def sw_mini(data_dir):
    """C2's mini window read with sw.read and processed with sw.tl.infer (in place)."""
    import spotwhisper as sw
    from spotwhisper import keys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sw.read("C2", data_dir=data_dir)
    lo, hi = MINI_WINDOW
    adata = adata[(adata.obs[keys.ARRAY_Y] >= lo) & (adata.obs[keys.ARRAY_Y] <= hi)].copy()
    measured = adata.X[:, :5].toarray().copy()
    sw.tl.infer(adata, progress=False)
    return adata, measured


def test_read_her2st_and_infer_in_place(sw_mini, mini_slide):
    from spotwhisper import keys

    adata, measured = sw_mini
    assert adata.n_vars == 2067 and "log1p" in adata.layers and "uncertainty_epistemic" in adata.layers
    for key in (keys.PROTEINS, keys.TEXT_EMB, "image_text_emb_aligned", keys.IMAGE_VEC, "text_emb_measured"):
        assert key in adata.obsm, key
    assert adata.obsm[keys.IMAGE_VEC].shape == (adata.n_obs, 128)
    np.testing.assert_allclose(np.linalg.norm(adata.obsm[keys.IMAGE_VEC], axis=1), 1.0, atol=1e-5)
    assert adata.uns[keys.PIPELINE]["image_models"] == "default"
    assert adata.raw is not None and np.array_equal(adata.raw.X[:, :5].toarray(), measured)  # the counts are kept
    assert "cluster" in adata.obs  # obs columns stay
    # the same slide through the pipeline directly (the conftest fixture): the same vectors
    assert list(adata.obs_names) == list(mini_slide.obs_names)
    np.testing.assert_allclose(adata.obsm[keys.TEXT_EMB], mini_slide.obsm[keys.TEXT_EMB], atol=1e-4)


def test_search_writes_documented_keys(sw_mini):
    import spotwhisper as sw

    adata = sw_mini[0].copy()
    result = sw.tl.search(adata, "invasive cancer")
    for col in ("search_fused", "search_region", "search_score_transcriptome", "search_relevance_transcriptome"):
        assert col in adata.obs, col
    info = adata.uns["search"]
    assert info["query"] == "invasive cancer" and info["threshold"] == result.threshold
    hits = result.slides[0]
    np.testing.assert_allclose(adata.obs["search_fused"], hits.fused)
    assert info["n_regions"] == len(hits.regions) and (info["n_regions"] > 0) == info["found"]
    region = adata.obs["search_region"].to_numpy()
    assert set(region) - {0} == {r.id for r in hits.regions}
    assert (adata.obs["search_fused"][region > 0] >= result.threshold).all()
    # a second search under its own key leaves the first alone; the same key is replaced whole
    sw.tl.search(adata, "immune infiltrate", key_added="immune")
    assert adata.uns["search"]["query"] == "invasive cancer" and adata.uns["immune"]["query"] == "immune infiltrate"
    with pytest.raises(ValueError, match="not both"):
        sw.tl.search(adata, "x", like=[0])
    with pytest.raises(ValueError, match="empty query"):
        sw.tl.search(adata, "  ")


def test_search_like_a_region_and_compare(sw_mini):
    import spotwhisper as sw

    adata = sw_mini[0].copy()
    sw.tl.search(adata, "invasive cancer")
    assert adata.uns["search"]["n_regions"] >= 1
    region1 = np.flatnonzero(adata.obs["search_region"].to_numpy() == 1)
    result = sw.tl.search(adata, like=1, key_added="like")  # region 1 of the text search (key "search")
    assert result.example.example.label.endswith("region 1")
    assert set(result.example.example.spots) == set(region1)
    hits = result.slides[0]
    assert hits.found and "like_relevance_image_vec" in adata.obs
    best = np.argsort(-hits.fused)[: len(region1)]
    assert len(set(best) & set(region1)) >= len(region1) // 2  # the region finds itself first
    comp = sw.tl.compare(adata, "invasive cancer", "immune infiltrate")
    assert list(adata.obs["compare"].cat.categories) == ["neither", "only A", "only B", "both"]
    assert int((adata.obs["compare"] == "only A").sum()) == comp.count(1)
    assert "Compared on C2" in adata.uns["compare"]["summary"]


def test_plots(sw_mini):
    import spotwhisper as sw

    adata = sw_mini[0].copy()
    sw.tl.search(adata, "invasive cancer")
    ax = sw.pl.search(adata)
    assert ax.get_images() and "invasive cancer" in ax.get_title() and "region" in ax.get_title()
    image = ax.get_images()[0].get_array()
    assert image.ndim == 3 and image.shape[2] == 3
    fig = sw.pl.proteins(adata, ["CD3e", "PanCK"])
    assert [a.get_title() for a in fig.axes if a.get_title()] == ["CD3e", "PanCK"]
    with pytest.raises(KeyError, match="no search under key 'other'"):
        sw.pl.search(adata, "other")
    with pytest.raises(KeyError, match="no virtual protein"):
        sw.pl.proteins(adata, ["NOPE"])
    matplotlib.pyplot.close("all")


def test_read_every_input(data_dir, tmp_path, mini_raw):
    import spotwhisper as sw
    from spotwhisper import keys
    from spotwhisper.io import write_h5ad

    visium = sw.read(data_dir / "ccrcc" / "a_1")  # a Space Ranger folder without counts
    assert visium.n_obs == 1451 and visium.n_vars == 0 and visium.obs[keys.SECTION].iloc[0] == "a_1"
    assert 0.4 < visium.uns[keys.SPATIAL]["a_1"]["scalefactors"][keys.MPP] < 0.5
    write_h5ad(mini_raw, tmp_path / "mini.h5ad")
    assert sw.read(tmp_path / "mini.h5ad").n_obs == mini_raw.n_obs
    image = tmp_path / "slide.png"
    Image.fromarray(synthetic_he((600, 800))).save(image)
    grid = sw.read(image, mpp=2.0)
    assert grid.n_obs > 0 and grid.uns[keys.SPATIAL]["slide"]["metadata"][keys.TECHNOLOGY] == "grid"
    table = pd.DataFrame({"barcode": ["a", "b", "c"], "x": [300.0, 400, 500], "y": [300.0, 300, 300]})
    table.to_csv(tmp_path / "spots.csv", index=False)
    spots = sw.read(image, spots=tmp_path / "spots.csv", mpp=2.0, name="mine")
    assert list(spots.obs_names) == ["a", "b", "c"] and spots.obs[keys.SECTION].iloc[0] == "mine"
    np.testing.assert_allclose(spots.obsm[keys.SPATIAL][1], [400, 300])


def test_read_refuses_bad_input(tmp_path):
    import spotwhisper as sw

    with pytest.raises(FileNotFoundError, match="nope.h5ad: no such"):
        sw.read(tmp_path / "nope.h5ad")
    image = tmp_path / "slide.png"
    Image.fromarray(synthetic_he((300, 400))).save(image)
    with pytest.raises(ValueError, match="slide.png: µm per pixel unknown"):
        sw.read(image)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: a spot table needs columns x and y"):
        sw.read(image, spots=tmp_path / "bad.csv", mpp=1.0)
    with pytest.raises(ValueError, match="spots= goes with an image"):
        sw.read(tmp_path / "x.h5ad", spots=tmp_path / "bad.csv")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 400, 3), 245, np.uint8)).save(blank)
    with pytest.raises(ValueError, match="blank.png: no 200 µm grid tile holds"):
        sw.read(blank, mpp=1.0)


def test_collection_from_python(sw_mini, tmp_path):
    import spotwhisper as sw
    from spotwhisper import keys

    adata = sw_mini[0]
    coll = sw.Collection.build("py", [adata], tmp_path)
    assert coll.slides() == ["C2"] and "image_vec" in coll.index.routes()
    other = adata.copy()
    other.obs[keys.SECTION] = "C2copy"
    coll.add(other)
    assert coll.slides() == ["C2", "C2copy"]
    result = coll.search("invasive cancer")
    assert {h.slide for h in result.slides} == {"C2", "C2copy"}
    like = coll.search(like=("C2", list(adata.obs_names[:3])))
    assert like.example is not None and {h.slide for h in like.slides} == {"C2", "C2copy"}
    near = coll.nearest("C2", list(adata.obs_names[:3]), k=6)
    assert near["route"].iloc[0] == "image_vec" and set(near["slide"]) == {"C2", "C2copy"}
    assert set(near["spot"].head(6)) >= set(adata.obs_names[:2])  # the example's own spots, on both copies
    assert coll.remove("C2copy") == adata.n_obs and coll.slides() == ["C2"]
    with pytest.raises(FileNotFoundError, match="no collection 'nope'"):
        sw.Collection.open("nope", tmp_path)
    image = tmp_path / "raw.png"
    Image.fromarray(synthetic_he((600, 800))).save(image)
    with pytest.raises(ValueError, match=r"\['raw'\] are not processed"):
        coll.add(sw.read(image, mpp=2.0))
