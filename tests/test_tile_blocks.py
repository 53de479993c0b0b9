"""Tiles read block by block (overlapping Visium tiles' pixels read once, worker threads) are the tiles
read one by one, on a pyramidal TIFF and an in-memory slide."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from spotwhisper.io import ArraySlide, open_slide
from spotwhisper.tiles import TileLayout, iter_tile_batches
from spotwhisper.tiles.blocks import block_groups, prefetched
from tests.conftest import synthetic_he


def visium_layout(width: int, pitch: float, side: float, mpp: float = 1.0) -> TileLayout:
    """A hexagonal lattice of spots ``pitch`` px apart over a ``width``² px slide, tiles ``side`` px
    (Visium: 100 µm pitch under the models' 200 µm tiles), reaching past the edges."""
    rows = np.arange(0, width, pitch * np.sqrt(3) / 2)
    centres = np.array([(x + (r % 2) * pitch / 2, y) for r, y in enumerate(rows) for x in np.arange(0, width, pitch)])
    return TileLayout(centres, side, np.full((len(centres), 0), -1), mpp, "spot", 3)


@pytest.fixture(scope="module")
def tiff_slide(tmp_path_factory):
    """A 1536² px tiled pyramidal TIFF (levels 1, 1/4) of synthetic H&E at 1 µm/px."""
    img = synthetic_he((1536, 1536), seed=3)
    path = tmp_path_factory.mktemp("pyramid") / "slide.tif"
    with tifffile.TiffWriter(path) as tw:
        for lv, arr in enumerate((img, img[::4, ::4])):
            tw.write(arr, tile=(256, 256), compression="zlib", photometric="rgb", subfiletype=1 if lv else 0,
                     resolution=(1e4 / 4**lv,) * 2, resolutionunit="CENTIMETER")
    return open_slide(path, mpp=1.0)


def _by_index(batches) -> dict[int, tuple]:
    out = {}
    for b in batches:
        for k, i in enumerate(b.indices):
            out[int(i)] = (b.tiles[k], None if b.subtiles is None else b.subtiles[k], b.blur[k])
    return out


@pytest.mark.parametrize("out_px,subtiles", [(64, True), (32, False)])
def test_blockwise_reads_give_the_tiles_of_single_reads(tiff_slide, out_px, subtiles):
    layout = visium_layout(1536, 100.0, 200.0)
    single = _by_index(iter_tile_batches(tiff_slide, layout, out_px, 16, with_subtiles=subtiles, progress=False))
    blocks = _by_index(iter_tile_batches(tiff_slide, layout, out_px, 16, with_subtiles=subtiles, progress=False,
                                         block_tiles=2.5, workers=2))
    assert sorted(blocks) == sorted(single) == list(range(len(layout)))
    for i, (tile, subs, blur) in single.items():
        np.testing.assert_array_equal(blocks[i][0], tile)
        if subtiles:
            np.testing.assert_array_equal(blocks[i][1], subs)
        assert blocks[i][2] == blur


def test_overlapping_tiles_are_read_about_once(tiff_slide, monkeypatch):
    layout = visium_layout(1536, 100.0, 200.0)
    read_px = {"n": 0}
    original = type(tiff_slide)._read

    def counting(self, level, x, y, w, h):
        read_px["n"] += w * h
        return original(self, level, x, y, w, h)

    monkeypatch.setattr(type(tiff_slide), "_read", counting)
    list(iter_tile_batches(tiff_slide, layout, 64, 16, progress=False))
    one_by_one = read_px["n"]
    read_px["n"] = 0
    list(iter_tile_batches(tiff_slide, layout, 64, 16, progress=False, block_tiles=5))
    assert read_px["n"] < one_by_one / 3  # 200 µm tiles on a 100 µm hexagonal lattice overlap ~4.6×


def test_sparse_tiles_are_not_read_as_a_block():
    origins = np.array([[0, 0], [900, 900], [10, 0]])
    groups = block_groups(origins, np.arange(3), n=50, block_tiles=20)
    assert sorted(map(len, groups)) == [1, 1, 1]  # bounding box mostly empty: single reads
    assert [len(g) for g in block_groups(origins[[0, 2]], np.arange(2), 50, 20)] == [2]
    assert [g.tolist() for g in block_groups(origins, np.array([2, 0]), 50, 0)] == [[2], [0]]  # 0: order kept


def test_in_memory_slide_and_order_without_blocks(he_image):
    slide = ArraySlide(he_image, mpp=1.0)
    layout = visium_layout(600, 50.0, 100.0)
    order = np.arange(len(layout))[::-1]
    seen = [int(i) for b in iter_tile_batches(slide, layout, 32, 8, indices=order, progress=False) for i in b.indices]
    assert seen == order.tolist()  # tile by tile: the order asked for
    single = _by_index(iter_tile_batches(slide, layout, 32, 8, progress=False))
    blocks = _by_index(iter_tile_batches(slide, layout, 32, 8, progress=False, block_tiles=2.5, workers=3))
    assert all(np.array_equal(blocks[i][0], t) and np.array_equal(blocks[i][1], s) for i, (t, s, _) in single.items())


def test_prefetch_reraises_errors_from_the_reader():
    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetched(broken()))
