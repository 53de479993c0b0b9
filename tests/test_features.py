"""Feature extraction: spot tiles + sub-tiles, grid mode, the on-disk cache, the CLI, and real C2 tiles."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from spotwhisper import keys
from spotwhisper.cli import main
from spotwhisper.config import load_config
from spotwhisper.encoders import (
    EncoderSpec,
    FeatureCache,
    FeatureConfig,
    ImageEncoder,
    LoadedBackbone,
    create_encoder,
    extract_features,
    extract_grid_features,
    feature_key,
    subtile_key,
)
from spotwhisper.tiles.blocks import prefetched
from spotwhisper.io import ArraySlide, read_h5ad, write_h5ad
from spotwhisper.tiles import SpotTileConfig, TileConfig, read_tile, spot_layout
from tests.conftest import synthetic_he

torch.set_num_threads(2)
PX = 32  # input size of the small test encoder


def small_encoder(weights_id: str = "test-weights-v1", seed: int = 0, trained_mpp: float | None = None) -> ImageEncoder:
    """A small deterministic CNN in the real ImageEncoder wrapper (fast stand-in for a backbone)."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8))
    spec = EncoderSpec(
        name="small",
        family="test",
        embed_dim=8,
        input_size=PX,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        interpolation="bilinear",
        weights="test",
        licence="test",
        loader=lambda *a, **k: None,
        trained_mpp=trained_mpp,
    )
    return ImageEncoder(spec, LoadedBackbone(module, 8, weights_id))


class CountingForward:
    """Counts forward passes of an encoder (and can forbid them)."""

    def __init__(self, encoder: ImageEncoder, forbid: bool = False):
        self.calls, self.forbid, self.inner = 0, forbid, encoder.forward

    def __call__(self, x):
        self.calls += 1
        if self.forbid:
            raise AssertionError("the encoder ran although the features are cached")
        return self.inner(x)


@pytest.fixture
def spots():
    """Synthetic H&E at 1 µm/px with a 4 × 3 array of spots 100 px apart over the tissue blob."""
    slide = ArraySlide(synthetic_he((600, 800), seed=3), mpp=1.0, name="synthetic.png")
    xs, ys = np.meshgrid(np.arange(250, 551, 100), np.arange(200, 401, 100))
    adata = ad.AnnData(np.zeros((xs.size, 2), np.float32))
    adata.obsm[keys.SPATIAL] = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    return adata, slide


@pytest.fixture
def cfg(tmp_path):
    return FeatureConfig(model="small", batch_size=4, cache_dir=str(tmp_path / "cache"))


