"""The ``stain_stats`` descriptor: its numbers, tiles read at 3.5 µm/px, and the same features from a
full-resolution slide and from the same slide as a coarser (hires-like) image."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from skimage.color import rgb2hed

from spotwhisper.encoders import create_encoder, extract_features
from spotwhisper.encoders.stain_stats import STAT_NAMES, TILE_MPP
from spotwhisper.tiles.views import view_of
from tests.test_views import _slide_with_spots


def _reference(img: np.ndarray) -> np.ndarray:
    """The 18 statistics written out with numpy / scikit-image."""
    hed = rgb2hed(img).reshape(-1, 3)
    spread = img.max(-1).astype(np.float32) - img.min(-1)
    tissue = spread.reshape(-1) > 20
    q = np.percentile(hed[:, :2], [10, 50, 90], axis=0).ravel()
    tm = [hed[tissue, 0].mean(), hed[tissue, 1].mean()] if tissue.any() else [0.0, 0.0]
    return np.concatenate([hed.mean(0), hed.std(0), q, [tissue.mean()], img.reshape(-1, 3).mean(0) / 255, tm])


def test_statistics_match_scikit_image(he_image):
    enc = create_encoder("stain_stats")
    assert enc.embed_dim == len(STAT_NAMES) == 18 and enc.spec.tile_mpp == TILE_MPP
    tiles = np.stack([he_image[y : y + 57, x : x + 57] for y, x in [(0, 0), (250, 350), (280, 380), (100, 200)]])
    got = enc.encode(tiles)
    want = np.stack([_reference(t) for t in tiles])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[0, STAT_NAMES.index("tissue_fraction")] < 0.1 < got[1, STAT_NAMES.index("tissue_fraction")]
    # nuclei (haematoxylin) raise H, glass does not
    assert got[1, STAT_NAMES.index("H_p90")] > got[0, STAT_NAMES.index("H_p90")]
    # any tile size (sub-tiles are crops of the 3.5 µm/px tile)
    assert enc.encode(tiles[:, :19, :19]).shape == (4, 18)


def test_tiles_read_at_3_5_um_per_px_and_resolution_invariant(caplog):
    """A 0.5 µm/px slide and the same slide at 2 µm/px give (nearly) the same features: both are read
    at 3.5 µm/px. At 5 µm/px the tiles must be upsampled, which the log warns about."""
    _, slide, adata = _slide_with_spots(size=(1400, 1800), spacing_px=400.0)  # 200 µm pitch at 0.5 µm/px
    enc = create_encoder("stain_stats")
    with caplog.at_level(logging.INFO, logger="spotwhisper.encoders.features"):
        full = extract_features(adata.copy(), enc, slide=slide, use_cache=False, progress=False)
    assert "read at 3.51 µm/px (57 px, 3×3 sub-tiles of 19 px)" in caplog.text
    f_full, s_full = full.obsm["features_stain_stats"], full.obsm["features_stain_stats_sub"]
    assert f_full.shape == (len(adata), 18) and s_full.shape == (len(adata), 9, 18)
    view, scale = view_of(slide, 1.0, 2.0)
    coarse = extract_features(adata.copy(), enc, slide=view, scale=scale, use_cache=False, progress=False)
    on = full.uns["features"]["stain_stats"]["qc"]["tissue_fraction"] > 0.5
    a, b = f_full[on], coarse.obsm["features_stain_stats"][on]
    spread = f_full[on].std(0) + 1e-3
    assert np.median(np.abs(a - b) / spread) < 0.15  # same tissue, same statistics
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spotwhisper.encoders.features"):
        view5, scale5 = view_of(slide, 1.0, 5.0)
        extract_features(adata.copy(), enc, slide=view5, scale=scale5, use_cache=False, progress=False)
    assert "upsampled" in caplog.text and "5.00 µm/px" in caplog.text


def test_sub_tiles_are_crops_of_the_tile(he_image):
    """Sub-tile features are the statistics of the 3×3 crops of the 57 px tile (no re-read, no resize)."""
    from spotwhisper.io.slide import ArraySlide

    _, slide, adata = _slide_with_spots(size=(1400, 1800), spacing_px=400.0)
    enc = create_encoder("stain_stats")
    out = extract_features(adata.copy(), enc, slide=slide, use_cache=False, progress=False)
    from spotwhisper.tiles import spot_layout
    from spotwhisper.tiles.extract import read_tile

    layout = spot_layout(adata, slide, 1.0)
    tile, _ = read_tile(slide, layout, 3, 57, with_subtiles=False, resample="lanczos")
    crops = np.stack([tile[r * 19 : (r + 1) * 19, c * 19 : (c + 1) * 19] for r in range(3) for c in range(3)])
    np.testing.assert_allclose(out.obsm["features_stain_stats"][3], enc.encode(tile)[0], atol=1e-6)
    np.testing.assert_allclose(out.obsm["features_stain_stats_sub"][3], enc.encode(crops), atol=1e-6)
    assert isinstance(slide, ArraySlide)


@pytest.mark.parametrize("name", ["stain_stats"])
def test_listed_as_an_encoder(name):
    from spotwhisper.encoders import get_spec, list_encoders

    assert name in list_encoders() and get_spec(name).to_dict()["tile_mpp"] == TILE_MPP
