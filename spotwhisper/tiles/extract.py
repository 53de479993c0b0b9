"""Stream tiles of a layout in batches: spot tile + sub-tiles, resampled to a fixed pixel size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..io.slide import Slide
from .layout import TileLayout
from .stain import MacenkoNormalizer
from .tissue import blur_variance


@dataclass
class TileBatch:
    """One batch: ``indices`` ``(B,)`` into the layout, ``tiles`` ``(B, P, P, 3)`` uint8,
    ``subtiles`` ``(B, g*g, P, P, 3)`` uint8 or ``None``, ``blur`` ``(B,)`` Laplacian variance."""

    indices: np.ndarray
    tiles: np.ndarray
    subtiles: np.ndarray | None
    blur: np.ndarray


#: resampling filters by name (PIL antialiases all of them when shrinking)
FILTERS = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def _resize(img: np.ndarray, px: int, resample: str = "bilinear") -> np.ndarray:
    if img.shape[0] == px and img.shape[1] == px:
        return img
    return np.asarray(Image.fromarray(img).resize((px, px), FILTERS[resample]))


def read_tile(
    slide: Slide,
    layout: TileLayout,
    i: int,
    out_px: int,
    with_subtiles: bool = True,
    normalizer: MacenkoNormalizer | None = None,
    resample: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tile ``i`` as ``(P, P, 3)`` and its sub-tiles as ``(g*g, P, P, 3)`` (or ``None``).

    The region is read once, from the coarsest pyramid level that keeps sub-tiles at ``out_px``,
    and resized with the ``resample`` filter (``"bilinear"`` or ``"lanczos"``, see :data:`FILTERS`).
    """
    g = layout.subtile_grid if with_subtiles else 1
    side = layout.side_px
    level = slide.best_level_for_downsample(side / (g * out_px))
    ds = slide.level_downsamples[level]
    n = max(g, int(round(side / ds)))
    x0, y0 = layout.centres[i] - side / 2
    region = slide.read_region((int(round(x0)), int(round(y0))), level, (n, n))
    if normalizer is not None:
        region = normalizer.transform(region)
    tile = _resize(region, out_px, resample)
    if not with_subtiles:
        return tile, None
    edges = np.linspace(0, n, g + 1).round().astype(int)
    subs = [
        _resize(np.ascontiguousarray(region[edges[r] : edges[r + 1], edges[c] : edges[c + 1]]), out_px, resample)
        for r in range(g)
        for c in range(g)
    ]
    return tile, np.stack(subs)


def iter_tile_batches(
    slide: Slide,
    layout: TileLayout,
    out_px: int,
    batch_size: int = 32,
    with_subtiles: bool = True,
    normalizer: MacenkoNormalizer | None = None,
    indices: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "tiles",
    resample: str = "bilinear",
) -> Iterator[TileBatch]:
    """Yield :class:`TileBatch` es over ``indices`` (default: every tile) of ``layout``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    order = np.arange(len(layout)) if indices is None else np.asarray(indices, dtype=np.int64)
    bar = tqdm(total=len(order), desc=desc, unit="tile", disable=not progress, leave=False)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tiles, subs, blur = [], [], []
            for i in idx:
                t, s = read_tile(slide, layout, int(i), out_px, with_subtiles, normalizer, resample)
                tiles.append(t)
                subs.append(s)
                blur.append(blur_variance(t))
            bar.update(len(idx))
            yield TileBatch(
                indices=idx,
                tiles=np.stack(tiles),
                subtiles=np.stack(subs) if with_subtiles else None,
                blur=np.asarray(blur, dtype=np.float32),
            )
    finally:
        bar.close()
