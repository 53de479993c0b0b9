"""``spotwhisper data info`` / ``data fetch`` through ``spotwhisper.cli.main``."""

from __future__ import annotations

import json

import pytest

from spotwhisper.cli import main
from spotwhisper.io import download_manifest as M
from spotwhisper.io import fetch as F
from spotwhisper.io.describe import describe_sections


def test_info_c2(data_dir, capsys):
    assert main(["data", "info", "--data-dir", str(data_dir), "--sections", "C2", "C1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    c2 = next(line for line in out.splitlines() if "│ C2 " in line)
    assert "187" in c2 and "9274×9911" in c2 and "0.737" in c2 and "5714_HE_BT_C2.jpg" in c2
    c1 = next(line for line in out.splitlines() if "│ C1 " in line)
    assert "176" in c1 and "×" not in c1  # C1 has counts but no image
    assert "2 section(s), 363 spots, 1 with an H&E image, 1 with pathologist labels" in out


def test_describe_agrees_with_reader(data_dir, c2):
    row = describe_sections(data_dir, ["C2"]).iloc[0]
    slide_meta = c2.uns["spatial"]["C2"]["metadata"]
    assert row["spots"] == c2.n_obs and row["genes"] == c2.n_vars
    assert (row["width_px"], row["height_px"]) == (slide_meta["source_image_width"], slide_meta["source_image_height"])
    assert row["mpp"] == pytest.approx(c2.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"])
    assert not row["labels"] and row["clusters"] and row["deconvolution"]


def test_info_errors(tmp_path, data_dir, capsys):
    assert main(["data", "info", "--data-dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "info", "--data-dir", str(tmp_path)]) == 1
    assert "no her2st data" in capsys.readouterr().err
    assert main(["data", "info", "--data-dir", str(data_dir), "--sections", "Z9"]) == 1
    assert "unknown section(s) ['Z9']" in capsys.readouterr().err
    assert main(["data"]) == 2


@pytest.fixture
def local_manifest(data_dir, tmp_path, monkeypatch):
    """The her2st manifest made from the reference copy, served through file:// URLs."""
    root = data_dir / "her2st"
    header = {**M.HER2ST_HEADER, "url_template": root.resolve().as_uri() + "/{path}"}
    resources = tmp_path / "resources"
    M.write_json_atomic(M.make_manifest(root, header=header), resources / "her2st_manifest.json")
    monkeypatch.setattr(M, "RESOURCES", resources)
    return resources / "her2st_manifest.json"


def test_fetch_then_info(local_manifest, tmp_path, capsys):
    dest = tmp_path / "data"
    argv = ["data", "fetch", "her2st", "--dest", str(dest), "--only", "C2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "8 file(s) downloaded, 0 already present" in out  # C2: counts, spots, image, clusters + 4 shared
    assert (dest / "her2st" / "data" / "ST-imgs" / "C" / "C2" / "5714_HE_BT_C2.jpg").exists()
    assert main(argv) == 0
    assert "0 file(s) downloaded, 8 already present" in capsys.readouterr().out
    assert main(["data", "info", "--data-dir", str(dest), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 section(s), 187 spots, 1 with an H&E image" in out and "9274×9911" in out


def test_fetch_errors(local_manifest, tmp_path, capsys):
    data = json.loads(local_manifest.read_text())
    tls = next(f for f in data["files"] if f["kind"] == "tls_signature")
    tls["sha256"] = "0" * 64
    M.write_json_atomic(data, local_manifest)
    dest = tmp_path / "d"
    assert main(["data", "fetch", "her2st", "--dest", str(dest), "--only", "C2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "tls-signature.tsv.gz: downloaded" in err and "kept aside" in err
    assert not (dest / "her2st" / "res" / "TLS-pred" / "tls-signature.tsv.gz").exists()
    assert main(["data", "fetch", "her2st", "--dest", str(dest), "--only", "nonsense"]) == 1
    assert "not a section, patient, kind or file" in capsys.readouterr().err
