"""Route B on real her2st expression, QC, inferred-vs-measured evaluation, OME-TIFF export, CLI."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from spotwhisper import keys
from spotwhisper.proteins import (
    ExpressionRouteConfig,
    ProteinPanelError,
    compare_routes,
    export_ome_tiff,
    marker_levels,
    protein_qc,
    proteins_from_expression,
    read_ome_tiff,
    scale_levels,
    spot_grid,
)

MARKERS_WITHOUT_PROXY = ["DAPI", "CD45RO"]


@pytest.fixture(scope="module")
def d1(data_dir):
    """Section D1 (306 spots, pathologist labels, stereoscope proportions) with route B applied."""
    from spotwhisper.io import read_her2st

    adata = read_her2st(data_dir, "D1", with_image=False)
    return proteins_from_expression(adata)


def _col(adata, marker, key=keys.PROTEINS_RAW):
    return np.asarray(adata.obsm[key])[:, list(adata.uns[keys.PROTEIN_MARKERS]).index(marker)]


def test_route_b_layout_and_no_proxy_markers(d1):
    p = d1.obsm[keys.PROTEINS]
    assert p.shape == (d1.n_obs, 50) and p.dtype == np.float32
    assert d1.uns[keys.PROTEIN_MARKERS][8] == "PanCK"
    info = d1.uns[keys.PROTEIN_INFO]
    assert info["route"] == "expression" and "raw counts" in info["input"]
    assert info["no_proxy"] == MARKERS_WITHOUT_PROXY
    for m in MARKERS_WITHOUT_PROXY:
        assert np.isnan(_col(d1, m, keys.PROTEINS)).all()
    finite = p[:, ~np.isnan(p).all(axis=0)]
    assert np.nanmin(finite) >= 0 and np.nanmax(finite) <= 1
    assert info["genes_used"][list(d1.uns[keys.PROTEIN_MARKERS]).index("VISTA")] == "C10orf54"  # alias


def test_route_b_raw_level_is_mean_log1p_of_genes(d1):
    norm = ad.AnnData(X=d1.X.copy())
    norm.var_names = d1.var_names
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    x = norm[:, ["HLA-DRA", "HLA-DRB1"]].X
    expected = np.asarray((x.toarray() if sparse.issparse(x) else x).mean(axis=1)).ravel()
    np.testing.assert_allclose(_col(d1, "HLA-DR"), expected, rtol=1e-5)


def test_route_b_follows_cell_types_and_regions(d1):
    obs = d1.obs
    panck = _col(d1, "PanCK")
    assert np.corrcoef(panck, obs["deconv_Epithelial"])[0, 1] > 0.3
    assert np.corrcoef(panck, obs["deconv_T-cells"])[0, 1] < 0
    assert np.corrcoef(_col(d1, "CD3e"), obs["deconv_T-cells"])[0, 1] > 0.15
    immune = obs[["deconv_T-cells", "deconv_B-cells", "deconv_Myeloid", "deconv_Plasma Cells"]].sum(axis=1)
    assert np.corrcoef(_col(d1, "CD45"), immune)[0, 1] > 0.15
    assert np.corrcoef(_col(d1, "CD20"), obs["deconv_B-cells"])[0, 1] > 0.15
    by_label = pd.Series(panck, index=obs.index).groupby(obs[keys.LABEL], observed=True).mean()
    assert by_label["invasive cancer"] > by_label["connective tissue"]


def test_route_b_refuses_low_overlap_and_warns_per_marker(d1, caplog):
    few = d1[:, ["KRT8", "KRT18", "CD3E", "PTPRC"]].copy()
    with pytest.raises(ProteinPanelError, match="proxy markers have a gene"):
        marker_levels(few)
    keep = [g for g in d1.var_names if g != "MKI67"]
    with caplog.at_level(logging.WARNING):
        levels = marker_levels(d1[:, keep].copy())
    assert "Ki67" in levels.missing
    assert any("Ki67" in r.getMessage() for r in caplog.records)


def test_log1p_input_is_used_as_is(d1):
    a = ad.AnnData(X=np.log1p(np.array([[0.0, 2.0], [3.0, 0.5], [1.0, 1.0]], dtype=np.float32)))
    a.var_names = ["CD274", "MKI67"]
    levels = marker_levels(a, cfg=ExpressionRouteConfig(min_overlap=0.0))
    np.testing.assert_allclose(levels.raw[:, 19], a.X[:, 0], rtol=1e-6)  # PDL1 ← CD274, unchanged
    assert levels.source == "X (log1p expression)"


def test_scale_levels_per_group():
    raw = np.array([[0, 1], [1, 1], [2, 1], [10, 5], [20, 5], [30, 5]], dtype=float)
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    mm = scale_levels(raw, "minmax", (0, 100), groups)
    np.testing.assert_allclose(mm[:, 0], [0, 0.5, 1, 0, 0.5, 1])
    np.testing.assert_allclose(mm[:, 1], 0)  # flat within each slide → 0
    rk = scale_levels(raw, "rank", (0, 100), groups)
    np.testing.assert_allclose(rk[:, 0], [0, 0.5, 1, 0, 0.5, 1])
    with pytest.raises(ValueError, match="unknown scaling"):
        scale_levels(raw, "zscore")


def test_qc_flags_and_wasserstein(d1):
    a = d1.copy()
    table = protein_qc(a).set_index("marker")
    assert not table.loc["DAPI", "informative"] and not table.loc["CD45RO", "informative"]
    assert table.loc["PanCK", "informative"] and table.loc["PanCK", "dynamic_range"] > 0.5
    assert not table.loc["IFNg", "informative"]  # IFNG is barely detected in ST data
    assert keys.PROTEIN_QC in a.uns
    # reference = the same slide shifted by +1 log1p unit in PanCK only
    ref = np.asarray(a.obsm[keys.PROTEINS_RAW]).copy()
    ref[:, 8] += 1.0
    shifted = protein_qc(a, reference=ref).set_index("marker")
    assert shifted.loc["PanCK", "wasserstein"] == pytest.approx(1.0, abs=1e-6)
    assert not shifted.loc["PanCK", "matches_reference"] and "shifted" in shifted.loc["PanCK", "reason"]
    assert shifted.loc["CD68", "wasserstein"] == pytest.approx(0.0, abs=1e-9)


def test_compare_routes_measured_vs_noisy(data_dir, d1):
    from spotwhisper.genes import log1p_normalize
    from spotwhisper.io import read_her2st

    measured = ad.concat([d1, read_her2st(data_dir, "C1", with_image=False)], join="inner")
    log1p_normalize(measured)
    rng = np.random.default_rng(0)
    results = {}
    for sigma in (0.1, 1.0):
        noisy = ad.AnnData(X=measured.layers["log1p"].toarray(), obs=measured.obs[[keys.SECTION]], var=measured.var[[]])
        noisy.X = np.clip(noisy.X + rng.normal(0, sigma, noisy.shape), 0, None).astype(np.float32)
        results[sigma] = compare_routes(noisy, measured).set_index("marker")
    low, high = results[0.1], results[1.0]
    assert list(low.index[:3]) == ["DAPI", "CD45", "CD68"]
    assert np.isnan(low.loc["DAPI", "pearson_mean"])
    assert low.loc["PanCK", "n_sections"] == 2 and low.loc["PanCK", "pearson_mean"] > 0.9
    assert high.loc["PanCK", "pearson_mean"] < low.loc["PanCK", "pearson_mean"]
    assert (high["pearson_mean"] < low["pearson_mean"] + 1e-9).sum() >= 0.9 * low["pearson_mean"].notna().sum()


def test_ome_tiff_round_trip(tmp_path, d1):
    path = export_ome_tiff(d1, tmp_path / "D1.ome.tif")
    image, names, size = read_ome_tiff(path)
    assert image.shape[0] == 50 and image.dtype == np.float32
    assert names == list(d1.uns[keys.PROTEIN_MARKERS])
    assert size is not None and 150 < size[0] < 300  # ST spot pitch ≈ 200 µm
    grid = spot_grid(d1)
    assert grid.kind == "array" and image.shape[1:] == grid.shape
    p = d1.obsm[keys.PROTEINS]
    for i in (0, 57, d1.n_obs - 1):
        np.testing.assert_array_equal(image[:, grid.rows[i], grid.cols[i]], p[i])
    assert np.isnan(image[0]).all()  # DAPI has no proxy
    # spots lie where the slide shows them: image x grows with pixel x
    assert np.corrcoef(grid.cols, d1.obsm[keys.SPATIAL][:, 0])[0, 1] > 0.99
    assert not list(tmp_path.glob("*.part"))


def test_raster_grid_matches_array_grid(d1):
    no_array = d1.copy()
    del no_array.obs[keys.ARRAY_X]
    a, r = spot_grid(d1), spot_grid(no_array)
    assert r.kind == "raster"
    np.testing.assert_array_equal(a.rows, r.rows)
    np.testing.assert_array_equal(a.cols, r.cols)


def test_cli_predict_proteins(tmp_path, data_dir, d1):
    from spotwhisper.cli import main

    src = tmp_path / "in.h5ad"
    ad.AnnData(X=d1.X, obs=d1.obs, var=d1.var[[]], obsm={keys.SPATIAL: d1.obsm[keys.SPATIAL]}).write_h5ad(src)
    out = tmp_path / "out.h5ad"
    # the default is the transcriptome inferred from the H&E, which this file lacks: a clear error
    assert main(["predict", "proteins", str(src), "--out", str(out)]) == 1
    assert not out.exists()
    assert main(["predict", "proteins", str(src), "--measured", "--out", str(out)]) == 0
    res = ad.read_h5ad(out)
    np.testing.assert_allclose(res.obsm[keys.PROTEINS], d1.obsm[keys.PROTEINS], equal_nan=True)
    assert "informative" in res.uns[keys.PROTEIN_QC]
    _, names, _ = read_ome_tiff(tmp_path / "out.ome.tif")
    assert names[19] == "PDL1"
    assert main(["predict", "proteins", str(src), "--route", "rosie"]) == 1  # needs --rosie-weights


def test_gene_weights_and_aliases(tmp_path):
    import yaml

    from spotwhisper.proteins.panel import DEFAULT_PANEL_FILE, load_protein_panel

    raw = yaml.safe_load(DEFAULT_PANEL_FILE.read_text())
    raw["markers"][8]["weights"] = {"KRT8": 3.0}  # PanCK
    (tmp_path / "panel.yaml").write_text(yaml.safe_dump(raw))
    panel = load_protein_panel(tmp_path / "panel.yaml")
    a = ad.AnnData(X=np.array([[1.0, 2.0, 0.5], [0.2, 0.0, 1.5]], dtype=np.float32))
    a.var_names = ["KRT8", "KRT19", "C10orf54"]
    levels = marker_levels(a, panel, ExpressionRouteConfig(min_overlap=0.0))
    np.testing.assert_allclose(levels.raw[:, 8], (3 * a.X[:, 0] + a.X[:, 1]) / 4, rtol=1e-6)
    assert levels.genes_used[8] == ["KRT8", "KRT19"]
    np.testing.assert_allclose(levels.raw[:, 37], a.X[:, 2])  # VISTA through its alias
