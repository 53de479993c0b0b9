"""Heat-map overlay of spot scores on the slide thumbnail, with region outlines."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_file
from .regions import Region

OUTLINE_COLOUR = (0, 255, 255, 255)
#: name of the fused score when the result does not name it (``SearchResult.unit``)
DEFAULT_SCORE_LABEL = "fused relevance"
LABEL_COLOUR = (255, 255, 255, 255)


def score_raster(coords: np.ndarray, scores: np.ndarray, tile_px: float, shape: tuple[int, int], scale: float,
                 offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Paint each spot's tile with its score on a ``shape`` (h, w) canvas at ``scale`` canvas px per
    slide px, the canvas starting at ``offset`` (x, y canvas px). Returns float32, NaN where no spot is."""
    canvas = np.full(shape, np.nan, dtype=np.float32)
    half = max(1, int(round(tile_px * scale / 2)))
    for (x, y), s in zip(np.asarray(coords) * scale - np.asarray(offset), scores):
        if np.isfinite(s):
            cx, cy = int(round(x)), int(round(y))
            if cx + half <= 0 or cy + half <= 0:
                continue
            canvas[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = s
    return canvas


def _lut(cmap: str) -> np.ndarray:
    """The colour map as a (256, 4) uint8 table (matplotlib colour maps hold 256 colours)."""
    return (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)


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
    offset: tuple[float, float] = (0.0, 0.0),
) -> Image.Image:
    """Blend a colour map of ``scores`` over ``thumbnail`` (slide px × ``scale`` − ``offset`` = thumbnail px;
    ``offset`` places a crop of a larger display image).

    Spots under ``threshold`` are drawn faintly; region outlines are drawn and numbered. Works in
    uint8 (a 256-colour table), so a large picture costs a few bytes per pixel.
    """
    h, w = thumbnail.shape[:2]
    raster = score_raster(coords, scores, tile_px, (h, w), scale, offset)
    finite = np.isfinite(raster)
    base = Image.fromarray(np.ascontiguousarray(thumbnail[..., :3])).convert("RGBA")
    if finite.any():
        lo = np.nanmin(scores) if vmin is None else vmin
        hi = np.nanmax(scores) if vmax is None else vmax
        norm = np.clip((np.nan_to_num(raster) - lo) / max(hi - lo, 1e-9), 0, 1)
        rgba = _lut(cmap)[np.minimum((norm * 256).astype(np.int16), 255)]  # as matplotlib indexes its colours
        a = np.where(finite, np.uint8(alpha * 255), np.uint8(0))
        if threshold is not None:
            a[finite & (raster < threshold)] = np.uint8(alpha * 0.25 * 255)
        rgba[..., 3] = a
        base = Image.alpha_composite(base, Image.fromarray(rgba))
    if regions:
        from ..tiles.preview import legend_font

        draw = ImageDraw.Draw(base)
        width = max(2, int(round(max(h, w) / 400)))
        shift = np.asarray(offset, dtype=float)
        for r in regions:
            for poly in r.polygons:
                pts = [tuple(p) for p in (poly * scale - shift)]
                if len(pts) > 2:
                    draw.line(pts + [pts[0]], fill=OUTLINE_COLOUR, width=width)
        font = legend_font(max(12, int(round(max(h, w) / 60))))
        for r in regions:  # numbered badges, readable at the picture's size
            cx, cy = np.asarray(r.centroid) * scale - shift
            text = str(r.id)
            tw = draw.textlength(text, font=font)
            rad = max(tw, font.size) / 2 + font.size * 0.3
            draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=(0, 59, 68, 255), outline=OUTLINE_COLOUR,
                         width=max(2, width))
            draw.text((cx, cy), text, fill=LABEL_COLOUR, font=font, anchor="mm")
    return base.convert("RGB")


