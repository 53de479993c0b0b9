"""Tiles stage: tissue mask, QC, spot/grid layouts, streamed extraction, Macenko, preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from spotwhisper import keys
from spotwhisper.io import ArraySlide, open_source_slide
from spotwhisper.tiles import (
    MacenkoNormalizer,
    NoTissueError,
    SpotTileConfig,
    StainConfig,
    TissueMask,
    compute_tissue_mask,
    estimate_stains,
    grid_layout,
    iter_tile_batches,
    read_tile,
    spot_layout,
    tile_qc,
    tissue_mask_from_rgb,
)
from tests.conftest import synthetic_he


def _ellipse(h, w):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - w * 0.5) / (w * 0.32)) ** 2 + ((yy - h * 0.5) / (h * 0.32)) ** 2 < 1


@pytest.mark.parametrize("background", [245, 0])  # white glass and black masked exports
def test_tissue_mask_finds_the_tissue(background):
    img = synthetic_he(background=background)
    mask = tissue_mask_from_rgb(img)
    truth = _ellipse(*img.shape[:2])
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9


def test_blank_slide_has_no_tissue():
    blank = np.full((400, 400, 3), 242, np.uint8) + np.random.default_rng(0).integers(0, 4, (400, 400, 3)).astype(np.uint8)
    with pytest.raises(NoTissueError, match="blank.png: no tissue found"):
        compute_tissue_mask(ArraySlide(blank, mpp=1.0, name="blank.png"))


def test_box_fraction_matches_direct_count():
    rng = np.random.default_rng(1)
    mask = rng.random((50, 80)) > 0.6
    tm = TissueMask(mask=mask, scale=0.5)  # mask px per slide px
    boxes = np.array([[0, 0, 20, 20], [30, 10, 90, 50], [150, 90, 170, 110], [-10, -10, 10, 10]], float)
    got = tm.box_fraction(boxes)
    for b, g in zip(boxes, got):
        x0, y0, x1, y1 = (b * 0.5).astype(int)
        window = np.zeros((x1 - x0) * (y1 - y0))
        inside = mask[max(y0, 0) : y1, max(x0, 0) : x1]
        expected = inside.sum() / window.size
        assert g == pytest.approx(expected)


def test_c2_spot_tiles_lie_on_tissue(c2):
    slide, scale = open_source_slide(c2)
    tissue = compute_tissue_mask(slide)
    layout = spot_layout(c2, slide, scale)
    assert len(layout) == c2.n_obs == 187
    assert layout.side_um == pytest.approx(200, rel=0.01)  # ST spot spacing
    frac = tissue.box_fraction(layout.boxes)
    assert np.median(frac) > 0.7 and (frac >= 0.25).mean() > 0.9
    # negative control: the same spots shifted 3 mm are on glass
    shifted = tissue.box_fraction(layout.boxes + 3000 / layout.mpp)
    assert np.median(shifted) < 0.1
    # ring: up to 6 nearest spots, all within 1.6 spacings; ST grid interior spots have all 6
    spacing = c2.uns[keys.SPATIAL]["C2"]["scalefactors"][keys.SPOT_SPACING]
    for i, ring in enumerate(layout.neighbours):
        valid = ring[ring >= 0]
        d = np.linalg.norm(layout.centres[valid] - layout.centres[i], axis=1)
        assert (d <= 1.6 * spacing + 1e-6).all()
    assert (layout.neighbours >= 0).all(axis=1).mean() > 0.5


def test_subtiles_rebuild_the_spot_tile():
    yy, xx = np.mgrid[:300, :300]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    slide = ArraySlide(img, mpp=1.0)
    from spotwhisper.tiles import TileLayout

    layout = TileLayout(np.array([[150.0, 150.0]]), 90.0, np.full((1, 0), -1), 1.0, "spot", 3)
    tile, subs = read_tile(slide, layout, 0, out_px=30)
    assert tile.shape == (30, 30, 3) and subs.shape == (9, 30, 30, 3)
    rebuilt = np.vstack([np.hstack([subs[r * 3 + c] for c in range(3)]) for r in range(3)])  # 90 px
    assert np.abs(rebuilt.astype(int) - img[105:195, 105:195]).mean() < 2
    # row-major order: the top-right sub-tile holds the top-right corner
    assert np.abs(subs[2].astype(int) - img[105:135, 165:195]).mean() < 2


def test_tiles_are_sized_in_micrometres():
    """The same tissue scanned at 1.0 and 0.5 µm/px gives the same tile."""
    base = synthetic_he((400, 400), seed=3)
    fine = np.asarray(Image.fromarray(base).resize((800, 800), Image.BICUBIC))
    from spotwhisper.tiles import TileLayout

    lay1 = TileLayout(np.array([[200.0, 200.0]]), 100.0, np.full((1, 0), -1), 1.0, "spot", 3)
    lay2 = TileLayout(np.array([[400.0, 400.0]]), 200.0, np.full((1, 0), -1), 0.5, "spot", 3)
    t1, _ = read_tile(ArraySlide(base, 1.0), lay1, 0, 64, with_subtiles=False)
    t2, _ = read_tile(ArraySlide(fine, 0.5), lay2, 0, 64, with_subtiles=False)
    assert np.abs(t1.astype(int) - t2.astype(int)).mean() < 12


def test_grid_layout_covers_tissue_only():
    img = synthetic_he((600, 800))
    slide = ArraySlide(img, mpp=2.0)
    tissue = compute_tissue_mask(slide)
    layout = grid_layout(slide, tissue, min_tissue_fraction=0.5)
    from spotwhisper.tiles import GridTileConfig

    assert layout.side_px == pytest.approx(GridTileConfig().tile_um / 2.0)
    truth = _ellipse(600, 800)
    for cx, cy in layout.centres.astype(int):
        assert truth[cy - 20 : cy + 20, cx - 20 : cx + 20].any()
    # neighbour relation is symmetric
    pairs = {(i, j) for i, ring in enumerate(layout.neighbours) for j in ring if j >= 0}
    assert all((j, i) in pairs for i, j in pairs)
    with pytest.raises(ValueError, match="overlap"):
        grid_layout(slide, tissue, type(GridTileConfig())(overlap=0.95))


def test_iter_batches_streams_every_tile_once(c2):
    slide, scale = open_source_slide(c2)
    layout = spot_layout(c2, slide, scale, SpotTileConfig(tile_um=100.0))
    assert layout.side_um == pytest.approx(100.0)
    seen = []
    for batch in iter_tile_batches(slide, layout, out_px=32, batch_size=8, indices=np.arange(20), progress=False):
        assert batch.tiles.shape[1:] == (32, 32, 3) and batch.subtiles.shape[1:] == (9, 32, 32, 3)
        assert len(batch.blur) == len(batch.indices)
        seen.extend(batch.indices.tolist())
    assert seen == list(range(20))


def test_blur_qc_flags_blurred_tiles():
    tile = synthetic_he((128, 128), seed=5)
    blurred = ndimage.uniform_filter(tile, size=(9, 9, 1))
    sharp_qc, blur_qc = tile_qc(tile, 0.9), tile_qc(blurred, 0.9)
    assert sharp_qc["blur_variance"] > 5 * blur_qc["blur_variance"]
    assert blur_qc["is_blurred"] and not sharp_qc["is_blurred"]
    assert tile_qc(tile, 0.1)["has_tissue"] is False


def test_macenko_maps_stains_to_the_reference():
    ref = StainConfig()
    rng = np.random.default_rng(0)
    # a synthetic slide stained with other H and E vectors
    he_src = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])
    he_src /= np.linalg.norm(he_src, axis=0)
    conc = np.stack([rng.gamma(2, 0.4, 20000), rng.gamma(2, 0.3, 20000)])
    od = he_src @ conc
    img = np.clip(240 * np.exp(-od.T), 0, 255).reshape(100, 200, 3).astype(np.uint8)
    norm = MacenkoNormalizer(ref).fit(img)
    out = norm.transform(img)
    got = estimate_stains(out, ref).he
    target = np.asarray(ref.reference_he) / np.linalg.norm(ref.reference_he, axis=0)
    cos = (got / np.linalg.norm(got, axis=0) * target).sum(axis=0)
    assert (cos > 0.98).all()
    src_cos = (he_src * target).sum(axis=0)
    assert (cos > src_cos).all()
    with pytest.raises(RuntimeError, match="fit"):
        MacenkoNormalizer().transform(img)


def test_macenko_without_rescaling_keeps_the_slides_densities():
    """scale_concentrations=False swaps the stain colours only: a slide stained twice as strongly stays twice as
    dense after normalisation (with Macenko's rescaling both end at the reference's 99th percentile)."""
    from dataclasses import replace as dc_replace

    rng = np.random.default_rng(1)
    he = np.asarray(StainConfig().reference_he) / np.linalg.norm(StainConfig().reference_he, axis=0)
    conc = np.stack([rng.gamma(2, 0.3, 20000), rng.gamma(2, 0.2, 20000)])

    def slide(k):
        return np.clip(240 * np.exp(-(he @ (k * conc)).T), 0, 255).reshape(100, 200, 3).astype(np.uint8)

    def density(img):
        return -np.log(np.maximum(img.astype(float), 1) / 240).mean()

    light, dark = slide(0.5), slide(1.0)
    for scale, ratio in ((True, (0.9, 1.1)), (False, (1.7, 2.3))):
        cfg = dc_replace(StainConfig(), scale_concentrations=scale)
        a, b = (MacenkoNormalizer(cfg).fit(x).transform(x) for x in (light, dark))
        assert ratio[0] < density(b) / density(a) < ratio[1]
