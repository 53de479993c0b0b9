"""Virtual proteins as an OME-TIFF on the H&E pixel grid: what QuPath / napari need to overlay it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from spotwhisper import keys
from spotwhisper.proteins import ExportConfig, export_ome_tiff_on_image, export_panel, image_grid


def _ome(path):
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        levels = [lv.asarray() for lv in series.levels]
        root = ET.fromstring(tf.ome_metadata)
    pixels = next(el for el in root.iter() if el.tag.endswith("Pixels"))
    names = [el.get("Name") for el in pixels if el.tag.endswith("Channel")]
    return levels, names, pixels


def test_ome_tiff_on_the_he_grid(mini_slide, tmp_path):
    a = mini_slide
    lib = next(iter(a.uns[keys.SPATIAL]))
    meta, sf = a.uns[keys.SPATIAL][lib]["metadata"], a.uns[keys.SPATIAL][lib]["scalefactors"]
    width, height = int(meta["source_image_width"]), int(meta["source_image_height"])
    he_mpp = float(sf[keys.MPP])  # µm per H&E pixel (her2st: source image = full resolution)
    path = export_ome_tiff_on_image(a, tmp_path / "C2_tls_virtual_proteins.ome.tif")
    levels, names, pixels = _ome(path)

    d = 2 ** math.ceil(math.log2(max(width, height) / 1024))  # default export.max_side = 1024
    assert levels[0].shape == (50, math.ceil(height / d), math.ceil(width / d))
    assert len(levels) >= 3 and levels[1].shape[1:] == tuple(math.ceil(s / 2) for s in levels[0].shape[1:])
    assert names == [str(m) for m in a.uns[keys.PROTEIN_MARKERS]] and len(names) == 50
    assert float(pixels.get("PhysicalSizeX")) == pytest.approx(he_mpp * d)
    assert float(pixels.get("PhysicalSizeY")) == pytest.approx(he_mpp * d)
    assert pixels.get("PhysicalSizeXUnit") == "µm" and pixels.get("Type") == "float"

    img, prot = levels[0], np.asarray(a.obsm[keys.PROTEINS])
    xy = np.asarray(a.obsm[keys.SPATIAL]) * float(meta.get(keys.SOURCE_IMAGE_SCALE, 1.0)) / d
    for i in (0, len(xy) // 2, len(xy) - 1):  # the pixel under each spot centre holds that spot's panel
        np.testing.assert_array_equal(img[:, int(xy[i, 1]), int(xy[i, 0])], prot[i].astype(np.float32))
    assert np.isnan(img[:, 0, 0]).all()  # glass, far from every spot: the documented NaN fill
    covered = np.isfinite(img[8]).mean()  # PanCK: every spot has a value
    side = 200.0 / he_mpp / d  # ST tile = 200 µm spot pitch
    assert covered == pytest.approx(len(xy) * side**2 / img[0].size, rel=0.2)


def test_image_grid_disk_footprint_is_smaller(mini_slide):
    tile = image_grid(mini_slide, ExportConfig(footprint="tile"))
    disk = image_grid(mini_slide, ExportConfig(footprint="spot"))
    assert tile.downsample == disk.downsample
    ratio = (disk.labels >= 0).sum() / (tile.labels >= 0).sum()
    assert 0.1 < ratio < 0.35  # ST: 100 µm disk in a 200 µm tile -> pi/16 ~ 0.2


def test_export_panel_falls_back_to_spot_grid_without_image(mini_slide, tmp_path):
    bare = mini_slide.copy()
    del bare.uns[keys.SPATIAL]
    path = export_panel(bare, tmp_path / "bare.ome.tif")
    levels, names, _ = _ome(path)
    assert len(levels) == 1 and len(names) == 50 and levels[0].shape[1] * levels[0].shape[2] < 2 * bare.n_obs