def draw_colour_bar(img: Image.Image, vmin: float, vmax: float, threshold: float | None, label: str,
                    cmap: str = "inferno", outline_key: str = "region (numbered)") -> Image.Image:
    """A colour-bar inset (bottom-left): the colour map from ``vmin`` to ``vmax`` with the threshold
    marked, ``label`` above it and a key to the region outlines → a new RGB image."""
    from ..tiles.preview import legend_font

    out = img.convert("RGBA")
    side = max(out.size)
    fpx = max(10, int(round(side / 70)))
    font = legend_font(fpx)
    pad, bar_w, bar_h = fpx // 2, max(120, side // 4), max(8, fpx)
    w = max(bar_w, int(ImageDraw.Draw(out).textlength(label, font=font))) + 2 * pad
    h = pad * 2 + int(fpx * 1.4) + bar_h + 2 + 2 * fpx + 6 + fpx
    x0, y0 = pad, out.size[1] - h - pad
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    d.rectangle([x0, y0, x0 + w, y0 + h], fill=(255, 255, 255, 225), outline=(60, 60, 60, 255))
    d.text((x0 + pad, y0 + pad), label, fill=(20, 20, 20, 255), font=font)
    by = y0 + pad + int(fpx * 1.4)
    colours = (matplotlib.colormaps[cmap](np.linspace(0, 1, bar_w))[:, :3] * 255).astype(np.uint8)
    layer.paste(Image.fromarray(np.repeat(colours[None], bar_h, axis=0)), (x0 + pad, by))
    ty = by + bar_h + 2
    d.text((x0 + pad, ty), f"{vmin:.1f}", fill=(20, 20, 20, 255), font=font)
    hi = f"{vmax:.1f}"
    d.text((x0 + pad + bar_w - d.textlength(hi, font=font), ty), hi, fill=(20, 20, 20, 255), font=font)
    if threshold is not None and vmax > vmin:
        tx = x0 + pad + bar_w * float(np.clip((threshold - vmin) / (vmax - vmin), 0, 1))
        d.line([(tx, by - 3), (tx, by + bar_h + 3)], fill=OUTLINE_COLOUR, width=3)
        tl = f"threshold {threshold:g}"
        d.text((min(max(tx - d.textlength(tl, font=font) / 2, x0 + pad), x0 + w - pad - d.textlength(tl, font=font)),
                ty + fpx + 2), tl, fill=(0, 110, 125, 255), font=font)
    ky = ty + 2 * fpx + 6
    d.rectangle([x0 + pad, ky, x0 + pad + 2 * fpx, ky + fpx - 2], outline=OUTLINE_COLOUR, width=2)
    d.text((x0 + 3 * pad + 2 * fpx, ky - 2), outline_key, fill=(20, 20, 20, 255), font=font)
    return Image.alpha_composite(out, layer).convert("RGB")


#: colour scale of a relevance map: threshold − span[0] … threshold + span[1], the same on every slide
COLOUR_SPAN = (3.0, 2.0)


def colour_range(threshold: float, span: tuple[float, float] = COLOUR_SPAN) -> tuple[float, float]:
    """``(vmin, vmax)`` of the absolute colour scale around ``threshold`` (the scores' units)."""
    return float(threshold) - span[0], float(threshold) + span[1]


def score_label(result) -> str:
    """What the fused score of ``result`` is called on a colour bar (the result's own name for it when it has one)."""
    return getattr(result, "unit", None) or DEFAULT_SCORE_LABEL


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
                max_side: int | None = None, span: tuple[float, float] = COLOUR_SPAN, legend: str | None = None,
                **kwargs) -> Image.Image:
    """Overlay of a :class:`~spotwhisper.search.result.SlideHits` (fused relevance unless ``scores``),
    cropped to the spots plus ``margin`` spot spacings (None = whole slide), longer side ≤ ``max_side``;
    with ``legend`` (the score's name) a colour bar with the threshold is drawn in.

    Colours are absolute — ``threshold − span[0]`` … ``threshold + span[1]`` in the scores' units, the
    same on every slide — and a slide without a region (or answered by a caveat) gets an empty
    overlay: the slide alone, with its region-free answer in words beside it — or, on a slide unlike the training
    slides, its low-confidence candidates outlined (``hits.candidates``)."""
    from .. import keys
    from ..io.spatial import spot_spacing

    img, scale = display_image(hits.adata)
    coords = np.asarray(hits.adata.obsm[keys.SPATIAL], dtype=float)
    values = hits.fused if scores is None else scores
    shown = hits.regions or getattr(hits, "candidates", [])  # a slide without regions shows its low-confidence candidates
    if not shown:
        values = np.full(len(coords), np.nan)
    elif not hits.regions:
        keep = np.zeros(len(coords), dtype=bool)
        keep[np.concatenate([np.asarray(r.spots) for r in shown])] = True
        values = np.where(keep, values, np.nan)
    vmin, vmax = colour_range(threshold, span)
    kwargs.setdefault("vmin", vmin)
    kwargs.setdefault("vmax", vmax)
    box, size = frame(hits.adata, img.shape[:2], scale, max_side, margin)
    crop = img[box[1]:box[3], box[0]:box[2]]  # draw only what is shown
    out = render_overlay(crop, scale, coords, values, spot_spacing(hits.adata), threshold=threshold,
                         regions=shown, offset=(box[0], box[1]), **kwargs)
    out = out if out.size == size else out.resize(size, Image.BILINEAR)
    if legend:
        finite = np.asarray(values, dtype=float)[np.isfinite(values)]
        lo = kwargs.get("vmin", float(finite.min()) if len(finite) else 0.0)
        hi = kwargs.get("vmax", float(finite.max()) if len(finite) else 1.0)
        key = "region (numbered)" if hits.regions or not shown else "low-confidence candidate (numbered)"
        out = draw_colour_bar(out, lo, hi, threshold, legend, kwargs.get("cmap", "inferno"), key)
    return out
