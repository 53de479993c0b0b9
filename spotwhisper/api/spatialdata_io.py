"""SpatialData in and out (the optional ``[spatialdata]`` extra): an image, spot shapes and a table.

:func:`read_spatialdata` turns a ``spatialdata.SpatialData`` holding an H&E image, the spots as
circles (``ShapesModel``: centre + ``radius``) and the table that annotates them (``TableModel``)
into the AnnData :func:`spotwhisper.read` gives: spot centres in the image's pixels, the image
attached in ``uns["spatial"]``. The full-resolution image level is written once as a tiled TIFF into
the cache (``<cache>/spatialdata/<content hash>.tif``) — tiles are cut from a file, as for every slide.
:func:`write_spatialdata` writes a search (or comparison) back into the table's ``obs`` and ``uns``,
row for row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np

from .. import keys
from ..cache import cache_dir
from ..io.spatial import attach_image, estimate_spacing_px
from ..io.slide import open_slide

INSTALL = "pip install 'spotwhisper[spatialdata]'"
RECORD = "spatialdata"  #: uns[...] of the AnnData: the table, shapes and image it came from


def _require():
    try:
        import spatialdata
    except ImportError as err:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError(f"reading SpatialData needs the spatialdata package: {INSTALL}") from err
    return spatialdata


def _pick(elements, key: str | None, what: str) -> str:
    names = list(elements.keys())
    if key is not None:
        if key not in names:
            raise KeyError(f"no {what} {key!r} in the SpatialData object ({what}s: {', '.join(names) or 'none'})")
        return key
    if len(names) != 1:
        raise ValueError(f"the SpatialData object holds {len(names)} {what}s ({', '.join(names) or 'none'}); "
                         f"name one with {what}_key=")
    return names[0]


def _affine(element, system: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    return np.asarray(get_transformation(element, to_coordinate_system=system)
                      .to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _rgb(image) -> np.ndarray:
    """The full-resolution level of a SpatialData image (a DataArray, or a multiscale DataTree) as
    ``(h, w, 3)`` uint8 (floats in [0, 1] scaled by 255)."""
    if hasattr(image, "children") and "scale0" in image.children:  # multiscale: its finest level
        image = next(iter(image["scale0"].ds.data_vars.values()))
    arr = np.asarray(image.transpose("y", "x", "c").values)
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = np.clip(arr * 255.0 if np.nanmax(arr) <= 1.0 else arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def image_file(rgb: np.ndarray, mpp: float | None) -> Path:
    """A tiled TIFF of ``rgb`` in the cache, named by its content (written once, atomically)."""
    import tifffile

    from ..atomic import atomic_file

    digest = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()[:20]
    path = cache_dir("spatialdata") / f"{digest}.tif"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"} if mpp else {}
        with atomic_file(path, suffix=".part.tif") as tmp:
            tifffile.imwrite(tmp, rgb, tile=(256, 256), photometric="rgb", compression="zlib", **res)
    return path


def read_spatialdata(sdata, *, table_key: str | None = None, image_key: str | None = None, shapes_key: str | None = None,
                     mpp: float | None = None, name: str | None = None) -> ad.AnnData:
    """The spots of ``sdata`` as AnnData (one slide): ``obs``/``X`` of the table, ``obsm["spatial"]`` the
    circle centres in the image's pixels (both mapped through their ``global`` transformations),
    ``uns["spatial"][name]`` the image (µm/px: ``mpp``, else the table's ``uns["spatial"]`` scale factors).
    Keys default to the only element of each kind; the table's annotated region gives the shapes."""
    _require()
    t_key = _pick(sdata.tables, table_key, "table")
    table = sdata.tables[t_key]
    attrs = table.uns.get(keys.SPATIALDATA_ATTRS, {})
    region = attrs.get("region")
    shapes_key = shapes_key or (region if isinstance(region, str) else None)
    s_key = _pick(sdata.shapes, shapes_key, "shapes")
    i_key = _pick(sdata.images, image_key, "image")
    shapes, image = sdata.shapes[s_key], sdata.images[i_key]
    if "radius" not in shapes:
        raise ValueError(f"shapes {s_key!r} are not circles (no 'radius' column): spots must be circles")
    instance = attrs.get("instance_key")
    rows = table.obs[instance].to_numpy() if instance in table.obs else np.arange(table.n_obs)
    missing = set(rows) - set(shapes.index)
    if missing:
        raise ValueError(f"table {t_key!r}: {len(missing)} row(s) name no circle of {s_key!r} (e.g. {sorted(missing)[:3]})")
    circles = shapes.loc[rows]
    xy = np.column_stack([circles.geometry.x.to_numpy(), circles.geometry.y.to_numpy(), np.ones(len(circles))])
    to_image = np.linalg.inv(_affine(image, "global")) @ _affine(shapes, "global")
    centres = (xy @ to_image.T)[:, :2]
    radius = float(np.median(circles["radius"])) * float(np.sqrt(abs(np.linalg.det(to_image[:2, :2]))))
    mpp = mpp or _table_mpp(table)
    if mpp is None:
        raise ValueError("µm per pixel of the SpatialData image unknown: pass mpp= (tiles are cut in µm)")
    slide = open_slide(image_file(_rgb(image), mpp), mpp=mpp)
    name = name or i_key
    out = ad.AnnData(X=table.X, obs=table.obs.copy(), var=table.var.copy())
    out.obs[keys.SECTION] = name
    out.obsm[keys.SPATIAL] = centres
    attach_image(out, name, slide, mpp=mpp, spot_spacing_px=estimate_spacing_px(centres) if len(centres) > 1 else None,
                 spot_diameter_px=2 * radius, technology="spatialdata")
    out.uns[RECORD] = {"table_key": t_key, "shapes_key": s_key, "image_key": i_key}
    slide.close()
    return out


def _table_mpp(table: ad.AnnData) -> float | None:
    for info in table.uns.get(keys.SPATIAL, {}).values():
        value = info.get("scalefactors", {}).get(keys.MPP) if isinstance(info, dict) else None
        if value:
            return float(value)
    return None


def write_spatialdata(sdata, adata: ad.AnnData, key_added: str = "search", table_key: str | None = None):
    """Copy what :func:`spotwhisper.tl.search` / ``compare`` wrote under ``key_added`` (``obs`` columns
    ``<key>`` and ``<key>_*``, ``uns[<key>]``) from ``adata`` into the table of ``sdata`` (the one it was
    read from), matched by row name. Returns ``sdata``."""
    _require()
    t_key = table_key or adata.uns.get(RECORD, {}).get("table_key") or _pick(sdata.tables, None, "table")
    table = sdata.tables[t_key]
    cols = [c for c in adata.obs if c == key_added or c.startswith(key_added + "_")]
    if not cols:
        raise KeyError(f"no obs[{key_added!r}…] in the AnnData: run spotwhisper.tl.search(adata, …, key_added={key_added!r})")
    missing = table.obs_names.difference(adata.obs_names)
    if len(missing):
        raise ValueError(f"table {t_key!r}: {len(missing)} row(s) are not spots of this AnnData (e.g. {list(missing[:3])})")
    for col in cols:
        table.obs[col] = adata.obs.loc[table.obs_names, col].to_numpy()
    if key_added in adata.uns:
        table.uns[key_added] = adata.uns[key_added]
    return sdata
