"""her2st reader on the real data: counts, positions, annotations, and what does not join."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy import sparse

from spotwhisper import keys
from spotwhisper.datadir import DataDirError, her2st_root
from spotwhisper.io import SectionNotFoundError, list_sections, read_h5ad, read_her2st, write_h5ad
from spotwhisper.io.her2st import parse_motivation


def test_sections_listed(data_dir):
    sections = list_sections(data_dir)
    assert len(sections) == 30
    assert sections[0] == "B1" and sections[-1] == "H3"


def test_c2_counts_positions_and_image(c2, data_dir):
    assert c2.shape == (187, 15706)
    assert sparse.isspmatrix_csr(c2.X) and c2.X.dtype == np.float32
    # the first counts row of the raw file, read independently
    with gzip.open(her2st_root(data_dir) / "data/ST-cnts/C2.tsv.gz", "rt") as fh:
        genes = fh.readline().rstrip("\n").split("\t")[1:]
        first = fh.readline().rstrip("\n").split("\t")
    spot = f"C2_{first[0]}"
    row = c2[spot].X.toarray().ravel()
    assert np.array_equal(row, np.asarray(first[1:], dtype=np.float32))
    assert list(c2.var_names[:3]) == genes[:3]
    # spot 25x13 sits at pixel (6930.58, 3510.24) in the selection file
    i = list(c2.obs_names).index("C2_25x13")
    assert np.allclose(c2.obsm[keys.SPATIAL][i], [6930.58, 3510.24])
    info = c2.uns[keys.SPATIAL]["C2"]
    assert info["metadata"]["source_image_width"] == 9274
    assert info["metadata"]["source_image_height"] == 9911
    # ST spots are 200 µm apart, ≈ 271 px in this image → ≈ 0.74 µm/px
    assert info["scalefactors"][keys.MPP] == pytest.approx(0.737, abs=0.01)
    hires = info["images"]["hires"]
    assert max(hires.shape[:2]) == 2000
    assert info["scalefactors"][keys.HIRES_SCALEF] == pytest.approx(2000 / 9911, rel=1e-3)


def test_labels_attach_to_the_right_spots(data_dir):
    c1 = read_her2st(data_dir, "C1", with_image=False)
    # from C1_labeled_coordinates.tsv: (9.008, 17.012) connective tissue, (9.79, 19.966) invasive cancer
    assert c1.obs.loc["C1_9x17", keys.LABEL] == "connective tissue"
    assert c1.obs.loc["C1_10x20", keys.LABEL] == "invasive cancer"
    assert c1.obs[keys.LABEL].notna().all()
    assert c1.uns["her2st_join"]["label_matched"] == c1.n_obs


def test_clusters_and_proportions(c2):
    # C2 cluster file: spot 25x13 is cluster 5 — patient C cluster 5 is "immune : APC, B-cell, T-cell"
    assert c2.obs.loc["C2_25x13", keys.CLUSTER] == "5"
    assert c2.obs.loc["C2_25x13", keys.CLUSTER_ANNOTATION] == "immune : APC, B-cell, T-cell"
    assert "CCL19" in c2.obs.loc["C2_25x13", keys.CLUSTER_EVIDENCE]
    assert c2.obs.loc["C2_10x21", "deconv_B-cells"] == pytest.approx(0.059690323)
    props = c2.obs[[c for c in c2.obs if c.startswith(keys.DECONV_PREFIX)]].to_numpy()
    assert np.allclose(props.sum(axis=1), 1, atol=1e-3)


def test_motivation_parsing_with_unquoted_commas(data_dir):
    m = parse_motivation(her2st_root(data_dir) / "res/ST-cluster/motivation.csv").set_index(["patient", "cluster"])
    assert m.loc[("G", 3), "annotation"] == "immune : APC, B-cell, T-cell"
    assert m.loc[("G", 3), "evidence"].startswith("Marker genes include")
    assert not m.loc[("G", 0), "evidence"].endswith("pathology")  # reference URLs stripped
    assert m.loc[("F", 0), "annotation"] == "unknown" and m.loc[("F", 0), "evidence"] == ""


def test_unmatched_spots_are_reported_not_dropped_silently(data_dir):
    with pytest.warns(UserWarning, match="3 position\\(s\\) without counts"):
        d1 = read_her2st(data_dir, "D1", with_image=False)
    join = d1.uns["her2st_join"]
    assert join["n_matched"] == d1.n_obs == 306
    assert len(join["positions_without_counts"]) == 3


def test_labels_without_coordinates_are_counted(data_dir):
    g2 = read_her2st(data_dir, "G2", with_image=False)
    assert g2.uns["her2st_join"]["label_rows_without_coordinates"] == 8


def test_bad_section_and_data_dir(data_dir, tmp_path):
    with pytest.raises(SectionNotFoundError, match="unknown section 'Z9'.*C1"):
        read_her2st(data_dir, "Z9")
    with pytest.raises(DataDirError, match="no her2st data"):
        read_her2st(tmp_path, "C2")
    with pytest.raises(DataDirError, match="does not exist"):
        read_her2st(tmp_path / "nope", "C2")


def test_h5ad_round_trip(c2, tmp_path):
    out = write_h5ad(c2, tmp_path / "c2.h5ad")
    back = read_h5ad(out)
    assert (back.X != c2.X).nnz == 0
    assert back.obs[keys.CLUSTER_ANNOTATION].equals(c2.obs[keys.CLUSTER_ANNOTATION])
    assert np.array_equal(back.uns[keys.SPATIAL]["C2"]["images"]["hires"], c2.uns[keys.SPATIAL]["C2"]["images"]["hires"])
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(FileNotFoundError, match="no such .h5ad"):
        read_h5ad(tmp_path / "missing.h5ad")
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable .h5ad"):
        read_h5ad(tmp_path / "bad.h5ad")


def test_patient_b_loads_with_image_labels_and_deconvolution(data_dir):
    """Patient B (B1–B6 counts, H&E for B4 only, pathologist labels for B1) joins like the others."""
    b4 = read_her2st(data_dir, "B4")
    assert b4.n_obs == 283 and set(b4.obs[keys.SECTION]) == {"B4"} and set(b4.obs["patient"]) == {"B"}
    meta = b4.uns[keys.SPATIAL]["B4"]["metadata"]
    assert meta["source_image_path"].endswith("BT10737_D2_HE.jpg")
    assert (meta["source_image_width"], meta["source_image_height"]) == (9272, 9923)
    xy = np.asarray(b4.obsm[keys.SPATIAL])
    assert (xy > 0).all() and (xy[:, 0] < 9272).all() and (xy[:, 1] < 9923).all()
    assert b4.obs[[c for c in b4.obs if c.startswith("deconv_")]].notna().all().all()
    b1 = read_her2st(data_dir, "B1", with_image=False)
    counts = b1.obs[keys.LABEL].value_counts()
    assert counts["connective tissue"] == 95 and counts["adipose tissue"] == 70 and counts["invasive cancer"] == 63
