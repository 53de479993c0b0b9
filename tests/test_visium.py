"""read_visium on small synthetic Space Ranger folders written in the real 10x layouts."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image
from scipy import sparse

from spotwhisper import keys
from spotwhisper.io.technologies import SPACERANGER_SPOT_DIAMETER_UM
from spotwhisper.io import open_source_slide, read_visium
from spotwhisper.io.visium import is_spaceranger_folder, read_counts
from spotwhisper.tiles import spot_layout
from tests.conftest import synthetic_he

N_ROWS, N_COLS, N_GENES = 5, 10, 30
SPACING_FULL = 160.0  # full-resolution px between neighbouring spot centres → 100 µm / 160 px
MPP = 100.0 / SPACING_FULL
HIRES_SCALEF = 0.25
LOWRES_SCALEF = 0.0625
MARK = (0, 200, 0)  # colour painted at one spot in the images


def _layout() -> pd.DataFrame:
    """50 in-tissue spots on a Visium hex grid plus 3 off-tissue spots, full-res pixels."""
    rows = []
    for r in range(N_ROWS):
        for c in range(N_COLS):
            col = 2 * c + (r % 2)
            x = 700 + col * SPACING_FULL / 2
            y = 800 + r * SPACING_FULL * np.sqrt(3) / 2
            rows.append((f"AAAC{r:02d}{c:02d}-1", 1, r, col, y, x))
    for k in range(3):
        rows.append((f"TTTT{k:04d}-1", 0, 7, 2 * k + 1, 2200.0, 300.0 + 100 * k))
    return pd.DataFrame(
        rows, columns=["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    )


def _counts(n_spots: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    m = rng.poisson(1.5, size=(n_spots, N_GENES)).astype(np.int64)
    m[:, 3] += 70_000  # large values must round-trip exactly too
    return m


def _genes() -> tuple[list[str], list[str]]:
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    names = [f"GENE{i}" for i in range(N_GENES)]
    names[5] = names[4]  # a duplicated symbol, as in real references
    return ids, names


def _write_h5(path: Path, barcodes: list[str], counts: np.ndarray) -> None:
    """10x feature-barcode HDF5 (Space Ranger ≥ 1.0 / Cell Ranger v3 layout)."""
    ids, names = _genes()
    m = sparse.csr_matrix(counts)  # rows = barcodes → 10x's CSC of (genes × barcodes)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data.astype(np.int32))
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([N_GENES, len(barcodes)], dtype=np.int32))
        ft = g.create_group("features")
        ft.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        ft.create_dataset("feature_type", data=np.array([b"Gene Expression"] * N_GENES))
        ft.create_dataset("genome", data=np.array([b"GRCh38"] * N_GENES))
        ft.create_dataset("id", data=np.array(ids, dtype="S"))
        ft.create_dataset("name", data=np.array(names, dtype="S"))


def _write_mtx(folder: Path, barcodes: list[str], counts: np.ndarray) -> None:
    ids, names = _genes()
    folder.mkdir()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sparse.coo_matrix(counts.T))
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
        fh.write("\n".join(barcodes) + "\n")
    with gzip.open(folder / "features.tsv.gz", "wt") as fh:
        fh.write("".join(f"{i}\t{n}\tGene Expression\n" for i, n in zip(ids, names)))


def _spot_xy(table: pd.DataFrame, i: int) -> tuple[float, float]:
    return float(table["pxl_col_in_fullres"].iloc[i]), float(table["pxl_row_in_fullres"].iloc[i])


def _paint(img: np.ndarray, xy: tuple[float, float], scale: float, radius_full: float = 70) -> np.ndarray:
    img = img.copy()
    cx, cy, r = xy[0] * scale, xy[1] * scale, radius_full * scale
    x0, y0 = int(cx - r) - 1, int(cy - r) - 1
    yy, xx = np.mgrid[y0 : int(cy + r) + 2, x0 : int(cx + r) + 2]
    disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    img[yy[disk], xx[disk]] = MARK
    return img


def write_visium(
    root: Path,
    *,
    matrix: str = "h5",
    positions: str = "csv",
    scalefactors: dict | None = None,
    images: tuple[str, ...] = ("hires", "lowres"),
    marked_spot: int = 12,
) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """A Space Ranger ``outs/`` folder under ``root`` → (folder, positions table, counts of in-tissue spots)."""
    outs = root / "outs"
    spatial = outs / "spatial"
    spatial.mkdir(parents=True)
    table = _layout()
    tissue = table[table["in_tissue"] == 1]
    barcodes = tissue["barcode"].tolist()
    counts = _counts(len(barcodes))
    if matrix == "h5":
        _write_h5(outs / "filtered_feature_bc_matrix.h5", barcodes, counts)
    else:
        _write_mtx(outs / "filtered_feature_bc_matrix", barcodes, counts)
    if positions == "csv":
        table.to_csv(spatial / "tissue_positions.csv", index=False)
    elif positions == "list":
        table.to_csv(spatial / "tissue_positions_list.csv", index=False, header=False)
    else:
        table.to_parquet(spatial / "tissue_positions.parquet", index=False)
    sf = {
        "tissue_hires_scalef": HIRES_SCALEF,
        "tissue_lowres_scalef": LOWRES_SCALEF,
        "spot_diameter_fullres": SPACERANGER_SPOT_DIAMETER_UM / MPP,  # Space Ranger: a theoretical 65 µm spot
        "fiducial_diameter_fullres": 80.0,
    }
    sf.update(scalefactors or {})
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    he = synthetic_he((900, 800))  # hires: 800 × 900 px → full-res 3200 × 3600
    xy = _spot_xy(tissue, marked_spot)
    if "hires" in images:
        Image.fromarray(_paint(he, xy, HIRES_SCALEF)).save(spatial / "tissue_hires_image.png")
    if "lowres" in images:
        low = np.asarray(Image.fromarray(he).resize((200, 225)))
        Image.fromarray(_paint(low, xy, LOWRES_SCALEF)).save(spatial / "tissue_lowres_image.png")
    return outs, tissue, counts


def _read(path: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_visium(path, **kw)


def _colour_at_spot(adata, i: int) -> np.ndarray:
    slide, scale = open_source_slide(adata)
    layout = spot_layout(adata, slide, scale)
    cx, cy = layout.centres[i]
    half = max(2, int(layout.side_px * 0.1))
    region = slide.read_region((int(cx) - half, int(cy) - half), 0, (2 * half, 2 * half))
    return region.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("matrix", ["h5", "mtx"])
@pytest.mark.parametrize("positions", ["csv", "list", "parquet"])
def test_read_visium_layouts(tmp_path, matrix, positions):
    outs, tissue, counts = write_visium(tmp_path / "sample1", matrix=matrix, positions=positions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adata = read_visium(outs)
    assert not [w for w in caught if "matched" in str(w.message)]  # off-tissue spots without counts are normal
    assert adata.shape == (50, N_GENES)
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), counts.astype(np.float32))
    assert adata.var_names.is_unique and "GENE4-1" in adata.var_names
    assert adata.var["gene_ids"].iloc[0] == "ENSG00000000000"
    assert (adata.obs[keys.SECTION] == "sample1").all() and (adata.obs[keys.PATIENT] == "sample1").all()
    assert adata.obs_names[0] == "sample1_AAAC0000-1"
    np.testing.assert_allclose(adata.obsm[keys.SPATIAL], tissue[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy())
    np.testing.assert_array_equal(adata.obs[keys.ARRAY_X], tissue["array_col"])
    np.testing.assert_array_equal(adata.obs[keys.ARRAY_Y], tissue["array_row"])
    join = adata.uns["visium_join"]
    assert join["n_matched"] == 50 and join["positions_without_counts"] == []


def test_hires_tiles_land_on_painted_spot(tmp_path):
    outs, _, _ = write_visium(tmp_path / "s", marked_spot=12)
    adata = _read(outs, library_id="L1", patient="P")
    info = adata.uns[keys.SPATIAL]["L1"]
    assert info["metadata"]["source_image_kind"] == "hires"
    assert info["images"]["hires"].shape == (900, 800, 3) and info["images"]["lowres"].shape == (225, 200, 3)
    assert info["scalefactors"][keys.HIRES_SCALEF] == HIRES_SCALEF
    assert info["scalefactors"]["fiducial_diameter_fullres"] == 80.0
    assert (adata.obs[keys.PATIENT] == "P").all()
    slide, scale = open_source_slide(adata)
    assert scale == HIRES_SCALEF and slide.dimensions == (800, 900)
    assert slide.mpp == pytest.approx(MPP / HIRES_SCALEF, rel=0.01)
    np.testing.assert_allclose(_colour_at_spot(adata, 12), MARK, atol=3)
    assert np.abs(_colour_at_spot(adata, 13) - MARK).max() > 60  # a neighbour is not marked


def test_mpp_sources(tmp_path):
    outs, _, _ = write_visium(tmp_path / "a")
    adata = _read(outs)
    sf = adata.uns[keys.SPATIAL]["a"]["scalefactors"]
    assert sf[keys.MPP] == pytest.approx(MPP, rel=0.01)  # from Space Ranger's 65 µm spot diameter
    assert sf[keys.SPOT_SPACING] == pytest.approx(SPACING_FULL, rel=0.01)
    assert adata.uns[keys.SPATIAL]["a"]["metadata"]["mpp_source"] == "spot_diameter"
    no_diameter, _, _ = write_visium(tmp_path / "c", scalefactors={"spot_diameter_fullres": 0})
    nd = _read(no_diameter).uns[keys.SPATIAL]["c"]
    assert nd["metadata"]["mpp_source"] == "spot_spacing"  # from the 100 µm spot spacing
    assert nd["scalefactors"][keys.MPP] == pytest.approx(MPP, rel=0.01)
    assert _read(outs, mpp=0.5).uns[keys.SPATIAL]["a"]["scalefactors"][keys.MPP] == 0.5
    outs2, _, _ = write_visium(tmp_path / "b", scalefactors={"microns_per_pixel": 0.61})
    a2 = _read(outs2, mpp=0.5)
    assert a2.uns[keys.SPATIAL]["b"]["scalefactors"][keys.MPP] == 0.61
    assert a2.uns[keys.SPATIAL]["b"]["metadata"]["mpp_source"] == "scalefactors"


def test_lowres_only(tmp_path):
    outs, _, _ = write_visium(tmp_path / "s", images=("lowres",))
    adata = _read(outs)
    slide, scale = open_source_slide(adata)
    assert scale == LOWRES_SCALEF and slide.dimensions == (200, 225)
    np.testing.assert_allclose(_colour_at_spot(adata, 12), MARK, atol=25)


def _write_fullres(path: Path, tissue: pd.DataFrame, marked: int) -> None:
    img = np.full((3600, 3200, 3), 240, dtype=np.uint8)
    Image.fromarray(_paint(img, _spot_xy(tissue, marked), 1.0)).save(path)


def test_fullres_given_and_found(tmp_path):
    outs, tissue, _ = write_visium(tmp_path / "s", marked_spot=12)
    full = tmp_path / "s" / "he_fullres.png"  # beside outs/, as 10x datasets ship it
    _write_fullres(full, tissue, marked=30)  # different spot than the PNGs: proves which image is read
    found = _read(outs)
    assert found.uns[keys.SPATIAL]["s"]["metadata"]["source_image_kind"] == "fullres"
    slide, scale = open_source_slide(found)
    assert scale == 1.0 and slide.dimensions == (3200, 3600)
    np.testing.assert_allclose(_colour_at_spot(found, 30), MARK, atol=3)
    other = tmp_path / "elsewhere.png"
    _write_fullres(other, tissue, marked=31)
    given = _read(outs, fullres_image=other)
    np.testing.assert_allclose(_colour_at_spot(given, 31), MARK, atol=3)


def test_wrong_size_image_is_not_taken_for_fullres(tmp_path):
    outs, _, _ = write_visium(tmp_path / "s")
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(tmp_path / "s" / "unrelated.jpg")
    assert _read(outs).uns[keys.SPATIAL]["s"]["metadata"]["source_image_kind"] == "hires"


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such"):
        read_visium(tmp_path / "nope")
    outs, _, _ = write_visium(tmp_path / "s")
    (outs / "filtered_feature_bc_matrix.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=r"filtered_feature_bc_matrix\.h5: not a readable"):
        read_visium(outs)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(FileNotFoundError, match="no counts found"):
        read_counts(outs)

    outs, _, _ = write_visium(tmp_path / "v")
    pos = pd.read_csv(outs / "spatial" / "tissue_positions.csv")
    pos.assign(in_tissue=0).to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(ValueError, match=r"tissue_positions\.csv: no spot is marked in tissue"):
        read_visium(outs)

    outs, _, _ = write_visium(tmp_path / "t")
    (outs / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no spot positions"):
        read_visium(outs)

    outs, _, _ = write_visium(tmp_path / "u")
    pos = pd.read_csv(outs / "spatial" / "tissue_positions.csv")
    pos["barcode"] = "GGGG" + pos["barcode"]
    pos.to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    with pytest.raises(ValueError, match="share no in-tissue barcode"):
        read_visium(outs)


def test_he_only_folder_reads_spots_without_counts(tmp_path):
    """A Space Ranger folder with spatial/ but no counts (what a user with an H&E slide has): every
    in-tissue spot, no genes, µm/px from the scale factors, tiles from the hires PNG."""
    outs, tissue, _ = write_visium(tmp_path / "he", marked_spot=12)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    assert is_spaceranger_folder(outs)
    adata = _read(outs)
    assert adata.n_vars == 0 and adata.n_obs == int((tissue["in_tissue"] == 1).sum())
    assert adata.uns["visium_join"]["matrix_source"] == "none (H&E only)"
    assert adata.uns[keys.SPATIAL]["he"]["scalefactors"][keys.MPP] == pytest.approx(MPP, rel=0.01)
    np.testing.assert_allclose(_colour_at_spot(adata, 12), MARK, atol=3)


def test_partial_join_is_reported(tmp_path):
    outs, _, _ = write_visium(tmp_path / "s")
    pos = pd.read_csv(outs / "spatial" / "tissue_positions.csv")
    pos.drop(index=[0, 1]).to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    with pytest.warns(UserWarning, match="48 spots matched; 2 barcode"):
        adata = read_visium(tmp_path / "s")  # the folder holding outs/ works too
    assert adata.n_obs == 48
    assert adata.uns["visium_join"]["counts_without_position"] == ["AAAC0000-1", "AAAC0001-1"]


def test_visium_hd_bins_use_bin_size(tmp_path):
    outs, _, _ = write_visium(tmp_path / "hd", positions="parquet", scalefactors={"bin_size_um": 8.0})
    info = _read(outs).uns[keys.SPATIAL]["hd"]
    assert info["metadata"][keys.TECHNOLOGY] == "Visium HD"
    assert info["scalefactors"][keys.MPP] == pytest.approx(8.0 / SPACING_FULL, rel=0.01)
