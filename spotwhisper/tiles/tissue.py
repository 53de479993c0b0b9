"""Tissue mask (Otsu on saturation, on a thumbnail) and per-tile QC (tissue fraction, blur)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import color, filters, morphology

from ..io.slide import Slide
from .config import QCConfig, TissueConfig


class NoTissueError(ValueError):
    """The slide (or region) holds no tissue."""


@dataclass
class TissueMask:
    """Boolean tissue mask of a thumbnail; ``scale`` = mask pixels per slide (level-0) pixel."""

    mask: np.ndarray
    scale: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean())

    def box_fraction(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction inside each level-0 box ``(x0, y0, x1, y1)``; ``(n, 4)`` → ``(n,)``.

        Uses a summed-area table, so it costs O(1) per box; boxes past the edge count as background.
        """
        boxes = np.atleast_2d(np.asarray(boxes, dtype=float))
        h, w = self.mask.shape
        sat = np.zeros((h + 1, w + 1), dtype=np.int64)
        sat[1:, 1:] = np.cumsum(np.cumsum(self.mask, axis=0), axis=1)
        s = boxes * self.scale
        # rounded box edges in mask pixels, at least one pixel wide
        x0 = np.floor(s[:, 0]).astype(int)
        y0 = np.floor(s[:, 1]).astype(int)
        x1 = np.maximum(np.ceil(s[:, 2]).astype(int), x0 + 1)
        y1 = np.maximum(np.ceil(s[:, 3]).astype(int), y0 + 1)
        area = (x1 - x0) * (y1 - y0)
        cx0, cy0 = np.clip(x0, 0, w), np.clip(y0, 0, h)
        cx1, cy1 = np.clip(x1, 0, w), np.clip(y1, 0, h)
        inside = sat[cy1, cx1] - sat[cy0, cx1] - sat[cy1, cx0] + sat[cy0, cx0]
        return inside / area


def tissue_mask_from_rgb(rgb: np.ndarray, cfg: TissueConfig | None = None) -> np.ndarray:
    """Boolean tissue mask of an RGB image ``(h, w, 3)`` uint8.

    Background may be white glass (low saturation) or black (low value, as in masked exports):
    pixels darker than ``dark_value`` are excluded, then Otsu's threshold on saturation (never
    below ``min_saturation``) separates tissue; small specks and holes are cleaned up.
    """
    cfg = cfg or TissueConfig()
    hsv = color.rgb2hsv(rgb[..., :3])
    sat, val = hsv[..., 1], hsv[..., 2]
    candidate = val > cfg.dark_value
    if candidate.sum() < 16:
        return np.zeros(sat.shape, dtype=bool)
    values = np.where(candidate, sat, 0.0)  # dark background counts as unsaturated
    thr = filters.threshold_otsu(values) if values.max() > values.min() else 1.0
    thr = max(float(thr), cfg.min_saturation)
    mask = candidate & (sat > thr)
    min_size = max(4, int(cfg.min_object_fraction * mask.size))
    mask = ndimage.binary_opening(mask, structure=morphology.disk(1))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    mask = morphology.remove_small_holes(mask, max_size=min_size)
    return mask


def compute_tissue_mask(slide: Slide, cfg: TissueConfig | None = None) -> TissueMask:
    """Tissue mask of a whole slide from its thumbnail; raises :class:`NoTissueError` when empty."""
    cfg = cfg or TissueConfig()
    thumb = slide.get_thumbnail(cfg.thumbnail_max_side)
    mask = tissue_mask_from_rgb(thumb, cfg)
    tm = TissueMask(mask=mask, scale=thumb.shape[1] / slide.dimensions[0])
    if tm.fraction < cfg.min_slide_fraction:
        raise NoTissueError(
            f"{slide.path}: no tissue found ({tm.fraction:.2%} of the slide looks like tissue; "
            f"expected at least {cfg.min_slide_fraction:.2%}). Is this an H&E image?"
        )
    return tm


def blur_variance(tile: np.ndarray) -> float:
    """Variance of the Laplacian of the grey-level tile (grey levels²); low means blurred."""
    grey = tile[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(ndimage.laplace(grey).var())


def tile_qc(tile: np.ndarray, tissue_fraction: float, cfg: QCConfig | None = None) -> dict[str, float | bool]:
    """QC figures of one tile: tissue fraction, blur variance and pass/fail flags."""
    cfg = cfg or QCConfig()
    blur = blur_variance(tile)
    return {
        "tissue_fraction": float(tissue_fraction),
        "blur_variance": blur,
        "is_blurred": blur < cfg.min_blur_variance,
        "has_tissue": tissue_fraction >= cfg.min_tissue_fraction,
    }
