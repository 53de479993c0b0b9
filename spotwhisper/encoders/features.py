"""Stage 3 — image features of spot tiles (DeepSpot layout) or of a regular grid, with a disk cache.

:func:`extract_features` cuts every spot's tile and its ``g × g`` sub-tiles (``spotwhisper.tiles``),
runs an :class:`~spotwhisper.encoders.registry.ImageEncoder` over them in batches and stores

* ``obsm["features_<m>"]`` — spot-tile features ``(n, d)`` float32,
* ``obsm["features_<m>_sub"]`` — sub-tile features ``(n, g*g, d)`` float32, row-major sub-tiles,
* ``uns["features"][<m>]`` — encoder spec, weights id, tile side (µm and slide px), µm/px,
  ring neighbours ``(n, k)`` (``-1`` = none), tile QC (tissue fraction, blur variance) and a
  note of how tiles were resampled.

:func:`extract_grid_features` does the same over a regular grid of a slide without spots and
returns a new AnnData whose ``obsm["spatial"]`` holds the tile centres, so later stages treat
grid tiles like spots. Results are cached on disk (:mod:`spotwhisper.encoders.feature_cache`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from .. import keys
from ..config import load_config
from ..io.slide import Slide
from ..io.spatial import attach_image, open_source_slide
from ..tiles import (
    MacenkoNormalizer,
    TileConfig,
    TileLayout,
    TissueMask,
    grid_layout,
    iter_tile_batches,
    spot_layout,
)
from ..tiles.blocks import prefetched
from ..tiles.config import ReadConfig, SpotTileConfig
from ..tiles.tissue import tissue_mask_from_rgb
from .feature_cache import FeatureCache, array_fingerprint, make_key, slide_fingerprint
from .backends import RuntimeConfig
from .registry import DEFAULT_ENCODER, ImageEncoder, create_encoder

log = logging.getLogger(__name__)

#: Resampling by more than this factor away from a model's training µm/px is logged as a warning.
MPP_MISMATCH_WARN = 1.5
#: Encoders reading tiles at a fixed µm/px warn when the slide is coarser than that by more than this factor.
TILE_MPP_UPSAMPLE_WARN = 1.1


@dataclass
class FeatureConfig:
    """Feature extraction settings (``configs/encoders.yaml``)."""

    model: str = DEFAULT_ENCODER  #: registry name of the encoder
    weights: dict[str, str] = field(default_factory=dict)  #: per-model weight source (local path or hub id)
    batch_size: int = 8  #: spots read per batch (each gives 1 + g*g images)
    forward_batch: int = 64  #: images per forward pass
    with_subtiles: bool = True  #: also encode the g × g sub-tiles of every tile
    prefetch: bool = True  #: read the next batch of tiles while the model runs
    cache: bool = True  #: read/write the on-disk feature cache
    cache_dir: str | None = None  #: None = $SPOTWHISPER_CACHE_DIR or ~/.cache/spotwhisper/features
    num_threads: int | None = None  #: torch CPU threads for the CLI (None = torch default)
    hash_chunk_mb: float = 1.0  #: large slides are fingerprinted by their first/last chunk (MB)
    full_hash_max_mb: float = 64.0  #: slides up to this size (MB) are hashed in full
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  #: where the forward pass runs (torch, ONNX Runtime, OpenVINO)


def feature_key(model: str) -> str:
    """``obsm`` key of spot-tile features of ``model``."""
    return f"{keys.FEATURES_PREFIX}{model}"


def subtile_key(model: str) -> str:
    """``obsm`` key of sub-tile features of ``model``."""
    return f"{keys.FEATURES_PREFIX}{model}{keys.FEATURES_SUB_SUFFIX}"


def resampling_note(layout: TileLayout, out_px: int, trained_mpp: float | None = None) -> str:
    """How tiles were resampled, e.g. ``"slide at 0.74 µm/px, 200 µm tiles = 270 px resampled to 224 px …"``."""
    side_um, side_px, g = layout.side_um, layout.side_px, layout.subtile_grid
    note = (
        f"slide at {layout.mpp:.3f} µm/px, {side_um:.0f} µm tiles = {side_px:.0f} px resampled to {out_px} px "
        f"({side_um / out_px:.3f} µm/px)"
    )
    if g > 1:
        note += (
            f"; {side_um / g:.1f} µm sub-tiles = {side_px / g:.0f} px resampled to {out_px} px "
            f"({side_um / g / out_px:.3f} µm/px)"
        )
    if trained_mpp:
        note += f"; model trained at {trained_mpp:g} µm/px"
    return note


def tile_px(layout: TileLayout, encoder: ImageEncoder) -> int:
    """Pixels per tile side fed to ``encoder``: its input size, or — for encoders that read tiles at a
    fixed µm/px (``spec.tile_mpp``) — the tile side at that resolution, a multiple of the sub-tile grid."""
    tile_mpp = encoder.spec.tile_mpp
    if not tile_mpp:
        return encoder.image_size
    g = layout.subtile_grid
    return g * max(1, round(layout.side_um / tile_mpp / g))


def _log_resampling(layout: TileLayout, encoder: ImageEncoder, with_subtiles: bool) -> str:
    tile_mpp = encoder.spec.tile_mpp
    if encoder.spec.pooled_grid:
        g = encoder.spec.pooled_grid
        note = resampling_note(layout, encoder.image_size, encoder.spec.trained_mpp).split("; ")[0] + (
            f"; {g}×{g} sub-tiles pooled from one pass over the tile" if with_subtiles else "")
        log.info("%s: %s", encoder.name, note)
        return note
    if tile_mpp:
        px, g = tile_px(layout, encoder), layout.subtile_grid
        note = (f"slide at {layout.mpp:.3f} µm/px; {layout.side_um:.0f} µm tiles read at {layout.side_um / px:.2f} µm/px "
                f"({px} px{f', {g}×{g} sub-tiles of {px // g} px' if with_subtiles and g > 1 else ''})")
        log.info("%s: %s", encoder.name, note)
        if layout.mpp > tile_mpp * TILE_MPP_UPSAMPLE_WARN:
            log.warning("%s reads tiles at %g µm/px, but this slide is only %.2f µm/px: tiles are upsampled %.1f×, "
                        "outside what the models were trained on; use a finer image if there is one", encoder.name,
                        tile_mpp, layout.mpp, layout.mpp / tile_mpp)
        return note
    note = resampling_note(layout, encoder.image_size, encoder.spec.trained_mpp)
    log.info("%s: %s", encoder.name, note)
    trained = encoder.spec.trained_mpp
    if trained:
        effective = [layout.side_um / encoder.image_size]
        if with_subtiles:
            effective.append(layout.side_um / layout.subtile_grid / encoder.image_size)
        worst = max(max(e / trained, trained / e) for e in effective)
        if worst > MPP_MISMATCH_WARN:
            log.warning("%s was trained at %g µm/px; these tiles are resampled %.1f× away from it (%s)", encoder.name, trained, worst, note)
    return note


def _encode_layout(
    encoder: ImageEncoder,
    slide: Slide,
    layout: TileLayout,
    cfg: FeatureConfig,
    normalizer: MacenkoNormalizer | None,
    progress: bool,
    read: ReadConfig | None = None,
) -> dict[str, np.ndarray]:
    """Run ``encoder`` over every tile (and sub-tile) of ``layout`` → ``features``, ``subtiles``, ``blur``."""
    n, d, g2 = len(layout), encoder.embed_dim, layout.subtile_grid**2
    out = {"features": np.zeros((n, d), np.float32), "blur": np.zeros(n, np.float32)}
    if cfg.with_subtiles:
        out["subtiles"] = np.zeros((n, g2, d), np.float32)
    px = tile_px(layout, encoder)
    crops = bool(encoder.spec.tile_mpp) and cfg.with_subtiles  # sub-tiles cut from the tile, not re-read
    pooled = encoder.spec.pooled_grid  # sub-tiles pooled from one pass over the tile
    if pooled and pooled != layout.subtile_grid:
        raise ValueError(f"{encoder.name} pools {pooled}×{pooled} sub-tiles; the layout has {layout.subtile_grid}×{layout.subtile_grid}")
    # tiles read at a fixed µm/px are shrunk as a scanner's downsampled image would be (Lanczos)
    batches = iter_tile_batches(slide, layout, out_px=px, batch_size=cfg.batch_size,
                                with_subtiles=cfg.with_subtiles and not crops and not pooled, normalizer=normalizer,
                                progress=False, resample="lanczos" if encoder.spec.tile_mpp else "bilinear",
                                block_tiles=read.block_tiles if read else 0, workers=read.workers if read else 1)
    with tqdm(total=n, desc=f"{encoder.name} features", unit="tile", disable=not progress) as bar:
        for b in prefetched(batches, cfg.prefetch):
            if pooled:
                emb = encoder.encode(b.tiles, cfg.forward_batch).reshape(len(b.indices), 1 + g2, d)
            elif crops:
                g, s = layout.subtile_grid, px // layout.subtile_grid
                subs = b.tiles.reshape(len(b.indices), g, s, g, s, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, s, s, 3)
                emb = np.concatenate([encoder.encode(b.tiles, cfg.forward_batch)[:, None],
                                      encoder.encode(subs, cfg.forward_batch).reshape(len(b.indices), g * g, d)], axis=1)
            else:
                imgs = b.tiles if b.subtiles is None else np.concatenate([b.tiles[:, None], b.subtiles], axis=1).reshape(-1, px, px, 3)
                emb = encoder.encode(imgs, cfg.forward_batch).reshape(len(b.indices), -1, d)
            out["features"][b.indices] = emb[:, 0]
            if cfg.with_subtiles:
                out["subtiles"][b.indices] = emb[:, 1:]
            out["blur"][b.indices] = b.blur
            bar.update(len(b.indices))
    return out


def _cache_parts(slide: Slide, layout: TileLayout, encoder: ImageEncoder, tile_cfg: TileConfig, cfg: FeatureConfig) -> dict:
    stain = tile_cfg.stain
    return {
        "slide": slide_fingerprint(slide, cfg.hash_chunk_mb, cfg.full_hash_max_mb),
        "model": encoder.name,
        "weights": encoder.weights_id,
        "embed_dim": encoder.embed_dim,
        "image_size": encoder.image_size,
        "mean": [round(v, 6) for v in encoder.mean],
        "std": [round(v, 6) for v in encoder.std],
        "kind": layout.kind,
        "side_um": round(layout.side_um, 3),
        "side_px": round(layout.side_px, 2),
        "subtile_grid": layout.subtile_grid if cfg.with_subtiles else 0,
        "centres": array_fingerprint(layout.centres),
        "stain": {"io": stain.io, "alpha": stain.alpha, "beta": stain.beta, "ref": stain.reference_he, "max_c": stain.reference_max_c,
                  **({} if stain.scale_concentrations else {"scale_concentrations": False})}
        if stain.normalize
        else False,
        **({"tile_mpp": encoder.spec.tile_mpp} if encoder.spec.tile_mpp else {}),
        # fp32 runtimes agree with torch to ~1e-6 and share its entries; lossy precisions get their own
        **({"runtime": encoder.runtime_id} if encoder.precision != "fp32" else {}),
    }


def _thumbnail_mask(slide: Slide, tile_cfg: TileConfig) -> tuple[np.ndarray, TissueMask]:
    thumb = slide.get_thumbnail(tile_cfg.tissue.thumbnail_max_side)
    mask = tissue_mask_from_rgb(thumb, tile_cfg.tissue)
    return thumb, TissueMask(mask=mask, scale=thumb.shape[1] / slide.dimensions[0])


def _features_for_layout(
    slide: Slide,
    layout: TileLayout,
    encoder: ImageEncoder,
    tile_cfg: TileConfig,
    cfg: FeatureConfig,
    thumb: np.ndarray,
    tissue: TissueMask,
    progress: bool,
) -> tuple[dict[str, np.ndarray], str]:
    """Cached or freshly computed arrays of ``layout`` → ``(arrays, cache_key)``."""
    g2 = layout.subtile_grid**2
    parts = _cache_parts(slide, layout, encoder, tile_cfg, cfg)
    key = make_key(parts)
    use_cache = cfg.cache and encoder.weights_id != "random-init"
    store = FeatureCache(cfg.cache_dir)
    shapes = {"features": (len(layout), encoder.embed_dim), "blur": (len(layout),)}
    if cfg.with_subtiles:
        shapes["subtiles"] = (len(layout), g2, encoder.embed_dim)
    if use_cache:
        hit = store.load(encoder.name, key, shapes)
        if hit is not None:
            log.info("%s features: cache hit %s", encoder.name, store.path(encoder.name, key))
            return {k: hit[k] for k in shapes}, key
    normalizer = None
    if tile_cfg.stain.normalize:
        tissue_px = thumb[tissue.mask]
        normalizer = MacenkoNormalizer(tile_cfg.stain).fit(tissue_px[None] if len(tissue_px) else thumb)
    arrays = _encode_layout(encoder, slide, layout, cfg, normalizer, progress, tile_cfg.read)
    if use_cache:
        path = store.save(encoder.name, key, arrays, parts)
        log.info("%s features: cached in %s", encoder.name, path)
    return arrays, key


def _store(adata: ad.AnnData, encoder: ImageEncoder, layout: TileLayout, arrays: dict, tile_cfg: TileConfig, info: dict) -> None:
    name = encoder.name
    adata.obsm[feature_key(name)] = arrays["features"]
    if "subtiles" in arrays:
        adata.obsm[subtile_key(name)] = arrays["subtiles"]
    tissue = np.asarray(info.pop("tissue_fraction"), dtype=np.float32)
    qc = tile_cfg.qc
    adata.uns.setdefault(keys.FEATURES_UNS, {})[name] = {
        "spec": encoder.spec.to_dict(),
        "weights": encoder.weights_id,
        "embed_dim": encoder.embed_dim,
        "image_size": encoder.image_size,
        "layout": layout.kind,
        "tile_um": float(layout.side_um),
        "tile_px": float(layout.side_px),
        "mpp": float(layout.mpp),
        "subtile_grid": int(layout.subtile_grid) if "subtiles" in arrays else 0,
        "obsm_keys": [feature_key(name)] + ([subtile_key(name)] if "subtiles" in arrays else []),
        "neighbours": np.asarray(layout.neighbours, dtype=np.int64),
        "qc": {
            "tissue_fraction": tissue,
            "blur_variance": arrays["blur"],
            "has_tissue": tissue >= qc.min_tissue_fraction,
            "is_blurred": arrays["blur"] < qc.min_blur_variance,
            "min_tissue_fraction": qc.min_tissue_fraction,
            "min_blur_variance": qc.min_blur_variance,
        },
        "stain_normalized": bool(tile_cfg.stain.normalize),
        **info,
    }
    models = adata.uns.setdefault(keys.EMBEDDING_MODELS, {})
    models[feature_key(name)] = {"name": name, "version": encoder.weights_id, "dim": encoder.embed_dim}


def _setup(encoder: str | ImageEncoder, tile_cfg: TileConfig | None, cfg: FeatureConfig | None, **overrides: Any):
    cfg = dataclasses.replace(cfg or load_config(FeatureConfig, "encoders"), **{k: v for k, v in overrides.items() if v is not None})
    tile_cfg = tile_cfg or load_config(TileConfig, "tiles")
    if isinstance(encoder, str):
        encoder = create_encoder(encoder, weights=cfg.weights.get(encoder), runtime=cfg.runtime)
    return encoder, tile_cfg, cfg


def extract_features(
    adata: ad.AnnData,
    encoder: str | ImageEncoder = DEFAULT_ENCODER,
    *,
    slide: Slide | None = None,
    scale: float = 1.0,
    library_id: str | None = None,
    tile_cfg: TileConfig | None = None,
    layout_cfg: SpotTileConfig | None = None,
    cfg: FeatureConfig | None = None,
    batch_size: int | None = None,
    cache_dir: str | None = None,
    use_cache: bool | None = None,
    indices: np.ndarray | list[int] | None = None,
    copy: bool = False,
    progress: bool = True,
) -> ad.AnnData:
    """Encode the spot tiles of ``adata`` and store them (see the module docstring for keys).

    ``slide``/``scale`` default to the library's source image (``io.open_source_slide``);
    ``tile_cfg`` to ``configs/tiles.yaml`` (``layout_cfg`` replaces its ``spot`` part), ``cfg`` to
    ``configs/encoders.yaml`` (``batch_size``/``cache_dir``/``use_cache`` override it). With
    ``indices`` only those spots are encoded and a new AnnData of them is returned (ring
    neighbours then lie within the subset); ``copy`` also works on a copy. Otherwise ``adata`` is
    changed in place and returned.
    """
    encoder, tile_cfg, cfg = _setup(encoder, tile_cfg, cfg, batch_size=batch_size, cache_dir=cache_dir, cache=use_cache)
    if indices is not None:
        idx = np.asarray(indices)
        if idx.size == 0:
            raise ValueError("indices select no spot")
        adata = adata[idx].copy()
    elif copy:
        adata = adata.copy()
    if slide is None:
        slide, scale = open_source_slide(adata, library_id)
    layout = spot_layout(adata, slide, scale, layout_cfg or tile_cfg.spot, library_id)
    note = _log_resampling(layout, encoder, cfg.with_subtiles)
    thumb, tissue = _thumbnail_mask(slide, tile_cfg)
    arrays, key = _features_for_layout(slide, layout, encoder, tile_cfg, cfg, thumb, tissue, progress)
    info = {"tissue_fraction": tissue.box_fraction(layout.boxes), "resampling": note, "cache_key": key}
    _store(adata, encoder, layout, arrays, tile_cfg, info)
    return adata


def grid_anndata(slide: Slide, layout: TileLayout, library_id: str, stride_px: float, thumb: np.ndarray | None = None) -> ad.AnnData:
    """An AnnData of grid tiles: no genes, ``obsm["spatial"]`` = tile centres (slide px), the
    slide attached in ``uns["spatial"][library_id]`` with the grid stride as spot spacing."""
    n = len(layout)
    obs = pd.DataFrame({keys.SECTION: pd.Categorical([library_id] * n)}, index=[f"tile_{i}" for i in range(n)])
    adata = ad.AnnData(X=sparse.csr_matrix((n, 0), dtype=np.float32), obs=obs)
    adata.obsm[keys.SPATIAL] = np.asarray(layout.centres, dtype=np.float64)
    attach_image(
        adata,
        library_id,
        slide,
        mpp=slide.mpp,
        spot_spacing_px=stride_px,
        spot_diameter_px=layout.side_px,
        technology="grid",
        hires=thumb,
        hires_scale=None if thumb is None else thumb.shape[1] / slide.dimensions[0],
    )
    return adata


def extract_grid_features(
    slide: Slide,
    encoder: str | ImageEncoder = DEFAULT_ENCODER,
    *,
    library_id: str | None = None,
    tile_cfg: TileConfig | None = None,
    cfg: FeatureConfig | None = None,
    batch_size: int | None = None,
    cache_dir: str | None = None,
    use_cache: bool | None = None,
    progress: bool = True,
) -> ad.AnnData:
    """Encode a regular grid of ``tile_cfg.grid.tile_um`` tiles over the tissue of ``slide``.

    Returns a new AnnData of the kept tiles (tissue fraction ≥ ``qc.min_tissue_fraction``) with
    the same feature keys as :func:`extract_features`.
    """
    encoder, tile_cfg, cfg = _setup(encoder, tile_cfg, cfg, batch_size=batch_size, cache_dir=cache_dir, cache=use_cache)
    thumb, tissue = _thumbnail_mask(slide, tile_cfg)
    layout = grid_layout(slide, tissue, tile_cfg.grid, tile_cfg.qc.min_tissue_fraction, tile_cfg.spot.subtile_grid)
    note = _log_resampling(layout, encoder, cfg.with_subtiles)
    adata = grid_anndata(slide, layout, library_id or slide.path.stem, layout.side_px * (1 - tile_cfg.grid.overlap), thumb)
    arrays, key = _features_for_layout(slide, layout, encoder, tile_cfg, cfg, thumb, tissue, progress)
    frac = layout.tissue_fraction if layout.tissue_fraction is not None else tissue.box_fraction(layout.boxes)
    _store(adata, encoder, layout, arrays, tile_cfg, {"tissue_fraction": frac, "resampling": note, "cache_key": key})
    return adata
