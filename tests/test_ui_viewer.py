"""The slide viewer's server side: deep-zoom tiles of a 100k × 100k px pyramidal TIFF read region by
region from the right level, per-session tile URLs, and the heat-map / comparison layers."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from spotwhisper.io.slide import open_slide
from spotwhisper.ui.deepzoom import DeepZoom
from spotwhisper.ui.layers import CLASS_COLOURS, class_layer, heat_layer
from spotwhisper.ui.viewer import ViewerRegistry

SIDE = 100_000
TILE = 512
DOWNSAMPLES = [1, 4, 16, 64, 256]
#: a distinct colour per pyramid level, so a tile's pixels tell which level it was read from
LEVEL_COLOURS = [(230, 150, 200), (200, 120, 180), (170, 90, 160), (140, 60, 140), (110, 40, 120)]


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    """A 100,000 × 100,000 px RGB pyramidal TIFF (5 levels in SubIFDs, 0.25 µm/px), each level one
    colour; written from pre-compressed tiles in well under a second (~33 MB on disk)."""
    path = tmp_path_factory.mktemp("wsi") / "big.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate(DOWNSAMPLES):
            w = h = -(-SIDE // ds)
            tile = np.empty((TILE, TILE, 3), np.uint8)
            tile[:] = LEVEL_COLOURS[i]
            data = zlib.compress(tile.tobytes(), 9)
            n = (-(-w // TILE)) * (-(-h // TILE))
            kw = {"shape": (h, w, 3), "dtype": "uint8", "tile": (TILE, TILE), "compression": "zlib", "photometric": "rgb"}
            if i == 0:
                tif.write((data for _ in range(n)), subifds=len(DOWNSAMPLES) - 1, resolution=(1e4 / 0.25, 1e4 / 0.25),
                          resolutionunit="CENTIMETER", **kw)
            else:
                tif.write((data for _ in range(n)), subfiletype=1, **kw)
    return path


class Recorder:
    """Wraps a slide's ``_read`` to record every region read: (level, x, y, w, h) in level px."""

    def __init__(self, slide):
        self.calls: list[tuple[int, int, int, int, int]] = []
        inner = slide._read

        def read(level, x, y, w, h):
            self.calls.append((level, x, y, w, h))
            return inner(level, x, y, w, h)

        slide._read = read


def test_deep_zoom_of_a_100k_slide_reads_only_tile_boxes(big_tiff):
    slide = open_slide(big_tiff)
    assert slide.dimensions == (SIDE, SIDE) and slide.level_count == 5 and slide.mpp == pytest.approx(0.25)
    rec = Recorder(slide)
    dz = DeepZoom(slide)
    assert dz.max_level == 17 and dz.level_size(17) == (SIDE, SIDE) and dz.level_size(8) == (196, 196)
    assert 'Width="100000"' in dz.dzi_xml() and 'TileSize="254"' in dz.dzi_xml()

    # the whole slide in one tile: read from the coarsest level (391 px), nothing else
    whole = np.asarray(Image.open(io.BytesIO(dz.tile(8, 0, 0))))
    assert whole.shape == (196, 196, 3)
    assert rec.calls == [(4, 0, 0, 391, 391)]
    assert np.abs(whole.reshape(-1, 3).mean(0) - LEVEL_COLOURS[4]).max() < 3

    # a tile in the middle at full resolution: level 0, only its 256 px box
    rec.calls.clear()
    deep = dz.tile_array(17, 200, 190)
    assert deep.shape == (256, 256, 3)
    assert rec.calls == [(0, 200 * 254 - 1, 190 * 254 - 1, 256, 256)]
    assert tuple(deep[10, 10]) == LEVEL_COLOURS[0]

    # a tile at 1/4 resolution comes from the 1/4 level; at 1/8 from the 1/4 level too (then shrunk)
    rec.calls.clear()
    quarter = dz.tile_array(15, 10, 10)
    eighth = dz.tile_array(14, 3, 4)
    assert [c[0] for c in rec.calls] == [1, 1]
    assert tuple(quarter[5, 5]) == LEVEL_COLOURS[1] and np.abs(eighth[5, 5].astype(int) - LEVEL_COLOURS[1]).max() <= 1
    assert max(c[3] * c[4] for c in rec.calls) <= 512 * 512  # never more than two tiles' worth across
    with pytest.raises(ValueError, match="no tile"):
        dz.tile_box(8, 1, 0)
    slide.close()


