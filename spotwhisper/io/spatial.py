"""Shared helpers for ``uns["spatial"]``: spot spacing, µm per pixel, attaching and reopening images."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree

from .. import keys
from .slide import Slide, open_slide


def estimate_spacing_px(coords: np.ndarray) -> float:
    """Median distance (pixels) from each spot to its nearest neighbour; needs ≥ 2 spots."""
    coords = np.asarray(coords, dtype=float)
    if len(coords) < 2:
        raise ValueError("need at least two spots to estimate the spot spacing")
    dist, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(dist[:, 1]))


def attach_image(
    adata: ad.AnnData,
    library_id: str,
    slide: Slide | None,
    *,
    mpp: float | None,
    spot_spacing_px: float | None,
    spot_diameter_px: float | None,
    technology: str,
    hires_max_side: int = 2000,
    source_scale: float = 1.0,
    hires: np.ndarray | None = None,
    hires_scale: float | None = None,
) -> None:
    """Fill ``adata.uns["spatial"][library_id]`` the way scanpy/squidpy expect.

    ``slide`` is the image tiles are cut from; ``source_scale`` maps full-resolution coordinates
    (``obsm["spatial"]``) to that image's pixels. ``hires``/``hires_scale`` pass an existing
    display image (Visium); otherwise a thumbnail of ``slide`` is made.
    """
    scalefactors: dict[str, float] = {}
    if mpp:
        scalefactors[keys.MPP] = float(mpp)
    if spot_spacing_px:
        scalefactors[keys.SPOT_SPACING] = float(spot_spacing_px)
    if spot_diameter_px:
        scalefactors[keys.SPOT_DIAMETER] = float(spot_diameter_px)
    images: dict[str, np.ndarray] = {}
    metadata: dict[str, object] = {keys.TECHNOLOGY: technology}
    if hires is not None and hires_scale is not None:
        images["hires"] = hires
        scalefactors[keys.HIRES_SCALEF] = float(hires_scale)
    if slide is not None:
        if "hires" not in images:
            thumb = slide.get_thumbnail(hires_max_side)
            images["hires"] = thumb
            scalefactors[keys.HIRES_SCALEF] = thumb.shape[1] / slide.dimensions[0] * source_scale
        metadata[keys.SOURCE_IMAGE] = str(Path(slide.path).resolve())
        metadata[keys.SOURCE_IMAGE_SCALE] = float(source_scale)
        metadata["source_image_width"], metadata["source_image_height"] = (int(v) for v in slide.dimensions)
    adata.uns.setdefault(keys.SPATIAL, {})[library_id] = {
        "images": images,
        "scalefactors": scalefactors,
        "metadata": metadata,
    }


def library_ids(adata: ad.AnnData) -> list[str]:
    """Library ids in ``uns["spatial"]``."""
    return list(adata.uns.get(keys.SPATIAL, {}).keys())


def spatial_info(adata: ad.AnnData, library_id: str | None = None) -> tuple[str, dict]:
    """``(library_id, uns["spatial"][library_id])``; the only library when ``library_id`` is None."""
    libs = library_ids(adata)
    if library_id is None:
        if len(libs) != 1:
            raise ValueError(f"AnnData holds {len(libs)} libraries {libs}; name one with library_id")
        library_id = libs[0]
    if library_id not in libs:
        raise KeyError(f"no library {library_id!r} in uns['spatial'] (have {libs})")
    return library_id, adata.uns[keys.SPATIAL][library_id]


def open_source_slide(adata: ad.AnnData, library_id: str | None = None) -> tuple[Slide, float]:
    """Reopen the image tiles are cut from → ``(slide, scale)``.

    ``scale`` maps ``obsm["spatial"]`` to slide pixels; the slide's µm/px is set from the
    library's scale factors when its file carries none.
    """
    lib, info = spatial_info(adata, library_id)
    meta = info.get("metadata", {})
    path = meta.get(keys.SOURCE_IMAGE)
    if not path:
        raise FileNotFoundError(f"library {lib!r} has no source image (uns['spatial'][{lib!r}]['metadata'])")
    scale = float(meta.get(keys.SOURCE_IMAGE_SCALE, 1.0))
    slide = open_slide(path)
    mpp_full = info.get("scalefactors", {}).get(keys.MPP)
    if slide.mpp is None and mpp_full:
        slide.set_mpp(float(mpp_full) / scale)
    return slide, scale


def spot_spacing(adata: ad.AnnData) -> float:
    """Spot (or grid tile) centre spacing in slide px: the library's scale factor, else measured."""
    coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    sf = adata.uns[keys.SPATIAL][lib].get("scalefactors", {}) if lib else {}
    return float(sf.get(keys.SPOT_SPACING) or estimate_spacing_px(coords))
