"""What users' own tools read: a searched AnnData plots with scanpy's and squidpy's spatial plots
unchanged, and a SpatialData object (image + spot circles + table) goes in and gets its results back."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest

from spotwhisper import keys

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def searched(mini_slide):
    import spotwhisper as sw

    adata = mini_slide.copy()
    sw.tl.search(adata, "invasive cancer")
    return adata


def test_scanpy_spatial_plot(searched):
    import matplotlib.pyplot as plt
    import scanpy as sc

    axes = sc.pl.spatial(searched, color="search_fused", show=False)
    ax = axes[0] if isinstance(axes, list) else axes
    assert ax.get_title() == "search_fused" and ax.get_images()  # the H&E under the spots
    values = next(np.asarray(c.get_array()) for c in ax.collections if c.get_array() is not None)
    np.testing.assert_allclose(np.sort(values), np.sort(searched.obs["search_fused"].to_numpy()), rtol=1e-5)  # the scores
    sc.pl.spatial(searched, color="search_region", show=False)
    plt.close("all")


def test_squidpy_spatial_scatter(searched):
    import matplotlib.pyplot as plt

    sq = pytest.importorskip("squidpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sq.pl.spatial_scatter(searched, color="search_fused")
    fig = plt.gcf()
    assert any(ax.get_images() for ax in fig.axes) and any("search_fused" in ax.get_title() for ax in fig.axes)
    plt.close("all")


@pytest.fixture(scope="module")
def small_spatialdata(data_dir):
    """Two array rows of C2 as a SpatialData object: the H&E around them (a crop, as pixels), the spots as
    circles in a 'global' system shifted and scaled against the image, and the table of measured counts."""
    sd = pytest.importorskip("spatialdata")
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale, Sequence, Translation

    from spotwhisper.io import open_source_slide, read_her2st

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c2 = read_her2st(data_dir, "C2")
    table = c2[c2.obs[keys.ARRAY_Y].isin([13, 14, 15])].copy()
    xy = np.asarray(table.obsm[keys.SPATIAL], dtype=float)
    slide, _ = open_source_slide(table)
    x0, y0 = (xy.min(0) - 400).astype(int)
    x1, y1 = (xy.max(0) + 400).astype(int)
    crop = slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))[..., :3]
    # a global system in which image px p sit at (p + (x0, y0)) · 0.5; the circles are given in it
    to_global = Sequence([Translation([x0, y0], axes=("x", "y")), Scale([0.5, 0.5], axes=("x", "y"))])
    image = Image2DModel.parse(np.moveaxis(crop, 2, 0), dims=("c", "y", "x"), transformations={"global": to_global})
    centres = xy * 0.5
    shapes = ShapesModel.parse(centres, geometry=0, radius=np.full(len(xy), 0.5 * 50.0),
                               index=np.arange(len(xy)), transformations={"global": Identity()})
    table.obs["region"] = "spots"
    table.obs["spot_index"] = np.arange(table.n_obs)
    del table.uns[keys.SPATIAL]
    table.obs.columns = [c.replace(" ", "_") for c in table.obs.columns]  # SpatialData's name rules ("Plasma Cells")
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_index")
    return sd.SpatialData(images={"he": image}, shapes={"spots": shapes}, tables={"table": table}), xy - [x0, y0]


def test_spatialdata_round_trip(small_spatialdata, tmp_path):
    import spatialdata as sd

    import spotwhisper as sw

    sdata, expected_xy = small_spatialdata
    sdata.write(tmp_path / "c2.zarr")
    sdata = sd.read_zarr(tmp_path / "c2.zarr")
    adata = sw.read(sdata, mpp=0.7368)
    assert adata.n_obs == len(expected_xy) and adata.obs[keys.SECTION].iloc[0] == "he"
    np.testing.assert_allclose(adata.obsm[keys.SPATIAL], expected_xy, atol=1e-6)  # through both transformations
    sw.tl.infer(adata, progress=False)
    result = sw.tl.search(adata, "invasive cancer")
    sw.write_spatialdata(sdata, adata)
    sdata.write(tmp_path / "c2-searched.zarr")
    back = sd.read_zarr(tmp_path / "c2-searched.zarr").tables["table"]
    np.testing.assert_allclose(back.obs["search_fused"].to_numpy(), result.slides[0].fused)
    assert "search_region" in back.obs and back.uns["search"]["query"] == "invasive cancer"
    with pytest.raises(ValueError, match="µm per pixel of the SpatialData image unknown"):
        sw.read(sdata)
    with pytest.raises(KeyError, match="no image 'nope'"):
        sw.read(sdata, image_key="nope", mpp=0.7)
    with pytest.raises(KeyError, match="no obs\\['other'"):
        sw.write_spatialdata(sdata, adata, key_added="other")
