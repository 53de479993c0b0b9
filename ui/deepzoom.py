"""Deep-zoom (DZI) tiles of a slide, read region by region from its pyramid.

The Deep Zoom format (what OpenSeadragon reads) describes an image as a pyramid of levels; level
``L`` is the image shrunk by ``2**(max_level - L)`` and cut into ``tile_size`` px tiles with
``overlap`` px shared on inner edges (``<col>_<row>.jpeg``). :class:`DeepZoom` answers the
descriptor (:meth:`DeepZoom.dzi_xml`) and each tile (:meth:`DeepZoom.tile`) from a
:class:`~spotwhisper.io.slide.Slide`:

* the slide level read is the coarsest one with at least the tile's resolution
  (``Slide.best_level_for_downsample``), and only the tile's box of it is read
  (``Slide.read_region``) — a 100k × 100k px pyramidal TIFF is never read whole;
* when a slide has no level coarse enough (a plain, non-pyramidal image) and a tile would need
  more than ``max_read_px`` px across, the tile is cut from a thumbnail made once
  (``Slide.get_thumbnail`` streams the image in blocks) instead.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from spotwhisper.io.slide import Slide

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"


@dataclass(frozen=True)
class TileBox:
    """Where a DZI tile lies: ``level`` and its box in level px, and the same box in level-0 px."""

    level: int
    x: int
    y: int
    w: int
    h: int
    downsample: float  #: level-0 px per level px

    @property
    def level0(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in level-0 (slide) px."""
        d = self.downsample
        return self.x * d, self.y * d, (self.x + self.w) * d, (self.y + self.h) * d


class DeepZoom:
    """DZI geometry and tiles of ``slide`` (``tile_size`` + ``overlap`` px JPEG tiles)."""

    def __init__(self, slide: Slide, tile_size: int = 254, overlap: int = 1, quality: int = 80,
                 max_read_px: int = 4096, thumbnail_px: int = 2048):
        if tile_size < 16 or overlap < 0:
            raise ValueError(f"tile_size must be >= 16 and overlap >= 0, got {tile_size}, {overlap}")
        self.slide = slide
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.quality = int(quality)
        self.max_read_px = int(max_read_px)
        self.thumbnail_px = int(thumbnail_px)
        w, h = slide.dimensions
        self.width, self.height = int(w), int(h)
        self.max_level = max(0, math.ceil(math.log2(max(self.width, self.height, 1))))
        self._thumb: np.ndarray | None = None
        self._thumb_lock = threading.Lock()

    @property
    def level_count(self) -> int:
        return self.max_level + 1

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of DZI level ``level`` in px."""
        self._check_level(level)
        d = 2 ** (self.max_level - level)
        return max(1, math.ceil(self.width / d)), max(1, math.ceil(self.height / d))

    def tile_grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at ``level``."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def dzi_xml(self, fmt: str = "jpeg") -> str:
        """The ``.dzi`` descriptor OpenSeadragon opens."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns="{DZI_NAMESPACE}" Format="{fmt}" '
                f'Overlap="{self.overlap}" TileSize="{self.tile_size}"><Size Width="{self.width}" '
                f'Height="{self.height}"/></Image>')

    def tile_box(self, level: int, col: int, row: int) -> TileBox:
        """The box tile ``(col, row)`` of ``level`` covers, overlap included; ``ValueError`` when out of range."""
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"no tile {col}_{row} at level {level} (grid {cols} x {rows})")
        w, h = self.level_size(level)
        ts, ov = self.tile_size, self.overlap
        x0, y0 = col * ts - (ov if col else 0), row * ts - (ov if row else 0)
        x1, y1 = min((col + 1) * ts + ov, w), min((row + 1) * ts + ov, h)
        return TileBox(level, x0, y0, x1 - x0, y1 - y0, float(2 ** (self.max_level - level)))

    def tile_array(self, level: int, col: int, row: int) -> np.ndarray:
        """Tile pixels ``(h, w, 3)`` uint8."""
        box = self.tile_box(level, col, row)
        bx0, by0, bx1, by1 = box.level0
        slide_level = self.slide.best_level_for_downsample(box.downsample)
        ds = self.slide.level_downsamples[slide_level]
        rw, rh = max(1, round((bx1 - bx0) / ds)), max(1, round((by1 - by0) / ds))
        if max(rw, rh) > self.max_read_px:  # no pyramid level coarse enough: cut from the thumbnail
            return self._from_thumbnail(box)
        region = self.slide.read_region((int(round(bx0)), int(round(by0))), slide_level, (rw, rh))
        if (rw, rh) != (box.w, box.h):
            region = np.asarray(Image.fromarray(region).resize((box.w, box.h), Image.BILINEAR))
        return region

    def tile(self, level: int, col: int, row: int) -> bytes:
        """Tile ``(col, row)`` of ``level`` as JPEG bytes."""
        buf = io.BytesIO()
        Image.fromarray(self.tile_array(level, col, row)).save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()

    def thumbnail(self) -> np.ndarray:
        """The whole slide at most ``thumbnail_px`` px across (made once, read block by block)."""
        with self._thumb_lock:
            if self._thumb is None:
                self._thumb = self.slide.get_thumbnail(self.thumbnail_px)
            return self._thumb

    def _from_thumbnail(self, box: TileBox) -> np.ndarray:
        thumb = self.thumbnail()
        f = thumb.shape[1] / self.width
        x0, y0, x1, y1 = (v * f for v in box.level0)
        crop = Image.fromarray(thumb).crop((int(math.floor(x0)), int(math.floor(y0)),
                                            max(int(math.ceil(x1)), int(math.floor(x0)) + 1),
                                            max(int(math.ceil(y1)), int(math.floor(y0)) + 1)))
        return np.asarray(crop.resize((box.w, box.h), Image.BILINEAR))

    def _check_level(self, level: int) -> None:
        if not 0 <= level <= self.max_level:
            raise ValueError(f"no level {level}: levels 0..{self.max_level}")