def test_spot_features_match_the_tiles_they_come_from(spots, cfg):
    adata, slide = spots
    enc = small_encoder()
    out = extract_features(adata, enc, slide=slide, cfg=cfg, progress=False)
    assert out is adata
    n = adata.n_obs
    feats, subs = adata.obsm[feature_key("small")], adata.obsm[subtile_key("small")]
    assert feats.shape == (n, 8) and subs.shape == (n, 9, 8) and feats.dtype == np.float32
    layout = spot_layout(adata, slide)  # spacing 100 px → 100 µm tiles at 1 µm/px
    tile, sub = read_tile(slide, layout, 4, PX)
    np.testing.assert_allclose(feats[4], enc.encode(tile)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(subs[4], enc.encode(sub), rtol=1e-5, atol=1e-6)  # row-major sub-tiles
    info = adata.uns["features"]["small"]
    assert info["tile_um"] == pytest.approx(100) and info["mpp"] == 1.0 and info["subtile_grid"] == 3
    assert info["neighbours"].shape == (n, 6)
    assert set(info["neighbours"][4][info["neighbours"][4] >= 0]) <= set(range(n)) - {4}
    qc = info["qc"]
    assert qc["tissue_fraction"].shape == (n,) and qc["tissue_fraction"].min() > 0.5  # spots lie on the blob
    assert qc["blur_variance"].shape == (n,) and (qc["blur_variance"] > 0).all()
    assert info["resampling"].startswith("slide at 1.000 µm/px, 100 µm tiles = 100 px resampled to 32 px")
    assert "33.3 µm sub-tiles = 33 px resampled to 32 px" in info["resampling"]
    assert adata.uns[keys.EMBEDDING_MODELS][feature_key("small")]["dim"] == 8


def test_second_run_reads_the_cache_and_changes_miss(spots, cfg, monkeypatch, caplog):
    adata, slide = spots
    enc = small_encoder()
    first = extract_features(adata, enc, slide=slide, cfg=cfg, copy=True, progress=False)
    entries = list(FeatureCache(cfg.cache_dir).root.rglob("*.npz"))
    assert len(entries) == 1 and not list(FeatureCache(cfg.cache_dir).root.rglob("*.part"))

    spy = CountingForward(enc, forbid=True)
    monkeypatch.setattr(enc, "forward", spy)
    second = extract_features(adata, enc, slide=slide, cfg=cfg, copy=True, progress=False)
    assert spy.calls == 0
    for key in (feature_key("small"), subtile_key("small")):
        np.testing.assert_array_equal(first.obsm[key], second.obsm[key])
    assert first.uns["features"]["small"]["cache_key"] == second.uns["features"]["small"]["cache_key"]

    spy.forbid = False  # a different layout, model or weights must miss
    extract_features(adata, enc, slide=slide, cfg=cfg, layout_cfg=SpotTileConfig(tile_um=60.0), copy=True, progress=False)
    assert spy.calls > 0
    other = small_encoder(weights_id="test-weights-v2", seed=1)
    spy2 = CountingForward(other)
    monkeypatch.setattr(other, "forward", spy2)
    changed = extract_features(adata, other, slide=slide, cfg=cfg, copy=True, progress=False)
    assert spy2.calls > 0 and not np.allclose(changed.obsm[feature_key("small")], first.obsm[feature_key("small")])
    assert len(list(FeatureCache(cfg.cache_dir).root.rglob("*.npz"))) == 3

    entries[0].write_bytes(b"not an npz")  # a corrupt entry is recomputed, with a warning
    spy.calls = 0
    with caplog.at_level(logging.WARNING):
        again = extract_features(adata, enc, slide=slide, cfg=cfg, copy=True, progress=False)
    assert spy.calls > 0 and "unreadable" in caplog.text
    np.testing.assert_allclose(again.obsm[feature_key("small")], first.obsm[feature_key("small")], rtol=1e-6)


def test_subset_of_spots_and_no_subtiles(spots, cfg):
    adata, slide = spots
    cfg.with_subtiles = False
    sub = extract_features(adata, small_encoder(), slide=slide, cfg=cfg, indices=[0, 1, 5], progress=False)
    assert sub.n_obs == 3 and feature_key("small") not in adata.obsm  # the original is untouched
    assert subtile_key("small") not in sub.obsm and sub.uns["features"]["small"]["subtile_grid"] == 0
    assert sub.uns["features"]["small"]["neighbours"].max() < 3
    with pytest.raises(ValueError, match="no spot"):
        extract_features(adata, small_encoder(), slide=slide, cfg=cfg, indices=[], progress=False)


def test_stain_normalisation_changes_features_and_cache_key(spots, cfg):
    adata, slide = spots
    enc = small_encoder()
    plain = extract_features(adata, enc, slide=slide, cfg=cfg, copy=True, progress=False)
    tile_cfg = load_config(TileConfig, "tiles")
    tile_cfg.stain.normalize = True
    norm = extract_features(adata, enc, slide=slide, cfg=cfg, tile_cfg=tile_cfg, copy=True, progress=False)
    a, b = plain.uns["features"]["small"], norm.uns["features"]["small"]
    assert b["stain_normalized"] and not a["stain_normalized"] and a["cache_key"] != b["cache_key"]
    assert not np.allclose(plain.obsm[feature_key("small")], norm.obsm[feature_key("small")])


def test_grid_mode_returns_tiles_as_spots(cfg, tmp_path):
    slide = ArraySlide(synthetic_he((600, 800), seed=5), mpp=1.0, name="bare.png")
    tile_cfg = load_config(TileConfig, "tiles")
    tile_cfg.grid.tile_um = 100.0
    grid = extract_grid_features(slide, small_encoder(), tile_cfg=tile_cfg, cfg=cfg, progress=False)
    n = grid.n_obs
    assert n >= 8 and grid.n_vars == 0
    centres = grid.obsm[keys.SPATIAL]
    assert ((centres - 50) % 100 == 0).all()  # centres of the 100 px grid cells
    info = grid.uns["features"]["small"]
    assert info["layout"] == "grid" and (info["qc"]["tissue_fraction"] >= 0.25).all()
    assert grid.obsm[subtile_key("small")].shape == (n, 9, 8)
    lib = grid.uns[keys.SPATIAL]["bare"]
    assert lib["scalefactors"][keys.MPP] == 1.0 and lib["scalefactors"][keys.SPOT_SPACING] == 100.0
    path = write_h5ad(grid, tmp_path / "grid.h5ad")
    back = read_h5ad(path)
    np.testing.assert_array_equal(back.obsm[feature_key("small")], grid.obsm[feature_key("small")])
    np.testing.assert_array_equal(back.uns["features"]["small"]["neighbours"], info["neighbours"])


def test_resampling_far_from_the_training_resolution_warns(spots, cfg, caplog):
    adata, slide = spots
    with caplog.at_level(logging.INFO, logger="spotwhisper.encoders.features"):
        extract_features(adata, small_encoder(trained_mpp=0.5), slide=slide, cfg=cfg, copy=True, progress=False)
    assert "slide at 1.000 µm/px, 100 µm tiles = 100 px resampled to 32 px" in caplog.text
    assert any(r.levelno == logging.WARNING and "trained at 0.5 µm/px" in r.getMessage() for r in caplog.records)


def test_prefetch_keeps_order_and_raises_reader_errors():
    assert list(prefetched(iter(range(5)), True)) == list(range(5))

    def broken():
        yield 1
        raise OSError("tile read failed")

    with pytest.raises(OSError, match="tile read failed"):
        list(prefetched(broken(), True))


def test_cli_models_and_grid_extract(tmp_path, capsys):
    assert main(["features", "models"]) == 0
    text = capsys.readouterr().out
    for name in ("efficientnet_lite0", "h-optimus-0", "uni2-h", "phikon-v2", "conch"):
        assert name in text
    img = tmp_path / "bare.png"
    Image.fromarray(synthetic_he((600, 800), seed=7)).save(img)
    out = tmp_path / "bare.h5ad"
    args = ["features", "extract", str(img), "--mpp", "1.0", "--no-subtiles", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    grid = read_h5ad(out)
    assert grid.obsm[feature_key("efficientnet_lite0")].shape == (grid.n_obs, 1280)
    assert main(["features", "extract", str(img), "--model", "nope", "--out", str(out)]) == 1
    assert "unknown encoder 'nope'" in capsys.readouterr().err


def test_c2_efficientnet_features_are_cached(c2, tmp_path, monkeypatch):
    enc = create_encoder("efficientnet_lite0")
    cfg = FeatureConfig(cache_dir=str(tmp_path / "cache"), batch_size=4)
    first = extract_features(c2, enc, cfg=cfg, indices=np.arange(4), progress=False)
    feats, subs = first.obsm[feature_key(enc.name)], first.obsm[subtile_key(enc.name)]
    assert feats.shape == (4, 1280) and subs.shape == (4, 9, 1280)
    assert np.isfinite(feats).all() and feats.std(axis=0).max() > 0  # spots differ
    info = first.uns["features"][enc.name]
    assert info["mpp"] == pytest.approx(0.737, abs=0.01) and info["tile_um"] == pytest.approx(200, rel=0.01)
    assert "200 µm tiles = 271 px resampled to 224 px" in info["resampling"]
    monkeypatch.setattr(enc, "forward", CountingForward(enc, forbid=True))
    second = extract_features(c2, enc, cfg=cfg, indices=np.arange(4), progress=False)
    np.testing.assert_array_equal(second.obsm[feature_key(enc.name)], feats)
    np.testing.assert_array_equal(second.obsm[subtile_key(enc.name)], subs)
