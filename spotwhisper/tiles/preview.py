"""Preview PNG: the slide thumbnail with tissue outline, tile boxes and spot centres drawn on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io.slide import Slide
from .layout import TileLayout
from .tissue import TissueMask


def render_preview(
    slide: Slide,
    layout: TileLayout,
    tissue: TissueMask | None = None,
    max_side: int = 2000,
    show_subtiles: bool = True,
) -> Image.Image:
    """Draw ``layout`` on a thumbnail of ``slide`` (longer side ``max_side`` px).

    Tissue is tinted green, tile boxes are drawn in blue (red when the tile has < 25 % tissue),
    sub-tile lines in light blue, and spot centres as yellow dots.
    """
    thumb = slide.get_thumbnail(max_side)
    img = Image.fromarray(thumb).convert("RGBA")
    s = thumb.shape[1] / slide.dimensions[0]
    if tissue is not None:
        m = np.asarray(Image.fromarray(tissue.mask.astype(np.uint8) * 255).resize(img.size, Image.NEAREST)) > 0
        tint = np.zeros((*m.shape, 4), dtype=np.uint8)
        tint[m] = (0, 200, 0, 50)
        img = Image.alpha_composite(img, Image.fromarray(tint))
    draw = ImageDraw.Draw(img)
    boxes = layout.boxes * s
    frac = tissue.box_fraction(layout.boxes) if tissue is not None else None
    width = max(1, int(round(max_side / 1000)))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        colour = (220, 30, 30, 255) if frac is not None and frac[i] < 0.25 else (30, 90, 230, 255)
        if show_subtiles and layout.subtile_grid > 1:
            step = (x1 - x0) / layout.subtile_grid
            for k in range(1, layout.subtile_grid):
                draw.line([(x0 + k * step, y0), (x0 + k * step, y1)], fill=(120, 170, 255, 160))
                draw.line([(x0, y0 + k * step), (x1, y0 + k * step)], fill=(120, 170, 255, 160))
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        cx, cy = layout.centres[i] * s
        r = max(1.5, width)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 220, 0, 255))
    return img.convert("RGB")


def save_preview(img: Image.Image, path: str | Path) -> Path:
    """Save the preview as PNG, creating the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p, format="PNG")
    return p
