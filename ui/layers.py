"""What the slide viewer draws over the slide, as plain data (no Gradio, no browser).

* :func:`heat_layer` — the score of every spot as an RGBA PNG over the spots' bounding box
  (slide px), coloured on the result's score scale; spots below the threshold are faint.
* :func:`class_layer` — a comparison's classes (A, B, both) as an RGBA PNG in fixed colours.
* :func:`score_scale` — the colour bar: score name, range and threshold, read from the result.
* :func:`region_marks` — numbered region outlines and labels (slide px) with their numbers.

Coordinates are pixels of the slide image the viewer shows (the source image: ``obsm["spatial"]``
times the library's ``source_image_scale``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image

from spotwhisper import keys
from spotwhisper.io.spatial import spot_spacing
from spotwhisper.search.render import colour_range, score_label, score_raster

#: colour map of the heat map (perceptually uniform, readable in grey)
CMAP = "inferno"
#: alpha of spots at / above and below the threshold (the viewer's opacity slider scales both)
ALPHA_HIT, ALPHA_BELOW = 235, 80
#: comparison colours (Okabe–Ito, colour-blind safe): only A, only B, both
CLASS_COLOURS = {1: "#0072B2", 2: "#E69F00", 3: "#CC79A7"}
#: longest side of an overlay PNG (px); spots stay sharp squares at any zoom (nearest-neighbour)
MAX_OVERLAY_PX = 2048
#: overlay pixels per spot tile side, at most
CELLS_PER_SPOT = 4


@dataclass
class Layer:
    """An RGBA picture to place over the slide at ``(x, y, w, h)`` slide px."""

    png: bytes
    x: float
    y: float
    w: float
    h: float

    def box(self) -> dict:
        return {"x": round(self.x, 2), "y": round(self.y, 2), "w": round(self.w, 2), "h": round(self.h, 2)}


def source_geometry(adata, scale: float) -> tuple[np.ndarray, float, float]:
    """Spot centres ``(n, 2)`` and tile side in px of the image shown (``obsm["spatial"]`` × ``scale``),
    and µm per px of that image (0 when unknown)."""
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    info = adata.uns[keys.SPATIAL][lib] if lib else {}
    mpp = float(info.get("scalefactors", {}).get(keys.MPP, 0.0) or 0.0)
    coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale
    return coords, spot_spacing(adata) * scale, (mpp / scale if mpp else 0.0)


def _canvas(coords: np.ndarray, tile_px: float) -> tuple[float, float, float, float, float, tuple[int, int]]:
    lo = coords.min(0) - tile_px / 2
    hi = coords.max(0) + tile_px / 2
    w, h = hi - lo
    f = min(CELLS_PER_SPOT / tile_px, MAX_OVERLAY_PX / max(w, h))
    shape = (max(1, int(np.ceil(h * f))), max(1, int(np.ceil(w * f))))
    return float(lo[0]), float(lo[1]), float(w), float(h), f, shape


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def heat_layer(coords: np.ndarray, values: np.ndarray, tile_px: float, vmin: float, vmax: float,
               threshold: float | None) -> Layer:
    """Spot squares (side ``tile_px``) coloured by ``values`` on ``[vmin, vmax]`` (NaN = transparent)."""
    x, y, w, h, f, shape = _canvas(coords, tile_px)
    raster = score_raster(coords - (x, y), np.asarray(values, dtype=float), tile_px, shape, f)
    finite = np.isfinite(raster)
    norm = np.clip((np.nan_to_num(raster) - vmin) / max(vmax - vmin, 1e-9), 0, 1)
    rgba = (matplotlib.colormaps[CMAP](norm) * 255).astype(np.uint8)
    alpha = np.where(finite, ALPHA_HIT, 0)
    if threshold is not None:
        alpha = np.where(finite & (np.nan_to_num(raster, nan=-np.inf) < threshold), ALPHA_BELOW, alpha)
    rgba[..., 3] = alpha.astype(np.uint8)
    return Layer(_png(rgba), x, y, w, h)


def class_layer(coords: np.ndarray, classes: np.ndarray, tile_px: float) -> Layer:
    """Spot squares coloured by class (1 = only A, 2 = only B, 3 = both; 0 = transparent)."""
    x, y, w, h, f, shape = _canvas(coords, tile_px)
    values = np.where(np.asarray(classes) > 0, np.asarray(classes, dtype=float), np.nan)
    raster = score_raster(coords - (x, y), values, tile_px, shape, f)
    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    for c, hexcol in CLASS_COLOURS.items():
        m = raster == c
        rgba[m] = (*(int(hexcol[i:i + 2], 16) for i in (1, 3, 5)), ALPHA_HIT)
    return Layer(_png(rgba), x, y, w, h)


def score_scale(result, threshold: float | None = None) -> dict:
    """Colour-bar data of a search result: score name, ``min``/``max``, ``threshold`` and the CSS gradient.

    The scale is absolute (:func:`spotwhisper.search.render.colour_range` around the threshold, the
    same on every slide and for every query), as in the CLI's overlays, so a colour means the same
    relevance everywhere; everything else is read from the result."""
    thr = float(result.threshold if threshold is None else threshold)
    lo, hi = colour_range(thr)
    return {"kind": "continuous", "label": score_label(result), "min": round(lo, 3), "max": round(hi, 3),
            "threshold": round(thr, 3), "gradient": css_gradient(CMAP)}


def css_gradient(cmap: str = CMAP, stops: int = 11) -> str:
    """``linear-gradient(to right, …)`` of a matplotlib colour map."""
    cm = matplotlib.colormaps[cmap]
    parts = [f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {100 * i / (stops - 1):.0f}%"
             for i, (r, g, b, _) in enumerate(cm(np.linspace(0, 1, stops)))]
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def _simplify(poly: np.ndarray, max_points: int = 400) -> list[list[float]]:
    step = max(1, int(np.ceil(len(poly) / max_points)))
    return np.round(np.asarray(poly)[::step], 1).tolist()


def region_marks(regions, scale: float, share: dict[int, float] | None = None) -> list[dict]:
    """Outline polygons and label position of each region in source px, with a one-line title."""
    out = []
    for r in regions:
        pct = f", {share[r.id]:.1f}% of the tissue" if share and r.id in share else ""
        out.append({
            "id": int(r.id),
            "x": round(float(r.centroid[0]) * scale, 1),
            "y": round(float(r.centroid[1]) * scale, 1),
            "title": f"region {r.id}: {r.n_spots} spots, {r.area_um2 / 1e6:.2f} mm²{pct}, mean score {r.mean_score:.2f}"
                     " — click to explain",
            "polygons": [_simplify(np.asarray(p) * scale) for p in r.polygons if len(p) > 2],
        })
    return out
