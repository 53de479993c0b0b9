"""Stream tiles of a layout in batches: spot tile + sub-tiles, resampled to a fixed pixel size."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..io.slide import Slide
from .blocks import iter_blockwise, normalized, tile_geometry
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


def cut_tile(region: np.ndarray, out_px: int, subtile_grid: int = 0, normalizer: MacenkoNormalizer | None = None,
             resample: str = "bilinear") -> tuple[np.ndarray, np.ndarray | None]:
    """A tile's ``(n, n, 3)`` region → the tile ``(P, P, 3)`` and its sub-tiles ``(g*g, P, P, 3)`` (``None``
    when ``subtile_grid`` is 0), normalised (``normalizer``) and resized with ``resample``."""
    region = normalized(region, normalizer)
    tile = _resize(region, out_px, resample)
    if not subtile_grid:
        return tile, None
    g, n = subtile_grid, region.shape[0]
    edges = np.linspace(0, n, g + 1).round().astype(int)
    subs = [
        _resize(np.ascontiguousarray(region[edges[r] : edges[r + 1], edges[c] : edges[c + 1]]), out_px, resample)
        for r in range(g)
        for c in range(g)
    ]
    return tile, np.stack(subs)


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
    level, n = tile_geometry(slide, layout, out_px, with_subtiles)
    x0, y0 = layout.centres[i] - layout.side_px / 2
    region = slide.read_region((int(round(x0)), int(round(y0))), level, (n, n))
    return cut_tile(region, out_px, layout.subtile_grid if with_subtiles else 0, normalizer, resample)


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
    block_tiles: float = 0.0,
    workers: int = 1,
) -> Iterator[TileBatch]:
    """Yield :class:`TileBatch` es over ``indices`` (default: every tile) of ``layout``.

    ``block_tiles`` > 0 reads tiles block by block (blocks that many tile sides across), each block's pixels once (overlapping tiles share
    them), and the batches follow block order (their ``indices`` say which tiles they hold); 0 reads
    tile by tile in the order of ``indices``. ``workers`` threads read and cut (see :mod:`.blocks`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    order = np.arange(len(layout)) if indices is None else np.asarray(indices, dtype=np.int64)
    g = layout.subtile_grid if with_subtiles else 0

    def cut(region: np.ndarray) -> tuple:
        tile, subs = cut_tile(region, out_px, g, normalizer, resample)
        return tile, subs, blur_variance(tile)

    bar = tqdm(total=len(order), desc=desc, unit="tile", disable=not progress, leave=False)
    items = iter_blockwise(slide, layout, out_px, cut, order, with_subtiles, block_tiles, workers)
    try:
        while True:
            chunk = list(itertools.islice(items, batch_size))
            if not chunk:
                return
            bar.update(len(chunk))
            yield TileBatch(
                indices=np.asarray([i for i, _ in chunk], dtype=np.int64),
                tiles=np.stack([c[0] for _, c in chunk]),
                subtiles=np.stack([c[1] for _, c in chunk]) if with_subtiles else None,
                blur=np.asarray([c[2] for _, c in chunk], dtype=np.float32),
            )
    finally:
        items.close()
        bar.close()
