"""µm per pixel of Space Ranger folders: ``read_visium(mpp=)``, ``load_input`` and ``--mpp`` on the CLI.

An older ST array saved in Space Ranger layout has a 200 µm spot pitch; read without a µm/px, the
pitch is taken for Visium's 100 µm and every size in µm is off by 2×. With ``mpp`` given, the pitch
is measured, the technology follows it and tiles are 200 µm.
"""

from __future__ import annotations

import logging
import warnings

import pytest

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.io import read_visium
from spotwhisper.io.inputs import load_input
from spotwhisper.io.visium import is_spaceranger_folder
from spotwhisper.tiles import spot_layout
from tests.test_visium import MPP, SPACING_FULL, write_visium

ST_MPP = 200.0 / SPACING_FULL  # the same folder read as an ST array: 160 px = 200 µm


def _read(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_visium(path, **kw)


def test_st_pitch_with_mpp(tmp_path, caplog):
    outs, _, _ = write_visium(tmp_path / "st1")
    with caplog.at_level(logging.INFO, logger="spotwhisper.io.visium"):
        adata = _read(outs, mpp=ST_MPP)
    info = adata.uns[keys.SPATIAL]["st1"]
    assert info["scalefactors"][keys.MPP] == pytest.approx(ST_MPP)
    assert info["metadata"]["mpp_source"] == "user"
    assert info["metadata"][keys.TECHNOLOGY] == "ST"
    text = caplog.text
    assert f"{ST_MPP:.4f} µm/px" in text and "given (mpp= / --mpp)" in text and "spot pitch 200 µm" in text
    # tiles follow the measured 200 µm pitch (the source image is the hires PNG, 4× smaller)
    from spotwhisper.io import open_source_slide

    slide, scale = open_source_slide(adata)
    layout = spot_layout(adata, slide, scale)
    assert layout.side_um == pytest.approx(200.0, rel=0.02)
    assert slide.mpp == pytest.approx(ST_MPP / scale, rel=1e-6)


def test_without_mpp_the_log_says_where_it_came_from(tmp_path, caplog):
    outs, _, _ = write_visium(tmp_path / "v1")
    with caplog.at_level(logging.INFO, logger="spotwhisper.io.visium"):
        adata = _read(outs)
    assert adata.uns[keys.SPATIAL]["v1"]["scalefactors"][keys.MPP] == pytest.approx(MPP, rel=0.01)
    assert "spot_diameter_fullres" in caplog.text and "65 µm" in caplog.text
    outs, _, _ = write_visium(tmp_path / "v2", scalefactors={"spot_diameter_fullres": 0})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spotwhisper.io.visium"):
        adata = _read(outs)
    assert adata.uns[keys.SPATIAL]["v2"]["scalefactors"][keys.MPP] == pytest.approx(MPP, rel=0.01)
    assert "assuming Visium's 100 µm pitch" in caplog.text and "--mpp" in caplog.text
    assert adata.uns[keys.SPATIAL]["v2"]["metadata"][keys.TECHNOLOGY] == "Visium"


def test_pitch_that_matches_no_array_warns(tmp_path):
    outs, _, _ = write_visium(tmp_path / "odd")
    with pytest.warns(UserWarning, match="matches no known array"):
        read_visium(outs, mpp=0.85)  # 160 px × 0.85 = 136 µm


def test_load_input_reads_spaceranger_folders_with_mpp(tmp_path):
    outs, tissue, _ = write_visium(tmp_path / "st2")
    assert is_spaceranger_folder(tmp_path / "st2") and is_spaceranger_folder(outs)
    assert not is_spaceranger_folder(outs / "spatial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inp = load_input(tmp_path / "st2", mpp=ST_MPP)
    assert inp.name == "st2" and inp.adata.n_obs == len(tissue)
    assert inp.scale == pytest.approx(0.25)  # tiles from the hires PNG; mpp stays per full-resolution pixel
    assert inp.slide.mpp == pytest.approx(ST_MPP / 0.25)


def test_cli_mpp_on_a_spaceranger_folder(tmp_path, capsys):
    write_visium(tmp_path / "st3")
    out = tmp_path / "prev.png"
    assert main(["tiles", "preview", str(tmp_path / "st3"), "--mpp", str(ST_MPP), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "200 µm" in printed
    assert main(["tiles", "preview", str(tmp_path / "st3"), "--out", str(out)]) == 0
    assert "100 µm" in capsys.readouterr().out  # without --mpp: Visium's pitch assumed
