"""Heat-map overlay of spot scores on the slide thumbnail, with region outlines."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_file
from .regions import Region

OUTLINE_COLOUR = (0, 255, 255, 255)
LABEL_COLOUR = (255, 255, 255, 255)


def score_raster(coords: np.ndarray, scores: np.ndarray, tile_px: float, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Paint each spot's tile with its score on a ``shape`` (h, w) canvas at ``scale`` canvas px per slide px.

    Returns float32 with NaN where no spot covers the canvas.
    """
    canvas = np.full(shape, np.nan, dtype=np.float32)
    half = max(1, int(round(tile_px * scale / 2)))
    for (x, y), s in zip(np.asarray(coords) * scale, scores):
        if np.isfinite(s):
            cx, cy = int(round(x)), int(round(y))
            canvas[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = s
    return canvas


def render_overlay(
    thumbnail: np.ndarray,
    scale: float,
    coords: np.ndarray,
    scores: np.ndarray,
    tile_px: float,
    threshold: float | None = None,
    regions: list[Region] | None = None,
    cmap: str = "inferno",
    alpha: float = 0.55,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Image.Image:
    """Blend a colour map of ``scores`` over ``thumbnail`` (slide px × ``scale`` = thumbnail px).

    Spots under ``threshold`` are drawn faintly; region outlines are drawn and numbered.
    """
    h, w = thumbnail.shape[:2]
    raster = score_raster(coords, scores, tile_px, (h, w), scale)
    finite = np.isfinite(raster)
    base = Image.fromarray(thumbnail[..., :3]).convert("RGBA")
    if finite.any():
        lo = np.nanmin(scores) if vmin is None else vmin
        hi = np.nanmax(scores) if vmax is None else vmax
        norm = np.clip((raster - lo) / max(hi - lo, 1e-9), 0, 1)
        rgba = (matplotlib.colormaps[cmap](np.nan_to_num(norm)) * 255).astype(np.uint8)
        a = np.where(finite, alpha, 0.0)
        if threshold is not None:
            a = np.where(finite & (raster < threshold), alpha * 0.25, a)
        rgba[..., 3] = (a * 255).astype(np.uint8)
        base = Image.alpha_composite(base, Image.fromarray(rgba))
    if regions:
        draw = ImageDraw.Draw(base)
        width = max(2, int(round(max(h, w) / 400)))
        for r in regions:
            for poly in r.polygons:
                pts = [tuple(p) for p in (poly * scale)]
                if len(pts) > 2:
                    draw.line(pts + [pts[0]], fill=OUTLINE_COLOUR, width=width)
            cx, cy = np.asarray(r.centroid) * scale
            draw.text((cx, cy), str(r.id), fill=LABEL_COLOUR, stroke_width=2, stroke_fill=(0, 0, 0, 255))
    return base.convert("RGB")


def save_png(img: Image.Image, path: str | Path) -> Path:
    p = Path(path)
    with atomic_file(p, suffix=".part.png") as tmp:
        img.save(tmp, format="PNG")
    return p


def display_image(adata) -> tuple[np.ndarray, float]:
    """The slide's display image (``uns["spatial"][lib]["images"]["hires"]``) and its scale
    (display px per slide px, ``tissue_hires_scalef``)."""
    from .. import keys

    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    if lib is None or "hires" not in adata.uns[keys.SPATIAL][lib].get("images", {}):
        raise ValueError("the slide has no display image in uns['spatial'][...]['images']['hires']")
    info = adata.uns[keys.SPATIAL][lib]
    return np.asarray(info["images"]["hires"]), float(info["scalefactors"][keys.HIRES_SCALEF])


def frame(adata, display_shape: tuple[int, int], scale: float, max_side: int | None,
          margin: float | None) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Part of the display image to show and its output size.

    ``box`` (x0, y0, x1, y1) in display px: the spots plus ``margin`` spot spacings, or the whole
    image when ``margin`` is None; ``size`` (w, h) with the longer side at most ``max_side``
    (never enlarged). ``scale`` maps slide px to display px.
    """
    from .. import keys
    from ..io.spatial import spot_spacing

    h, w = display_shape
    box = (0, 0, w, h)
    if margin is not None:
        coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale
        pad = margin * spot_spacing(adata) * scale
        x0, y0 = np.floor(coords.min(0) - pad).astype(int)
        x1, y1 = np.ceil(coords.max(0) + pad).astype(int)
        box = (max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))
    bw, bh = box[2] - box[0], box[3] - box[1]
    f = min(1.0, max_side / max(bw, bh)) if max_side else 1.0
    return box, (max(1, round(bw * f)), max(1, round(bh * f)))


def framed(img: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """Crop ``img`` to ``box`` and resize it to ``size``."""
    out = img.crop(box)
    return out if out.size == size else out.resize(size, Image.BILINEAR)


def render_hits(hits, threshold: float, scores: np.ndarray | None = None, margin: float | None = 2.0,
                max_side: int | None = None, span: tuple[float, float] = (3.0, 2.0), **kwargs) -> Image.Image:
    """Overlay of a :class:`~spotwhisper.search.result.SlideHits` (fused relevance unless ``scores``),
    cropped to the spots plus ``margin`` spot spacings (None = whole slide), longer side ≤ ``max_side``.

    Colours are absolute — ``threshold − span[0]`` … ``threshold + span[1]`` in the scores' units, the
    same on every slide — and a slide without a region (or answered by a caveat) gets an empty
    overlay: the slide alone, with its region-free answer in words beside it."""
    from .. import keys
    from ..io.spatial import spot_spacing

    img, scale = display_image(hits.adata)
    coords = np.asarray(hits.adata.obsm[keys.SPATIAL], dtype=float)
    values = hits.fused if scores is None else scores
    if not hits.regions:
        values = np.full(len(coords), np.nan)
    kwargs.setdefault("vmin", threshold - span[0])
    kwargs.setdefault("vmax", threshold + span[1])
    out = render_overlay(img, scale, coords, values, spot_spacing(hits.adata), threshold=threshold,
                         regions=hits.regions, **kwargs)
    box, size = frame(hits.adata, img.shape[:2], scale, max_side, margin)
    return framed(out, box, size)
