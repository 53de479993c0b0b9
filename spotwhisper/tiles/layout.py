"""Where tiles go: spot-centred (DeepSpot layout) or a regular grid over tissue.

A :class:`TileLayout` holds, in slide (level-0) pixels, the centre and side of every tile and
the indices of each tile's neighbours, so later stages can gather "spot + sub-tiles + ring".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from .. import keys
from ..io.slide import Slide
from ..io.spatial import estimate_spacing_px, spatial_info
from .config import GridTileConfig, SpotTileConfig
from .tissue import NoTissueError, TissueMask

log = logging.getLogger(__name__)


@dataclass
class TileLayout:
    """Tiles of one slide.

    ``centres`` ``(n, 2)`` slide px (x, y); ``side_px`` tile side in slide px; ``neighbours``
    ``(n, k)`` tile indices (``-1`` = none); ``mpp`` µm per slide pixel; ``kind`` ``"spot"`` or
    ``"grid"``; ``subtile_grid`` sub-tiles per side; ``tissue_fraction`` ``(n,)`` when known.
    """

    centres: np.ndarray
    side_px: float
    neighbours: np.ndarray
    mpp: float
    kind: str
    subtile_grid: int = 3
    tissue_fraction: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def side_um(self) -> float:
        return self.side_px * self.mpp

    @property
    def boxes(self) -> np.ndarray:
        """Tile boxes ``(n, 4)`` as ``(x0, y0, x1, y1)`` slide pixels."""
        half = self.side_px / 2
        return np.hstack([self.centres - half, self.centres + half])

    def subtile_boxes(self, i: int) -> np.ndarray:
        """The ``g × g`` sub-tile boxes of tile ``i``, row-major, ``(g*g, 4)``."""
        g = self.subtile_grid
        x0, y0 = self.centres[i] - self.side_px / 2
        step = self.side_px / g
        out = [(x0 + c * step, y0 + r * step, x0 + (c + 1) * step, y0 + (r + 1) * step) for r in range(g) for c in range(g)]
        return np.asarray(out)


#: nearest spots looked at per spot when the ring skips close ones (a 100 µm lattice has 18 spots within 1.75 pitches)
RING_CANDIDATES = 48


def _ring(centres: np.ndarray, k: int, radius_px: float, min_px: float = 0.0) -> np.ndarray:
    """Indices ``(n, k)`` of up to ``k`` nearest other tiles at a distance in ``[min_px, radius_px]``; ``-1`` pads.

    ``min_px`` skips spots closer than the ring a model was trained with (a Visium lattice read
    with the tiles of a 200 µm ST array: its 100 µm neighbours overlap the spot's own tile)."""
    if k <= 0 or len(centres) < 2:
        return np.full((len(centres), max(k, 0)), -1, dtype=np.int64)
    kk = min((RING_CANDIDATES if min_px > 0 else k) + 1, len(centres))
    dist, idx = cKDTree(centres).query(centres, k=kk, distance_upper_bound=radius_px)
    dist, idx = dist[:, 1:], idx[:, 1:]
    ok = np.isfinite(dist) & (dist >= min_px)
    order = np.argsort(~ok, axis=1, kind="stable")  # kept candidates first, nearest first
    idx = np.where(np.take_along_axis(ok, order, 1), np.take_along_axis(idx, order, 1), -1)[:, :k]
    if idx.shape[1] < k:
        idx = np.hstack([idx, np.full((len(idx), k - idx.shape[1]), -1)])
    return idx.astype(np.int64)


def spot_layout(
    adata: ad.AnnData,
    slide: Slide,
    scale: float = 1.0,
    cfg: SpotTileConfig | None = None,
    library_id: str | None = None,
) -> TileLayout:
    """Spot-centred tiles for the spots of ``adata`` on ``slide``.

    ``scale`` maps ``obsm["spatial"]`` to slide pixels (see ``io.open_source_slide``). The tile
    side is ``cfg.tile_um`` µm, or the spot centre spacing when that is ``None``; the ring holds
    the ``cfg.neighbours`` nearest spots between ``neighbour_min`` and ``neighbour_radius`` ring
    pitches away (``cfg.ring_pitch_um``, or the spot spacing). A model's own geometry
    (:func:`model_tile_config`) makes every slide's tiles and ring the size it was trained on,
    whatever the slide's spot pitch (ST 200 µm, Visium 100 µm, a spot table, bins).
    """
    cfg = cfg or SpotTileConfig()
    if slide.mpp is None:
        raise ValueError(f"{slide.path}: microns per pixel unknown; give it (--mpp) so tiles can be sized in µm")
    if keys.SPATIAL not in adata.obsm:
        raise KeyError("AnnData has no obsm['spatial'] spot coordinates")
    centres = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale
    w, h = slide.dimensions
    outside = (centres[:, 0] < 0) | (centres[:, 1] < 0) | (centres[:, 0] >= w) | (centres[:, 1] >= h)
    if outside.all():
        raise ValueError(f"{slide.path}: no spot falls on the {w}×{h} image; do the coordinates belong to it?")
    if outside.any():
        log.warning("%d of %d spots lie outside the %d×%d image", outside.sum(), len(centres), w, h)
    spacing = None
    if len(adata.uns.get(keys.SPATIAL, {})) >= 1:
        try:
            _, info = spatial_info(adata, library_id)
            spacing = info.get("scalefactors", {}).get(keys.SPOT_SPACING)
        except (KeyError, ValueError):
            spacing = None
    spacing_px = float(spacing) * scale if spacing else estimate_spacing_px(centres)
    side_px = cfg.tile_um / slide.mpp if cfg.tile_um else spacing_px
    pitch_px = cfg.ring_pitch_um / slide.mpp if cfg.ring_pitch_um else spacing_px
    neighbours = _ring(centres, cfg.neighbours, cfg.neighbour_radius * pitch_px, cfg.neighbour_min * pitch_px)
    return TileLayout(centres, side_px, neighbours, slide.mpp, "spot", cfg.subtile_grid)


def grid_layout(
    slide: Slide,
    tissue: TissueMask,
    cfg: GridTileConfig | None = None,
    min_tissue_fraction: float = 0.25,
    subtile_grid: int = 3,
) -> TileLayout:
    """A regular grid of ``cfg.tile_um`` tiles over the slide, keeping tiles with enough tissue.

    Neighbours are the (up to 8) adjacent grid cells that were kept.
    """
    cfg = cfg or GridTileConfig()
    if slide.mpp is None:
        raise ValueError(f"{slide.path}: microns per pixel unknown; give it (--mpp) so tiles can be sized in µm")
    if not 0 <= cfg.overlap < 0.9:
        raise ValueError(f"grid overlap must be in [0, 0.9), got {cfg.overlap}")
    side = cfg.tile_um / slide.mpp
    stride = side * (1 - cfg.overlap)
    w, h = slide.dimensions
    nx, ny = max(1, int(np.ceil((w - side) / stride)) + 1), max(1, int(np.ceil((h - side) / stride)) + 1)
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    cells = np.stack([gx.ravel(), gy.ravel()], axis=1)
    centres = cells * stride + side / 2
    half = side / 2
    frac = tissue.box_fraction(np.hstack([centres - half, centres + half]))
    keep = frac >= min_tissue_fraction
    if not keep.any():
        raise NoTissueError(f"{slide.path}: no {cfg.tile_um:g} µm grid tile holds ≥{min_tissue_fraction:.0%} tissue")
    cells, centres, frac = cells[keep], centres[keep], frac[keep]
    lookup = {tuple(c): i for i, c in enumerate(cells.tolist())}
    offsets = [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)]
    neighbours = np.array(
        [[lookup.get((cx + dx, cy + dy), -1) for dx, dy in offsets] for cx, cy in cells.tolist()], dtype=np.int64
    ).reshape(len(cells), len(offsets))
    return TileLayout(centres, side, neighbours, slide.mpp, "grid", subtile_grid, frac)
