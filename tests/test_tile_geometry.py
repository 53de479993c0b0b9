"""Tile geometry follows the model, not the slide: a model trained on 200 µm ST tiles reads a Visium
slide (100 µm pitch) with 200 µm tiles centred on its spots and a ring of neighbours at its trained
pitch, and the "tiles of 100 µm" warning goes away because its cause does."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from spotwhisper import keys
from spotwhisper.expression.pretrained import COARSE_MODEL_DIR, ExpressionModel
from spotwhisper.io.inputs import load_input
from spotwhisper.pipeline import spots_with_features
from spotwhisper.tiles import SpotTileConfig, spot_layout
from tests.test_visium import MPP, write_visium


def _visium(tmp_path):
    outs, tissue, _ = write_visium(tmp_path / "vis")
    (outs / "filtered_feature_bc_matrix.h5").unlink()  # an H&E-only Space Ranger folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_input(outs), tissue


def test_visium_lattice_gets_the_trained_tile_and_ring(tmp_path):
    inp, _ = _visium(tmp_path)
    own = spot_layout(inp.adata, inp.slide, inp.scale)  # the slide's own pitch
    assert own.side_um == pytest.approx(100, rel=0.02)
    model = spot_layout(inp.adata, inp.slide, inp.scale, SpotTileConfig(tile_um=200.0, ring_pitch_um=200.0))
    assert model.side_um == pytest.approx(200, rel=0.01)
    np.testing.assert_allclose(model.centres, own.centres)  # still centred on the spots
    centres_um = model.centres * model.mpp
    ring = model.neighbours
    for i in range(len(ring)):
        got = ring[i][ring[i] >= 0]
        d = np.linalg.norm(centres_um[got] - centres_um[i], axis=1)
        assert (d >= 0.75 * 200 - 1).all() and (d <= 1.6 * 200 + 1).all()  # no overlapping 100 µm neighbour
    interior = (ring >= 0).sum(1) == 6
    assert interior.any()
    d_int = [np.linalg.norm(centres_um[ring[i]] - centres_um[i], axis=1).min() for i in np.flatnonzero(interior)]
    assert np.allclose(d_int, 100 * np.sqrt(3), rtol=0.02)  # the hex lattice's second ring, not its 100 µm one


def test_her2st_ring_is_unchanged_by_the_model_geometry(c2):
    from spotwhisper.io import open_source_slide

    slide, scale = open_source_slide(c2)
    own = spot_layout(c2, slide, scale)
    model = spot_layout(c2, slide, scale, SpotTileConfig(tile_um=200.0, ring_pitch_um=200.0))
    assert model.side_um == pytest.approx(own.side_um, rel=0.05)
    assert [set(r[r >= 0]) for r in own.neighbours] == [set(r[r >= 0]) for r in model.neighbours]


def test_pipeline_reads_a_visium_slide_with_the_models_tiles(tmp_path, caplog):
    inp, tissue = _visium(tmp_path)
    model = ExpressionModel.from_pretrained(COARSE_MODEL_DIR)
    geometry = model.tile_config()
    assert geometry.tile_um == model.tile_um == 200.0 and geometry.ring_pitch_um == 200.0
    with caplog.at_level(logging.WARNING):
        spots = spots_with_features(inp, model.encoder, progress=False, geometry=geometry)
        out = model.predict(spots)
    info = spots.uns[keys.FEATURES_UNS][model.encoder]
    assert info["tile_um"] == pytest.approx(200.0, rel=0.01)
    assert "the model was trained on" not in caplog.text
    assert out.n_obs == len(tissue) and inp.slide.mpp == pytest.approx(MPP / 0.25, rel=0.01)
    # the slide's own pitch would have given half-size tiles and the warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model.predict(spots_with_features(inp, model.encoder, progress=False))
    assert "tiles of 100 µm, the model was trained on 200 µm tiles" in caplog.text
