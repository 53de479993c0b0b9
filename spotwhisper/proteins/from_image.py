"""Route A on AnnData: run ROSIE around every spot of a slide, or over a whole image without spots."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from torch import nn

from .. import keys
from ..io.slide import Slide
from ..io.spatial import estimate_spacing_px, open_source_slide, spatial_info
from .config import RosieConfig
from .panel import ROSIE_MARKERS
from .rosie import ProteinMap, predict_map
from .scaling import scale_levels

log = logging.getLogger(__name__)


def _spot_radius_full(adata: ad.AnnData) -> float:
    """Spot radius in full-resolution pixels (``obsm["spatial"]`` units)."""
    try:
        _, info = spatial_info(adata)
        diameter = info.get("scalefactors", {}).get(keys.SPOT_DIAMETER)
    except (KeyError, ValueError):
        diameter = None
    if diameter:
        return float(diameter) / 2
    return estimate_spacing_px(np.asarray(adata.obsm[keys.SPATIAL])) / 4


def _record(adata: ad.AnnData, raw: np.ndarray, cfg: RosieConfig, source: str) -> None:
    groups = adata.obs[keys.SECTION].astype(str).to_numpy() if keys.SECTION in adata.obs else None
    adata.obsm[keys.PROTEINS_RAW] = raw.astype(np.float32)
    adata.obsm[keys.PROTEINS] = scale_levels(raw, cfg.scaling, cfg.clip_percentiles, groups)
    adata.uns[keys.PROTEIN_MARKERS] = list(ROSIE_MARKERS)
    adata.uns[keys.PROTEIN_INFO] = {
        "route": "rosie",
        "input": source,
        "scaling": cfg.scaling,
        "clip_percentiles": list(cfg.clip_percentiles),
        "rosie_mpp": cfg.mpp,
        "stride_px": cfg.stride_px,
        "window_px": cfg.window_px,
        "spot_reduce": cfg.spot_reduce,
        "genes_used": [""] * len(ROSIE_MARKERS),
        "no_proxy": [],
        "no_gene_in_data": [],
    }


def proteins_from_image(
    adata: ad.AnnData,
    model: nn.Module,
    cfg: RosieConfig | None = None,
    slide: Slide | None = None,
    scale: float | None = None,
) -> tuple[ad.AnnData, ProteinMap]:
    """ROSIE marker levels per spot of ``adata``, in place; also returns the marker map.

    ``slide``/``scale`` default to the library's source image (``obsm["spatial"] * scale`` =
    slide pixels). Only windows near spots are computed. Writes ``obsm["proteins_raw"]`` (ROSIE
    outputs), ``obsm["proteins"]`` (scaled per slide), ``uns["protein_markers"]``, ``uns["protein_panel"]``.
    """
    cfg = cfg or RosieConfig()
    if slide is None:
        slide, scale = open_source_slide(adata)
    scale = 1.0 if scale is None else float(scale)
    if keys.SPATIAL not in adata.obsm:
        raise KeyError(f"AnnData has no obsm[{keys.SPATIAL!r}] spot positions")
    coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale
    radius = _spot_radius_full(adata) * scale
    if slide.mpp is None:
        raise ValueError(f"{slide.path}: µm per pixel unknown; set it so windows match ROSIE's {cfg.mpp} µm/px")
    step = cfg.stride_px * cfg.mpp / slide.mpp
    margin = radius + step
    region = (*(coords.min(axis=0) - margin), *(coords.max(axis=0) + margin))
    pmap = predict_map(model, slide, cfg, region=region, near=coords, near_radius_px=max(radius, 0.75 * step))
    raw = pmap.sample(coords, radius if cfg.spot_reduce == "disk" else None)
    _record(adata, raw, cfg, str(slide.path))
    return adata, pmap


def map_to_anndata(pmap: ProteinMap, cfg: RosieConfig | None = None, library_id: str = "image") -> ad.AnnData:
    """One observation per computed map cell (a regular grid of tiles), with the panel in obsm.

    ``obsm["spatial"]`` holds cell centres in slide pixels; ``uns["spatial"][library_id]`` the µm/px
    and the grid step as spot spacing, so :func:`~spotwhisper.proteins.ome_tiff.export_ome_tiff` works.
    """
    cfg = cfg or RosieConfig()
    flat = pmap.values.reshape(pmap.values.shape[0], -1).T
    ok = np.isfinite(flat).any(axis=1)
    ny, nx = pmap.values.shape[1:]
    ii, jj = np.divmod(np.flatnonzero(ok), nx)
    obs = pd.DataFrame(
        {keys.ARRAY_X: jj, keys.ARRAY_Y: ii, keys.SECTION: library_id},
        index=pd.Index([f"{library_id}_{i}x{j}" for i, j in zip(ii, jj)], name="tile"),
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm[keys.SPATIAL] = pmap.centres[ok]
    adata.uns[keys.SPATIAL] = {
        library_id: {
            "images": {},
            "scalefactors": {keys.MPP: pmap.slide_mpp, keys.SPOT_SPACING: pmap.step},
            "metadata": {keys.TECHNOLOGY: "grid"},
        }
    }
    _record(adata, flat[ok], cfg, library_id)
    log.info("ROSIE map: %d × %d cells, %d with tissue", ny, nx, int(ok.sum()))
    return adata