def test_non_pyramidal_image_uses_a_thumbnail_for_far_zoom(tmp_path, he_image):
    path = tmp_path / "plain.png"
    Image.fromarray(np.tile(he_image, (4, 4, 1))).save(path)  # 3200 x 2400, one level
    slide = open_slide(path)
    rec = Recorder(slide)
    dz = DeepZoom(slide, max_read_px=1024, thumbnail_px=512)
    dz.tile(dz.max_level - 4, 0, 0)  # 1/16: would need a 3200 px read from the only level
    assert rec.calls == []  # served from the thumbnail (PNG thumbnails are made without _read)
    dz.tile(dz.max_level, 3, 2)
    assert rec.calls and rec.calls[-1][3] <= 256 and rec.calls[-1][4] <= 256


def test_tile_urls_are_per_session(big_tiff):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    reg = ViewerRegistry()
    opener = lambda: (open_slide(big_tiff), 1.0)
    mine = reg.token("session-a", "big", opener)
    theirs = reg.token("session-b", "big", opener)
    assert mine != theirs and reg.token("session-a", "big", opener) == mine and len(mine) >= 24
    client = TestClient(Starlette(routes=reg.routes()))
    assert client.get(f"/{reg.url(mine)}").status_code == 200
    tile = client.get(f"/sw/v/{mine}/slide_files/9/0_0.jpeg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile.content)).size == (255, 255)  # 391 px level → 254 + 1 overlap
    assert client.get("/sw/v/not-a-token/slide.dzi").status_code == 404
    assert client.get(f"/sw/v/{mine}/slide_files/9/5_5.jpeg").status_code == 404  # outside the grid
    assert client.get("/sw/static/openseadragon/openseadragon.min.js").status_code == 200
    assert client.get("/sw/static/openseadragon/LICENSE.txt").status_code == 200
    # a token made for a browser's session answers only that browser (its client cookie)
    owned = reg.token("session-c", "big", opener, owner="cookie-c")
    assert client.get(f"/{reg.url(owned)}").status_code == 404
    assert client.get(f"/{reg.url(owned)}", cookies={"spotwhisper_client": "cookie-x"}).status_code == 404
    assert client.get(f"/{reg.url(owned)}", cookies={"spotwhisper_client": "cookie-c"}).status_code == 200
    assert reg.drop_session("session-a") == 1
    assert client.get(f"/{reg.url(mine)}").status_code == 404  # gone with its session
    assert client.get(f"/{reg.url(theirs)}").status_code == 200  # the other session is untouched
    assert reg.prune({"session-c"}) == 1  # session-b ended without an unload (swept): its token goes too
    assert client.get(f"/{reg.url(theirs)}").status_code == 404


def test_heat_and_class_layers():
    coords = np.array([[100.0, 100.0], [300.0, 100.0], [100.0, 300.0], [300.0, 300.0]])
    layer = heat_layer(coords, np.array([0.0, 1.0, 2.0, np.nan]), 200.0, vmin=0.0, vmax=2.0, threshold=1.5)
    assert (layer.x, layer.y, layer.w, layer.h) == (0.0, 0.0, 400.0, 400.0)
    rgba = np.asarray(Image.open(io.BytesIO(layer.png)))
    assert rgba.shape == (8, 8, 4)  # 4 cells per spot side
    a = rgba[..., 3]
    assert a[1, 5] == 80 and a[5, 1] == 235 and a[5, 5] == 0  # below threshold faint, hit strong, NaN clear
    assert rgba[5, 1, :3].tolist() != rgba[1, 1, :3].tolist()  # coloured by score
    classes = class_layer(coords, np.array([1, 2, 3, 0]), 200.0)
    c = np.asarray(Image.open(io.BytesIO(classes.png)))
    hexes = ["#{:02X}{:02X}{:02X}".format(*c[y, x, :3]) for y, x in ((1, 1), (1, 5), (5, 1))]
    assert hexes == [CLASS_COLOURS[1], CLASS_COLOURS[2], CLASS_COLOURS[3]] and c[5, 5, 3] == 0
