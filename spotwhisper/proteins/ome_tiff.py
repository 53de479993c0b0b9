"""Export the virtual protein panel as an OME-TIFF with one named channel per marker.

Two grids (``configs/proteins.yaml`` ``export.grid``):

* ``image`` (default, :func:`export_ome_tiff_on_image`) — the H&E's own pixel grid, downsampled by
  a power of two (``max_side``): a pyramidal, tiled OME-TIFF ``(C, Y, X)`` float32 whose pixel
  ``(x, y)`` covers H&E pixels ``x·d … (x+1)·d``, with ``PhysicalSizeX/Y`` = H&E µm/px × ``d``.
  Each spot's value fills its footprint (its tile, side = spot spacing, or its disk); pixels
  outside every spot hold ``fill_value`` (NaN). Opened with the H&E in napari
  (``scale=(PhysicalSizeY, PhysicalSizeX)`` for both) or QuPath, the markers lie on the tissue.
* ``spots`` (:func:`export_ome_tiff`) — one pixel per spot, ``PhysicalSizeX/Y`` = spot spacing in µm.
  Spots go on the grid by their integer array coordinates when the AnnData has them (ST; flipped or
  transposed to the orientation of the slide image), otherwise by rasterising the pixel positions
  with one pixel per spot spacing (hexagonal Visium rows become half-pixel offset rows).

Channel names are in the OME-XML ``Channel Name`` attributes either way.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from .. import keys
from ..atomic import atomic_file
from ..io.spatial import estimate_spacing_px, library_ids, spot_spacing
from .config import ExportConfig

log = logging.getLogger(__name__)

#: neighbours whose vertical offset is below this fraction of the spacing count as the same row
_SAME_ROW = 0.25


@dataclass
class SpotGrid:
    """Where each spot sits on the export grid: ``rows``/``cols`` ``(n,)``, grid ``shape`` (Y, X),
    ``pixel_size_um`` (x, y) or ``None`` when unknown, and ``kind`` (``"array"`` or ``"raster"``)."""

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]
    pixel_size_um: tuple[float, float] | None
    kind: str


def _scalefactor(adata: ad.AnnData, key: str) -> float | None:
    """A scale factor of the AnnData's only library (``None`` with zero or several libraries)."""
    libs = library_ids(adata)
    if len(libs) != 1:
        return None
    return adata.uns[keys.SPATIAL][libs[0]].get("scalefactors", {}).get(key)


def _pixel_size(steps_px: tuple[float, float], adata: ad.AnnData) -> tuple[float, float] | None:
    mpp = _scalefactor(adata, keys.MPP)
    return (float(steps_px[0] * mpp), float(steps_px[1] * mpp)) if mpp else None


def _array_grid(adata: ad.AnnData) -> SpotGrid | None:
    """Grid from integer array coordinates, oriented like the image; ``None`` when unusable."""
    if keys.ARRAY_X not in adata.obs or keys.ARRAY_Y not in adata.obs:
        return None
    ax = adata.obs[keys.ARRAY_X].to_numpy(dtype=float)
    ay = adata.obs[keys.ARRAY_Y].to_numpy(dtype=float)
    if not (np.isfinite(ax).all() and np.isfinite(ay).all()) or len(set(zip(ax.tolist(), ay.tolist()))) != len(ax):
        return None
    steps = [np.diff(np.unique(v)) for v in (ax, ay)]
    if any(len(s) and np.median(s) != 1 for s in steps):
        return None  # hexagonal arrays (Visium rows/cols) skip every other index: rasterise instead
    size = None
    if keys.SPATIAL in adata.obsm:
        xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
        if np.std(ax) > 0 and np.std(ay) > 0:
            c = np.corrcoef(np.vstack([ax, ay, xy[:, 0], xy[:, 1]]))
            if abs(c[0, 3]) > abs(c[0, 2]):  # array x runs along image y: transpose
                ax, ay = ay, ax
        # pixel pitch per array step along each axis (slope of pixel position on array index)
        slope = [np.polyfit(a, xy[:, k], 1)[0] if np.std(a) > 0 else np.nan for k, a in enumerate((ax, ay))]
        signs = [np.sign(v) if np.isfinite(v) and v != 0 else 1.0 for v in slope]
        ax, ay = ax * signs[0], ay * signs[1]
        spacing = _scalefactor(adata, keys.SPOT_SPACING)
        pitch = [abs(v) for v in slope if np.isfinite(v)] or ([spacing] if spacing else [])
        if pitch:
            size = _pixel_size((pitch[0], pitch[-1]), adata)
    cols = (ax - ax.min()).astype(int)
    rows = (ay - ay.min()).astype(int)
    return SpotGrid(rows, cols, (int(rows.max()) + 1, int(cols.max()) + 1), size, "array")


