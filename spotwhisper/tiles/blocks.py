"""Reading tiles: each region read once where tiles overlap, and in worker threads.

A Visium spot tile read with the 200 µm geometry of the models overlaps its neighbours (100 µm pitch):
read one by one, every pixel of a pyramidal TIFF is decoded about four times. :func:`iter_blockwise`
groups the tiles into blocks ``block_tiles`` tile sides across (in pixels of the pyramid level they are
read from), reads each block's bounding box once and cuts the tiles out of it — the same pixels as
:func:`~spotwhisper.tiles.extract.read_tile` would read (tested). Blocks are read and cut in
``workers`` threads (TIFF decoding, resizing and the blur measure release the GIL), and come in
block order, so :class:`TileBatch` es carry their layout ``indices``.

:func:`prefetched` runs any iterator one item ahead in a background thread, so tiles are read while
the model encodes the previous batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..io.slide import Slide
from .layout import TileLayout
from .stain import MacenkoNormalizer

#: a block is read as one region only when its bounding box holds at most this many times the tiles' pixels
MAX_BLOCK_WASTE = 2.0


def tile_geometry(slide: Slide, layout: TileLayout, out_px: int, with_subtiles: bool) -> tuple[int, int]:
    """``(level, n)``: the coarsest pyramid level that keeps sub-tiles (or the tile) at ``out_px``, and the
    tile's side in pixels of that level."""
    g = layout.subtile_grid if with_subtiles else 1
    level = slide.best_level_for_downsample(layout.side_px / (g * out_px))
    return level, max(g, int(round(layout.side_px / slide.level_downsamples[level])))


def tile_origins(slide: Slide, layout: TileLayout, level: int) -> np.ndarray:
    """Top-left corners ``(n, 2)`` of every tile in ``level`` pixels, as ``Slide.read_region`` rounds them."""
    x0y0 = np.round(layout.centres - layout.side_px / 2)
    return np.round(x0y0 / slide.level_downsamples[level]).astype(np.int64)


def block_groups(origins: np.ndarray, indices: np.ndarray, n: int, block_tiles: float) -> list[np.ndarray]:
    """``indices`` grouped by the cell of ``block_tiles × n`` pixels their origin lies in, cells in raster order
    (``block_tiles`` ≤ 0: one tile a group, in the order given); a group whose bounding box would hold more than
    :data:`MAX_BLOCK_WASTE` × its tiles' pixels is split into single tiles."""
    if block_tiles <= 0 or len(indices) == 0:
        return [np.asarray([i]) for i in indices]
    cells = origins[indices] // max(1, int(round(block_tiles * n)))
    order = np.lexsort((cells[:, 0], cells[:, 1]))
    keys = cells[order]
    breaks = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
    groups = []
    for part in np.split(np.asarray(indices)[order], breaks):
        o = origins[part]
        box = (np.ptp(o[:, 0]) + n) * (np.ptp(o[:, 1]) + n)
        groups.extend([part] if box <= MAX_BLOCK_WASTE * len(part) * n * n else [np.asarray([i]) for i in part])
    return groups


def read_group(slide: Slide, level: int, n: int, origins: np.ndarray, group: np.ndarray) -> list[np.ndarray]:
    """The ``(n, n, 3)`` regions of the tiles in ``group``, cut from one read of their bounding box."""
    o = origins[group]
    bx, by = o.min(axis=0)
    w, h = o[:, 0].max() - bx + n, o[:, 1].max() - by + n
    ds = slide.level_downsamples[level]
    block = slide.read_region((bx * ds, by * ds), level, (int(w), int(h)))
    return [block[y - by : y - by + n, x - bx : x - bx + n] for x, y in o]


def iter_blockwise(
    slide: Slide,
    layout: TileLayout,
    out_px: int,
    cut: Any,
    indices: np.ndarray,
    with_subtiles: bool,
    block_tiles: float,
    workers: int = 1,
) -> Iterator[tuple[int, Any]]:
    """``(index, cut(region))`` for every tile of ``indices``, block by block (see the module docstring);
    ``cut`` turns a tile's ``(n, n, 3)`` region into what the caller keeps (run in the worker threads)."""
    level, n = tile_geometry(slide, layout, out_px, with_subtiles)
    origins = tile_origins(slide, layout, level)
    groups = block_groups(origins, np.asarray(indices, dtype=np.int64), n, block_tiles)

    def work(group: np.ndarray) -> list[tuple[int, Any]]:
        return [(int(i), cut(r)) for i, r in zip(group, read_group(slide, level, n, origins, group))]

    if workers <= 1:
        for group in groups:
            yield from work(group)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tile-read") as pool:
        pending: list = []
        for group in groups:
            pending.append(pool.submit(work, group))
            if len(pending) > workers:  # bounded look-ahead: memory stays a few blocks
                yield from pending.pop(0).result()
        for fut in pending:
            yield from fut.result()


_END = object()


def prefetched(items: Iterator[Any], enabled: bool = True) -> Iterator[Any]:
    """Yield from ``items``, producing the next item in a background thread when ``enabled``; an
    exception raised while producing is raised in the consumer."""
    if not enabled:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            put(err)

    thread = threading.Thread(target=work, name="tile-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def normalized(region: np.ndarray, normalizer: MacenkoNormalizer | None) -> np.ndarray:
    """``region`` through ``normalizer`` (per pixel, so the same on a tile or on the block it came from)."""
    return region if normalizer is None else normalizer.transform(region)
