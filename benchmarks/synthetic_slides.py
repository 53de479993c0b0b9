"""Synthetic slides built from real her2st tissue, for throughput benchmarks (not committed: written to a work folder).

* :func:`visium_slide` — a Visium-size section: a tiled, JPEG-compressed pyramidal TIFF at 0.5 µm/px whose
  tissue is a mosaic of her2st tissue cells, with a 5,000-spot hexagonal lattice at 100 µm pitch written as
  an ``.h5ad`` (spots, µm/px and the image path in ``uns["spatial"]``) that ``spotwhisper index build`` reads.
* :func:`wsi_slide` — a whole slide: a 100,000 × 100,000 px pyramidal TIFF at 0.25 µm/px with an elliptical
  tissue region (default 2 cm², which a 200 µm grid at 100 µm stride covers with ~20,000 tiles) on glass.

Tissue cells are 512 px squares cut from the her2st H&E images (C2–C6, B4) resampled to the slide's µm/px
and kept when mostly tissue; each is JPEG-encoded once and the mosaic repeats them in a scrambled order,
so writing a 30 GB-pixel slide costs I/O, not encoding. Lower pyramid levels (÷4, ÷16, ÷64) are the same
mosaic made of the cells shrunk, so every level shows the same tissue.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from spotwhisper.io import open_source_slide, read_her2st
from spotwhisper.tiles import tissue_mask_from_rgb
from spotwhisper.tiles.config import TissueConfig

CELL = 512  #: TIFF tile side and mosaic cell (px)
LEVELS = (1, 4, 16, 64)  #: pyramid downsamples
GLASS = 242  #: background grey level


def tissue_cells(data_dir: str, mpp: float, sections=("C2", "C3", "C4", "C5", "C6", "B4"), per_section: int = 60,
                 seed: int = 0) -> list[np.ndarray]:
    """Up to ``per_section`` ``(CELL, CELL, 3)`` uint8 cells of tissue (≥ 80 % tissue pixels) per section, at ``mpp``."""
    rng = np.random.default_rng(seed)
    cells = []
    for section in sections:
        adata = read_her2st(data_dir, section)
        slide, _ = open_source_slide(adata)
        thumb = slide.get_thumbnail(1024)
        f = thumb.shape[1] / slide.dimensions[0]  # thumbnail px per slide px
        mask = tissue_mask_from_rgb(thumb, TissueConfig())
        s = int(round(CELL * mpp / slide.mpp))  # a cell's side in the section's own pixels
        ts = max(1, int(round(s * f)))
        ys, xs = np.arange(0, mask.shape[0] - ts, max(1, ts // 2)), np.arange(0, mask.shape[1] - ts, max(1, ts // 2))
        found = [(y, x) for y in ys for x in xs if mask[y : y + ts, x : x + ts].mean() >= 0.8]
        for k in rng.permutation(len(found))[:per_section]:
            y, x = found[k]
            region = slide.read_region((int(x / f), int(y / f)), 0, (s, s))
            cells.append(np.asarray(Image.fromarray(region).resize((CELL, CELL), Image.BILINEAR)))
    if not cells:
        raise RuntimeError("no tissue cells found in the her2st images")
    return cells


def _cell_index(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    return (i * 7919 + j * 104729 + (i * j) % 13) % n  # a scrambled but fixed choice of cell per grid position


def write_mosaic(path: Path, side: int, mpp: float, cells: list[np.ndarray], tissue: np.ndarray) -> Path:
    """A pyramidal TIFF of ``side``² px: grid cell ``(i, j)`` of level 0 holds ``cells[...]`` where ``tissue[i, j]``
    (a boolean ``(side/CELL, side/CELL)`` grid), glass elsewhere; levels of :data:`LEVELS`."""
    n = -(-side // CELL)
    glass = np.full((CELL, CELL, 3), GLASS, np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for lv, ds in enumerate(LEVELS):
            small = [np.asarray(Image.fromarray(c).resize((CELL // ds, CELL // ds), Image.BOX)) for c in cells]
            encoded = [imagecodecs.jpeg8_encode(c, level=85) for c in cells] if ds == 1 else None
            glass_jpeg = imagecodecs.jpeg8_encode(glass, level=85)
            lside = -(-side // ds)
            m = -(-lside // CELL)

            def tiles(ds=ds, m=m, small=small, encoded=encoded, glass_jpeg=glass_jpeg) -> Iterator[bytes]:
                for ty in range(m):
                    for tx in range(m):
                        i0, j0 = ty * ds, tx * ds  # level-0 cells under this level's tile
                        ii, jj = np.mgrid[i0 : min(i0 + ds, n), j0 : min(j0 + ds, n)]
                        on = tissue[ii, jj]
                        if not on.any():
                            yield glass_jpeg
                        elif ds == 1:
                            yield encoded[int(_cell_index(ii, jj, len(cells))[0, 0])]
                        else:
                            out = np.full((CELL, CELL, 3), GLASS, np.uint8)
                            k = CELL // ds
                            idx = _cell_index(ii, jj, len(cells))
                            for a in range(ii.shape[0]):
                                for b in range(ii.shape[1]):
                                    if on[a, b]:
                                        out[a * k : (a + 1) * k, b * k : (b + 1) * k] = small[idx[a, b]]
                            yield imagecodecs.jpeg8_encode(out, level=85)

            tw.write(tiles(), shape=(lside, lside, 3), dtype="uint8", tile=(CELL, CELL), compression="jpeg",
                     photometric="rgb", subfiletype=1 if lv else 0, resolution=(1e4 / (mpp * ds),) * 2,
                     resolutionunit="CENTIMETER")
    return path


def hex_lattice(n_spots: int, pitch_px: float, margin_px: float) -> np.ndarray:
    """About ``n_spots`` centres ``(n, 2)`` (x, y px) of a square-ish hexagonal lattice (Visium) from ``margin_px``."""
    cols = int(np.ceil(np.sqrt(n_spots * np.sqrt(3) / 2)))
    rows = int(np.ceil(n_spots / cols))
    centres = [(margin_px + c * pitch_px + (r % 2) * pitch_px / 2, margin_px + r * pitch_px * np.sqrt(3) / 2)
               for r in range(rows) for c in range(cols)]
    return np.asarray(centres[:n_spots])


def visium_slide(folder: Path, data_dir: str, n_spots: int = 5000, mpp: float = 0.5, name: str = "visium5k") -> Path:
    """The Visium-size slide (see the module docstring) → the ``.h5ad`` to pass to ``index build``."""
    from spotwhisper.io import write_h5ad
    from spotwhisper.io.inputs import load_spot_table

    pitch, margin = 100.0 / mpp, 300.0 / mpp
    centres = hex_lattice(n_spots, pitch, margin)
    side = int(centres.max() + margin)
    n = -(-side // CELL)
    tif = write_mosaic(folder / f"{name}.tif", side, mpp, tissue_cells(data_dir, mpp), np.ones((n, n), bool))
    csv = folder / f"{name}_spots.csv"
    np.savetxt(csv, np.column_stack([np.arange(len(centres)), centres]), delimiter=",", header="barcode,x,y",
               comments="", fmt=["%d", "%.1f", "%.1f"])
    inp = load_spot_table(csv, tif, name=name, mpp=mpp)
    return write_h5ad(inp.adata, folder / f"{name}.h5ad")


def wsi_slide(folder: Path, data_dir: str, side: int = 100_000, mpp: float = 0.25, tissue_cm2: float = 2.0,
              name: str = "wsi") -> Path:
    """The whole slide (see the module docstring) → its TIFF path."""
    n = -(-side // CELL)
    cell_um = CELL * mpp
    # an ellipse (axes 3:2) of tissue_cm2, centred
    area_cells = tissue_cm2 * 1e8 / cell_um**2
    a = np.sqrt(area_cells * 1.5 / np.pi)
    b = a / 1.5
    ii, jj = np.mgrid[:n, :n]
    tissue = ((jj + 0.5 - n / 2) / a) ** 2 + ((ii + 0.5 - n / 2) / b) ** 2 <= 1
    return write_mosaic(folder / f"{name}.tif", side, mpp, tissue_cells(data_dir, mpp), tissue)