def _raster_grid(adata: ad.AnnData) -> SpotGrid:
    """Grid from pixel positions: one pixel per lattice step (column step along rows, row step)."""
    if keys.SPATIAL not in adata.obsm:
        raise KeyError(f"AnnData has neither obs[{keys.ARRAY_X!r}/{keys.ARRAY_Y!r}] nor obsm[{keys.SPATIAL!r}]")
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    if len(xy) < 2:
        return SpotGrid(np.zeros(len(xy), int), np.zeros(len(xy), int), (1, 1), None, "raster")
    spacing = estimate_spacing_px(xy)
    _, idx = cKDTree(xy).query(xy, k=min(7, len(xy)))
    d = (xy[idx[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    d = np.abs(d[np.hypot(d[:, 0], d[:, 1]) < 1.5 * spacing])
    same_row = d[:, 1] < _SAME_ROW * spacing
    step_x = float(np.median(d[same_row, 0])) if same_row.any() else spacing
    step_y = float(np.median(d[~same_row, 1])) if (~same_row).any() else step_x
    hexagonal = step_y < 0.95 * step_x
    fx = (xy[:, 0] - xy[:, 0].min()) / step_x
    cols = np.floor(fx + 0.25).astype(int) if hexagonal else np.round(fx).astype(int)
    rows = np.round((xy[:, 1] - xy[:, 1].min()) / step_y).astype(int)
    return SpotGrid(
        rows, cols, (int(rows.max()) + 1, int(cols.max()) + 1), _pixel_size((step_x, step_y), adata), "raster"
    )


def spot_grid(adata: ad.AnnData) -> SpotGrid:
    """Grid position of every spot (array coordinates when usable, else rasterised pixel positions)."""
    if adata.n_obs == 0:
        raise ValueError("AnnData has no spots")
    return _array_grid(adata) or _raster_grid(adata)


def rasterize(values: np.ndarray, grid: SpotGrid, fill_value: float = np.nan) -> np.ndarray:
    """Per-spot values ``(n, C)`` → image ``(C, Y, X)`` float32; spots sharing a pixel are averaged."""
    values = np.asarray(values, dtype=np.float64)
    n, c = values.shape
    flat = grid.rows * grid.shape[1] + grid.cols
    npx = grid.shape[0] * grid.shape[1]
    counts = np.bincount(flat, minlength=npx)
    if (counts > 1).any():
        log.warning("export: %d pixels hold more than one spot; their values are averaged", int((counts > 1).sum()))
    out = np.full((c, npx), fill_value, dtype=np.float64)
    hit = counts > 0
    for j in range(c):
        v = values[:, j]
        ok = np.isfinite(v)
        sums = np.bincount(flat[ok], weights=v[ok], minlength=npx)
        num = np.bincount(flat[ok], minlength=npx)
        col = np.full(npx, fill_value, dtype=np.float64)
        col[num > 0] = sums[num > 0] / num[num > 0]
        out[j, hit] = col[hit]
    return out.reshape(c, *grid.shape).astype(np.float32)


def write_ome_tiff(
    path: str | Path,
    image: np.ndarray,
    channel_names: list[str],
    pixel_size_um: tuple[float, float] | None = None,
    compression: str | None = "zlib",
) -> Path:
    """Write ``image`` ``(C, Y, X)`` as OME-TIFF with named channels, atomically (temp file + rename)."""
    import tifffile

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != len(channel_names):
        raise ValueError(f"image must be (C, Y, X) with C = {len(channel_names)} channel names, got {image.shape}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, object] = {"axes": "CYX", "Channel": {"Name": list(channel_names)}}
    if pixel_size_um is not None:
        metadata.update(
            PhysicalSizeX=float(pixel_size_um[0]),
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=float(pixel_size_um[1]),
            PhysicalSizeYUnit="µm",
        )
    with atomic_file(p, suffix=".part.ome.tif") as tmp:
        tifffile.imwrite(tmp, image, ome=True, photometric="minisblack", metadata=metadata, compression=compression)
    return p


def read_ome_tiff(path: str | Path) -> tuple[np.ndarray, list[str], tuple[float, float] | None]:
    """Read an OME-TIFF written by :func:`write_ome_tiff` → ``(image (C, Y, X), channel names, (µm x, µm y))``."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        if not tf.ome_metadata:
            raise ValueError(f"{path}: not an OME-TIFF (no OME-XML metadata)")
        image = tf.asarray()
        root = ET.fromstring(tf.ome_metadata)
    ns = {"ome": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    pixels = root.find(".//ome:Pixels", ns) if ns else root.find(".//Pixels")
    if pixels is None:
        raise ValueError(f"{path}: OME-XML has no Pixels element")
    channels = pixels.findall("ome:Channel", ns) if ns else pixels.findall("Channel")
    names = [ch.get("Name", "") for ch in channels]
    sx, sy = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
    size = (float(sx), float(sy)) if sx and sy else None
    if image.ndim == 2:
        image = image[None]
    return image, names, size


def _check_panel(adata: ad.AnnData) -> None:
    if keys.PROTEINS not in adata.obsm or keys.PROTEIN_MARKERS not in adata.uns:
        raise KeyError(f"no obsm[{keys.PROTEINS!r}] / uns[{keys.PROTEIN_MARKERS!r}]: run a protein route first")
    if keys.SECTION in adata.obs and adata.obs[keys.SECTION].nunique() > 1:
        sections = sorted(adata.obs[keys.SECTION].astype(str).unique())
        raise ValueError(f"AnnData holds {len(sections)} sections {sections[:5]}; export one at a time")


def export_ome_tiff(adata: ad.AnnData, path: str | Path, cfg: ExportConfig | None = None) -> Path:
    """Write ``adata``'s panel (``obsm["proteins"]``, names from ``uns["protein_markers"]``) at the spot grid.

    ``adata`` must hold one slide (subset a collection by ``obs["section"]`` first).
    """
    cfg = cfg or ExportConfig()
    _check_panel(adata)
    grid = spot_grid(adata)
    if grid.pixel_size_um is None:
        log.warning("export: µm per pixel unknown; the OME-TIFF carries no physical pixel size")
    image = rasterize(np.asarray(adata.obsm[keys.PROTEINS]), grid, cfg.fill_value)
    names = [str(m) for m in adata.uns[keys.PROTEIN_MARKERS]]
    return write_ome_tiff(path, image, names, grid.pixel_size_um, cfg.compression)


# -- on the H&E pixel grid ---------------------------------------------------------------------
@dataclass
class ImageGrid:
    """Spots painted on the H&E grid: ``labels`` ``(Y, X)`` int32 = spot index (-1 outside every spot),
    ``downsample`` (H&E px per grid px), ``pixel_size_um`` (x, y) and the H&E size ``(W, H)`` in px."""

    labels: np.ndarray
    downsample: int
    pixel_size_um: tuple[float, float] | None
    image_size: tuple[int, int]


def image_grid(adata: ad.AnnData, cfg: ExportConfig | None = None) -> ImageGrid:
    """Paint every spot's footprint on the H&E pixel grid of ``adata``'s only library, downsampled
    by the smallest power of two that brings the longer side to ``cfg.max_side`` px or less.
    ``ValueError`` when the AnnData does not say how large its H&E image is."""
    cfg = cfg or ExportConfig()
    libs = library_ids(adata)
    if len(libs) != 1:
        raise ValueError(f"the image grid needs exactly one library in uns['spatial'], found {len(libs)}")
    info = adata.uns[keys.SPATIAL][libs[0]]
    meta, sf = info.get("metadata", {}), info.get("scalefactors", {})
    if "source_image_width" not in meta:
        raise ValueError("the AnnData does not record its H&E image size (uns['spatial'][lib]['metadata']); "
                         "export at the spot grid instead (export.grid: spots)")
    width, height = int(meta["source_image_width"]), int(meta["source_image_height"])
    scale = float(meta.get(keys.SOURCE_IMAGE_SCALE, 1.0))
    d = 1
    while max(width, height) / d > cfg.max_side:
        d *= 2
    shape = (int(np.ceil(height / d)), int(np.ceil(width / d)))
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale / d
    diameter = sf.get(keys.SPOT_DIAMETER)
    disk = cfg.footprint == "spot" and diameter
    side = (float(diameter) if disk else spot_spacing(adata)) * scale / d
    labels = np.full(shape, -1, dtype=np.int32)
    r = side / 2
    for i, (x, y) in enumerate(xy):
        x0, x1 = int(np.floor(x - r + 0.5)), int(np.floor(x + r + 0.5))
        y0, y1 = int(np.floor(y - r + 0.5)), int(np.floor(y + r + 0.5))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)  # at least the pixel under the centre
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        if disk:
            yy, xx = np.mgrid[cy0:cy1, cx0:cx1]
            inside = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
            labels[cy0:cy1, cx0:cx1][inside | (r < 1)] = i
        else:
            labels[cy0:cy1, cx0:cx1] = i
    mpp = sf.get(keys.MPP)
    size = (float(mpp) / scale * d, float(mpp) / scale * d) if mpp else None
    return ImageGrid(labels, d, size, (width, height))


def _plane_tiles(values: np.ndarray, labels: np.ndarray, fill: float, tile: int):
    """Tiles of every channel plane (channel by channel, row-major), as tifffile writes them."""
    outside = labels < 0
    safe = np.where(outside, 0, labels)
    for c in range(values.shape[1]):
        plane = values[:, c][safe].astype(np.float32)
        plane[outside] = fill
        for y in range(0, plane.shape[0], tile):
            for x in range(0, plane.shape[1], tile):
                yield plane[y:y + tile, x:x + tile]


def write_ome_pyramid(path: str | Path, values: np.ndarray, labels: np.ndarray, channel_names: list[str],
                      pixel_size_um: tuple[float, float] | None, cfg: ExportConfig | None = None) -> Path:
    """Write ``values`` ``(n, C)`` painted by ``labels`` ``(Y, X)`` (spot index, -1 = none) as a tiled,
    pyramidal OME-TIFF ``(C, Y, X)`` float32 (sub-resolutions in SubIFDs, each half the previous,
    nearest-neighbour so every pixel keeps a spot's exact value), atomically. One plane is in
    memory at a time."""
    import tifffile

    cfg = cfg or ExportConfig()
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] != len(channel_names):
        raise ValueError(f"{values.shape[1]} channels but {len(channel_names)} channel names")
    levels = [labels]
    while max(levels[-1].shape) >= 2 * cfg.min_level_px:
        levels.append(levels[-1][::2, ::2])
    meta: dict[str, object] = {"axes": "CYX", "Channel": {"Name": list(channel_names)}}
    if pixel_size_um is not None:
        meta.update(PhysicalSizeX=float(pixel_size_um[0]), PhysicalSizeXUnit="µm",
                    PhysicalSizeY=float(pixel_size_um[1]), PhysicalSizeYUnit="µm")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    t = cfg.tile_px
    common = {"dtype": "float32", "tile": (t, t), "photometric": "minisblack", "compression": cfg.compression}
    with atomic_file(p, suffix=".part.ome.tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, lab in enumerate(levels):
            shape = (values.shape[1], *lab.shape)
            tiles = _plane_tiles(values, lab, cfg.fill_value, t)
            if k == 0:
                tif.write(tiles, shape=shape, subifds=len(levels) - 1, metadata=meta, **common)
            else:
                tif.write(tiles, shape=shape, subfiletype=1, **common)
    return p


def export_ome_tiff_on_image(adata: ad.AnnData, path: str | Path, cfg: ExportConfig | None = None) -> Path:
    """Write ``adata``'s panel on its H&E pixel grid (see the module docstring) → the path written."""
    cfg = cfg or ExportConfig()
    _check_panel(adata)
    grid = image_grid(adata, cfg)
    if grid.pixel_size_um is None:
        log.warning("export: µm per pixel unknown; the OME-TIFF carries no physical pixel size")
    names = [str(m) for m in adata.uns[keys.PROTEIN_MARKERS]]
    return write_ome_pyramid(path, np.asarray(adata.obsm[keys.PROTEINS]), grid.labels, names, grid.pixel_size_um, cfg)


def export_panel(adata: ad.AnnData, path: str | Path, cfg: ExportConfig | None = None) -> Path:
    """Export on the grid ``cfg.grid`` names; the image grid falls back to the spot grid (with a
    warning) when the AnnData does not record its H&E image."""
    cfg = cfg or ExportConfig()
    if cfg.grid == "image":
        try:
            return export_ome_tiff_on_image(adata, path, cfg)
        except ValueError as err:
            if "H&E image size" not in str(err) and "one library" not in str(err):
                raise
            log.warning("export: %s; writing one pixel per spot instead", err)
    return export_ome_tiff(adata, path, cfg)
