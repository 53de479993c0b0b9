"""Slide backends: JPEG/PNG, pyramidal TIFF (never read whole), OME-TIFF µm/px, bad files."""

from __future__ import annotations

import tracemalloc

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from spotwhisper.io import ArraySlide, SlideError, open_slide


def write_pyramid(path, size: int, levels: int, tile: int = 512, mpp: float = 0.5) -> np.ndarray:
    """Write a tiled, JPEG-compressed pyramidal TIFF of ``size``² px from one pre-encoded tile."""
    pattern = np.full((tile, tile, 3), 240, np.uint8)
    pattern[100:400, 100:400] = (200, 100, 180)
    encoded = imagecodecs.jpeg8_encode(pattern, level=90)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for lv in range(levels):
            side = size // 4**lv
            n = (-(-side // tile)) ** 2
            tw.write(
                (encoded for _ in range(n)),
                shape=(side, side, 3),
                dtype="uint8",
                tile=(tile, tile),
                compression="jpeg",
                photometric="rgb",
                subfiletype=1 if lv else 0,
                resolution=(1e4 / (mpp * 4**lv),) * 2,
                resolutionunit="CENTIMETER",
            )
    return pattern


def test_jpeg_and_png_regions(tmp_path, he_image):
    for suffix in (".jpg", ".png"):
        path = tmp_path / f"slide{suffix}"
        Image.fromarray(he_image).save(path, quality=95)
        slide = open_slide(path, mpp=0.5)
        assert slide.dimensions == (800, 600) and slide.mpp == 0.5 and slide.level_count == 1
        region = slide.read_region((100, 50), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        if suffix == ".png":  # lossless: exact pixels
            assert np.array_equal(region, he_image[50:82, 100:164])
        thumb = slide.get_thumbnail(200)
        assert thumb.shape == (150, 200, 3)


def test_region_past_the_edge_is_padded_white():
    img = np.zeros((100, 100, 3), np.uint8)
    slide = ArraySlide(img, mpp=1.0)
    region = slide.read_region((90, -5), 0, (20, 20))
    assert region[5:, :10].max() == 0  # inside: the black image
    assert region[:5].min() == 255 and region[:, 10:].min() == 255  # outside: white


def test_huge_pyramidal_tiff_is_never_read_whole(tmp_path):
    """A 100k × 100k slide: regions and thumbnails stream from tiles (bounded memory)."""
    path = tmp_path / "huge.tif"
    pattern = write_pyramid(path, 100_000, levels=4)
    tracemalloc.start()
    try:
        slide = open_slide(path)
        assert slide.dimensions == (100_000, 100_000)
        assert slide.level_count == 4 and slide.mpp == pytest.approx(0.5)
        region = slide.read_region((512 * 97 + 100, 512 * 97 + 100), 0, (300, 300))
        thumb = slide.get_thumbnail(1000)
        scaled = slide.read_scaled((50_000, 50_000, 54_096, 54_096), 256)  # 4096 px box → 256 px
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB: the slide was read whole"  # whole = 30 GB
    assert np.abs(region.astype(int) - pattern[100:400, 100:400]).mean() < 8
    assert thumb.shape == (1000, 1000, 3)
    assert scaled.shape == (256, 256, 3)


def test_single_level_tiff_thumbnail_streams_blocks(tmp_path):
    path = tmp_path / "flat.tif"
    write_pyramid(path, 10_240, levels=1)
    slide = open_slide(path)
    assert slide.level_count == 1
    thumb = slide.get_thumbnail(512)
    assert thumb.shape == (512, 512, 3)
    # the pink square of each 512-px tile survives downsampling: thumbnail is not blank
    assert thumb[..., 1].min() < 150


def test_ome_tiff_mpp_from_metadata(tmp_path, he_image):
    path = tmp_path / "slide.ome.tif"
    tifffile.imwrite(path, he_image, photometric="rgb", metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    slide = open_slide(path)
    assert slide.dimensions == (800, 600)
    assert slide.mpp == pytest.approx(0.25)
    assert np.array_equal(slide.read_region((10, 20), 0, (5, 5)), he_image[20:25, 10:15])
    assert open_slide(path, mpp=0.3).mpp == 0.3  # the user's value wins


def test_bad_slides_name_the_file(tmp_path):
    with pytest.raises(SlideError, match="missing.jpg: no such slide"):
        open_slide(tmp_path / "missing.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(SlideError, match="broken.jpg: cannot read image"):
        open_slide(bad)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(SlideError, match="unsupported slide format '.txt'"):
        open_slide(other)
    with pytest.raises(SlideError, match="is a folder"):
        open_slide(tmp_path)


def test_truncated_jpeg_fails_on_read_with_the_file_name(tmp_path, he_image):
    path = tmp_path / "cut.jpg"
    Image.fromarray(he_image).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    slide = open_slide(path)  # the header is fine
    with pytest.raises(SlideError, match="cut.jpg: image is truncated or corrupt"):
        slide.read_region((0, 0), 0, (10, 10))
