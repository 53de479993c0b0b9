"""Slide views (resolution and stain shifts): physical sizes, tissue position, stain changes, cache keys."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from spotwhisper import keys
from spotwhisper.encoders.feature_cache import slide_fingerprint
from spotwhisper.io.slide import ArraySlide
from spotwhisper.io.spatial import attach_image
from spotwhisper.tiles import compute_tissue_mask, spot_layout
from spotwhisper.tiles.extract import read_tile
from spotwhisper.tiles.views import HedShift, SlideView, StainTransfer, slide_stains, view_of
from tests.conftest import synthetic_he

BASE_MPP = 0.5


def _slide_with_spots(size=(1200, 1600), spacing_px=200.0, img=None):
    """A synthetic H&E at 0.5 µm/px with spots on a square grid (100 µm pitch), tissue blob in the middle
    (``img`` replaces the default :func:`synthetic_he` image)."""
    img = synthetic_he(size) if img is None else img
    slide = ArraySlide(img, mpp=BASE_MPP, name="synthetic")
    h, w = size
    xs, ys = np.meshgrid(np.arange(spacing_px, w - spacing_px / 2, spacing_px), np.arange(spacing_px, h - spacing_px / 2, spacing_px))
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    adata = ad.AnnData(X=sparse.csr_matrix((len(xy), 0), dtype=np.float32))
    adata.obsm[keys.SPATIAL] = xy
    attach_image(adata, "syn", slide, mpp=BASE_MPP, spot_spacing_px=spacing_px, spot_diameter_px=None, technology="test")
    return img, slide, adata


@pytest.mark.parametrize("mpp", [1.0, 2.0, 3.5])
def test_resampled_tiles_keep_physical_size_and_stay_on_tissue(mpp):
    img, slide, adata = _slide_with_spots()
    base_layout = spot_layout(adata, slide, 1.0)
    view, scale = view_of(slide, 1.0, mpp)
    assert view.mpp == pytest.approx(mpp)
    assert view.dimensions == (round(1600 * BASE_MPP / mpp), round(1200 * BASE_MPP / mpp))
    layout = spot_layout(adata, view, scale)
    # same µm, fewer pixels: the tile covers the same piece of tissue
    assert layout.side_um == pytest.approx(base_layout.side_um)
    assert layout.side_px == pytest.approx(base_layout.side_px * BASE_MPP / mpp)
    np.testing.assert_allclose(layout.centres * mpp / BASE_MPP, base_layout.centres)
    tissue_base = compute_tissue_mask(slide)
    tissue_view = compute_tissue_mask(view)
    np.testing.assert_allclose(tissue_view.box_fraction(layout.boxes), tissue_base.box_fraction(base_layout.boxes), atol=0.08)
    for i in range(len(layout)):
        t_base, _ = read_tile(slide, base_layout, i, 64, with_subtiles=False)
        t_view, _ = read_tile(view, layout, i, 64, with_subtiles=False)
        # the same region: mean colour matches, while detail (nuclei) is lost at coarse µm/px
        np.testing.assert_allclose(t_view.reshape(-1, 3).mean(0), t_base.reshape(-1, 3).mean(0), atol=6)
    on_tissue = np.argmax(tissue_base.box_fraction(base_layout.boxes))
    t_base, _ = read_tile(slide, base_layout, on_tissue, 128, with_subtiles=False)
    t_view, _ = read_tile(view, layout, on_tissue, 128, with_subtiles=False)
    assert t_view.std() < t_base.std()  # blurred by the downsample


def test_view_never_upsamples_and_needs_mpp():
    img, slide, _ = _slide_with_spots()
    finer = SlideView(slide, mpp=0.25)
    assert finer.mpp == BASE_MPP and finer.dimensions == slide.dimensions
    np.testing.assert_array_equal(finer.read_region((100, 100), 0, (50, 40)), img[100:140, 100:150])
    with pytest.raises(ValueError, match="µm per pixel unknown"):
        SlideView(ArraySlide(img), mpp=2.0)


def test_stain_changes_colour_not_geometry():
    img, slide, adata = _slide_with_spots()
    shift = HedShift(scale=(1.3, 0.8, 1.0), shift=(0.0, 0.0, 0.0))
    view = SlideView(slide, stain=shift)
    region = view.read_region((300, 300), 0, (400, 300))
    base = slide.read_region((300, 300), 0, (400, 300))
    assert region.shape == base.shape
    assert np.abs(region.astype(int) - base).mean() > 3
    # glass stays glass
    np.testing.assert_allclose(view.read_region((0, 0), 0, (20, 20)).mean(), img[:20, :20].mean(), atol=8)
    rng = np.random.default_rng(0)
    assert HedShift.random(rng).describe() != HedShift.random(rng).describe()


RUIFROK_HE = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]]) / np.linalg.norm([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]], axis=0)


def _stained(he: np.ndarray, seed: int = 0, size=(600, 800)) -> np.ndarray:
    """An image rendered from stain vectors ``he`` (3 × 2, optical density): Beer–Lambert, io = 240."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    blob = ((xx - w / 2) / (w * 0.35)) ** 2 + ((yy - h / 2) / (h * 0.35)) ** 2 < 1
    conc = np.zeros((h, w, 2))
    conc[..., 1] = blob * rng.uniform(0.3, 0.9, (h, w))  # eosin everywhere in tissue …
    conc[..., 0] = blob * rng.uniform(0.0, 0.4, (h, w))  # … with some haematoxylin (Macenko needs mixed pixels)
    for _ in range(int(blob.sum() * 0.15 / 64)):  # nuclei: 8 × 8 px, ~15 % of the tissue
        y, x = rng.integers(0, h), rng.integers(0, w)
        if blob[y, x]:
            conc[max(0, y - 4) : y + 4, max(0, x - 4) : x + 4, 0] = rng.uniform(0.8, 1.6)
    od = conc @ he.T
    return np.clip(240 * np.exp(-od), 0, 255).astype(np.uint8)


def test_macenko_transfer_moves_stain_towards_target():
    ref = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])  # Ruifrok H and E
    other = np.array([[0.50, 0.20], [0.80, 0.90], [0.33, 0.38]])  # another lab's stains
    ref, other = ref / np.linalg.norm(ref, axis=0), other / np.linalg.norm(other, axis=0)
    src = ArraySlide(_stained(ref, seed=1), mpp=BASE_MPP, name="src")
    target = ArraySlide(_stained(other, seed=2), mpp=BASE_MPP, name="target")
    view = SlideView(src, stain=StainTransfer(slide_stains(src), slide_stains(target), name="target"))
    est = slide_stains(view)
    # the view's stain vectors are the target's, no longer the source's
    goal = slide_stains(target).he
    assert np.abs(est.he - goal).max() < 0.3 * np.abs(slide_stains(src).he - goal).max()
    # geometry is kept: glass stays glass where the source has glass
    np.testing.assert_allclose(view.read_region((0, 0), 0, (20, 20)), src.read_region((0, 0), 0, (20, 20)), atol=3)


def test_views_have_their_own_feature_cache_keys():
    _, slide, _ = _slide_with_spots()
    keys_ = {slide_fingerprint(s) for s in (slide, SlideView(slide, 2.0), SlideView(slide, 3.5),
                                            SlideView(slide, 2.0, HedShift((1.1, 1, 1), (0, 0, 0))))}
    assert len(keys_) == 4
    assert slide_fingerprint(SlideView(slide, 2.0)) == slide_fingerprint(SlideView(slide, 2.0))
