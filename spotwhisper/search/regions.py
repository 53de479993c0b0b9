"""Regions: connected areas of high score on a slide, with area, score and outline.

Spots above a threshold are joined when their centres are within ``link`` spot spacings
(ST and Visium neighbours); each connected group is a region. Outlines are traced on a raster
where every spot paints its tile, so they follow the tissue the spots cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage import measure


@dataclass
class Region:
    """One connected high-score area. Coordinates in slide (level-0) pixels.

    ``polygons`` (closed outlines, each ``(m, 2)`` as (x, y)) are traced on first use — drawing and
    export need them, counting and ranking do not."""

    id: int
    spots: np.ndarray  #: indices of the spots in the region
    mean_score: float
    max_score: float
    area_um2: float
    centroid: tuple[float, float]
    outline_from: tuple[np.ndarray, float] | None = field(default=None, repr=False)  #: (spot centres, tile px)
    _polygons: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_spots(self) -> int:
        return int(len(self.spots))

    @property
    def polygons(self) -> list[np.ndarray]:
        if self._polygons is None:
            self._polygons = outline_spots(*self.outline_from) if self.outline_from is not None else []
        return self._polygons


def find_regions(
    coords: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    spacing_px: float,
    tile_px: float,
    mpp: float,
    link: float = 1.5,
    min_spots: int = 1,
    outline: bool = True,
) -> list[Region]:
    """Connected components of spots with ``scores >= threshold``, strongest region first.

    ``coords`` ``(n, 2)`` spot centres and ``spacing_px``/``tile_px`` in slide pixels; area is the
    tile area of the region's spots (µm², via ``mpp`` µm/px).
    """
    coords = np.asarray(coords, dtype=float)
    scores = np.asarray(scores, dtype=float)
    hot = np.flatnonzero(np.isfinite(scores) & (scores >= threshold))
    if len(hot) == 0:
        return []
    pairs = cKDTree(coords[hot]).query_pairs(link * spacing_px, output_type="ndarray")
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(hot), len(hot))) if len(pairs) else sparse.coo_matrix((len(hot), len(hot)))
    n_comp, labels = connected_components(adj, directed=False)
    regions = []
    for c in range(n_comp):
        idx = hot[labels == c]
        if len(idx) < min_spots:
            continue
        s = scores[idx]
        w = s - s.min() + 1e-9
        centroid = tuple((coords[idx] * w[:, None]).sum(0) / w.sum())
        regions.append(Region(-1, idx, float(s.mean()), float(s.max()), float(len(idx) * (tile_px * mpp) ** 2), centroid,
                              (coords[idx], tile_px) if outline else None))
    regions.sort(key=lambda r: (-r.mean_score * np.sqrt(r.n_spots)))
    for i, r in enumerate(regions):
        r.id = i + 1
    return regions


def outline_spots(coords: np.ndarray, tile_px: float, cells_per_tile: int = 4) -> list[np.ndarray]:
    """Outlines (slide px) of the union of the spots' square tiles, traced with marching squares."""
    cell = tile_px / cells_per_tile
    lo = coords.min(0) - tile_px
    hi = coords.max(0) + tile_px
    shape = (int(np.ceil((hi[1] - lo[1]) / cell)) + 1, int(np.ceil((hi[0] - lo[0]) / cell)) + 1)
    raster = np.zeros(shape, dtype=np.uint8)
    half = cells_per_tile / 2
    for x, y in (coords - lo) / cell:
        raster[int(round(y - half)) : int(round(y + half)), int(round(x - half)) : int(round(x + half))] = 1
    # grow by one cell so tiles that only touch at a corner (diagonal neighbours) share one outline
    padded = ndimage.binary_dilation(np.pad(raster, 2), iterations=1).astype(np.uint8)
    contours = measure.find_contours(padded.astype(float), 0.5)
    return [np.stack([(c[:, 1] - 2) * cell + lo[0], (c[:, 0] - 2) * cell + lo[1]], axis=1) for c in contours]


def regions_table(regions: list[Region]) -> list[dict]:
    """Plain rows (id, n_spots, area, scores, centroid) for printing or JSON."""
    return [
        {
            "region": r.id,
            "spots": r.n_spots,
            "area_mm2": round(r.area_um2 / 1e6, 4),
            "mean_score": round(r.mean_score, 3),
            "max_score": round(r.max_score, 3),
            "centroid_x": round(r.centroid[0], 1),
            "centroid_y": round(r.centroid[1], 1),
        }
        for r in regions
    ]
