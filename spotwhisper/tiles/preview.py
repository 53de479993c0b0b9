"""Preview PNG: the slide thumbnail with tissue outline, tile boxes and spot centres drawn on it,
and a legend of what each colour means with a scale bar in µm (bottom-left inset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io.slide import Slide
from .layout import TileLayout
from .tissue import TissueMask

TISSUE_TINT = (0, 200, 0, 50)
TILE_COLOUR = (30, 90, 230, 255)
LOW_TISSUE_COLOUR = (220, 30, 30, 255)
SUBTILE_COLOUR = (120, 170, 255, 160)
CENTRE_COLOUR = (255, 220, 0, 255)
#: tiles with less tissue than this are drawn in red
LOW_TISSUE = 0.25


def render_preview(
    slide: Slide,
    layout: TileLayout,
    tissue: TissueMask | None = None,
    max_side: int = 2000,
    show_subtiles: bool = True,
) -> Image.Image:
    """Draw ``layout`` on a thumbnail of ``slide`` (longer side ``max_side`` px).

    Tissue is tinted green, tile boxes are drawn in blue (red when the tile has < 25 % tissue),
    sub-tile lines in light blue, and spot centres as yellow dots; a legend inset says so.
    """
    thumb = slide.get_thumbnail(max_side)
    img = Image.fromarray(thumb).convert("RGBA")
    s = thumb.shape[1] / slide.dimensions[0]
    if tissue is not None:
        m = np.asarray(Image.fromarray(tissue.mask.astype(np.uint8) * 255).resize(img.size, Image.NEAREST)) > 0
        tint = np.zeros((*m.shape, 4), dtype=np.uint8)
        tint[m] = TISSUE_TINT
        img = Image.alpha_composite(img, Image.fromarray(tint))
    draw = ImageDraw.Draw(img)
    boxes = layout.boxes * s
    frac = tissue.box_fraction(layout.boxes) if tissue is not None else None
    width = max(1, int(round(max_side / 1000)))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        colour = LOW_TISSUE_COLOUR if frac is not None and frac[i] < LOW_TISSUE else TILE_COLOUR
        if show_subtiles and layout.subtile_grid > 1:
            step = (x1 - x0) / layout.subtile_grid
            for k in range(1, layout.subtile_grid):
                draw.line([(x0 + k * step, y0), (x0 + k * step, y1)], fill=SUBTILE_COLOUR)
                draw.line([(x0, y0 + k * step), (x1, y0 + k * step)], fill=SUBTILE_COLOUR)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        cx, cy = layout.centres[i] * s
        r = max(1.5, width)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=CENTRE_COLOUR)
    draw_legend(img, layout, s, show_subtiles and layout.subtile_grid > 1, tissue is not None)
    return img.convert("RGB")


def legend_font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib; has µ and ×) at ``size`` px, else Pillow's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size=size)


def _nice_length(um: float) -> float:
    p = 10 ** np.floor(np.log10(um))
    return float(next(m * p for m in (5, 2, 1) if m * p <= um))


def draw_legend(img: Image.Image, layout: TileLayout, scale: float, subtiles: bool, tissue: bool) -> None:
    """Legend inset (bottom-left) of ``img`` (RGBA, ``scale`` image px per slide px): tissue, tile
    kinds, sub-tiles, centres, and a scale bar in µm when the slide's µm/px is known."""
    side = max(img.size)
    font_px = max(10, int(round(side / 70)))
    font = legend_font(font_px)
    rows: list[tuple[str, str]] = []
    if tissue:
        rows.append(("tissue", "tissue (mask)"))
    name = "spot tile" if layout.kind == "spot" else "grid tile"
    rows.append(("tile", f"{name}, {layout.side_um:.0f} µm"))
    if tissue:
        rows.append(("low", f"{name} with < {LOW_TISSUE:.0%} tissue"))
    if subtiles:
        rows.append(("sub", f"{layout.subtile_grid}×{layout.subtile_grid} sub-tiles"))
    rows.append(("centre", "spot centre" if layout.kind == "spot" else "tile centre"))
    pad, sw = font_px // 2, font_px * 2
    bar_um = _nice_length(side / 5 / scale * layout.mpp) if layout.mpp else None
    bar_px = bar_um / layout.mpp * scale if bar_um else 0
    line_h = int(font_px * 1.4)
    text_w = max(ImageDraw.Draw(img).textlength(t, font=font) for _, t in rows)
    w = int(max(pad * 3 + sw + text_w, pad * 2 + bar_px))
    h = pad * 2 + line_h * len(rows) + (line_h * 2 if bar_um else 0)
    box = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(box)
    x0, y0 = pad, img.size[1] - h - pad
    d.rectangle([x0, y0, x0 + w, y0 + h], fill=(255, 255, 255, 225), outline=(60, 60, 60, 255))
    for i, (kind, text) in enumerate(rows):
        y = y0 + pad + i * line_h
        sx0, sy0, sx1, sy1 = x0 + pad, y + 2, x0 + pad + sw, y + line_h - 4
        if kind == "tissue":
            d.rectangle([sx0, sy0, sx1, sy1], fill=(120, 210, 120, 255))
        elif kind in ("tile", "low"):
            d.rectangle([sx0, sy0, sx1, sy1], outline=TILE_COLOUR if kind == "tile" else LOW_TISSUE_COLOUR, width=2)
        elif kind == "sub":
            d.rectangle([sx0, sy0, sx1, sy1], outline=TILE_COLOUR, width=1)
            for k in range(1, layout.subtile_grid):
                xk = sx0 + k * (sx1 - sx0) / layout.subtile_grid
                d.line([(xk, sy0), (xk, sy1)], fill=SUBTILE_COLOUR[:3] + (255,))
        else:
            cx, cy, r = (sx0 + sx1) / 2, (sy0 + sy1) / 2, max(2, font_px / 4)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=CENTRE_COLOUR)
        d.text((sx1 + pad, y), text, fill=(20, 20, 20, 255), font=font)
    if bar_um:
        y = y0 + pad + line_h * len(rows) + line_h // 2
        d.rectangle([x0 + pad, y, x0 + pad + bar_px, y + max(3, font_px // 4)], fill=(20, 20, 20, 255))
        label = f"{bar_um / 1000:g} mm" if bar_um >= 1000 else f"{bar_um:g} µm"
        d.text((x0 + pad, y + font_px // 3 + 2), label, fill=(20, 20, 20, 255), font=font)
    img.alpha_composite(box)


def save_preview(img: Image.Image, path: str | Path) -> Path:
    """Save the preview as PNG (atomically), creating the parent folder."""
    from ..atomic import atomic_file

    p = Path(path)
    with atomic_file(p, suffix=".part.png") as tmp:
        img.save(tmp, format="PNG")
    return p
