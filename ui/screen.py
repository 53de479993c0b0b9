"""What the slide viewer shows for a session's :class:`~spotwhisper.ui.handlers.View` (no Gradio here).

:func:`viewer_payload` turns the view into the JSON the browser's viewer reads (``ui/static/viewer.js``):
the slide's deep-zoom URL (a token of this session, :class:`~spotwhisper.ui.viewer.ViewerRegistry`),
the heat map or comparison picture, the colour bar or legend, numbered region outlines, the
session's annotations on this slide, and a message when there is nothing to colour.
:func:`region_at` maps a click on the viewer back to a region.

The viewer shows the slide's source image (full resolution, read tile by tile). A slide whose source
image is gone (e.g. an AnnData moved to another machine) is shown from its display image instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spotwhisper import keys
from spotwhisper.io.slide import ArraySlide
from spotwhisper.io.spatial import open_source_slide, spot_spacing

from .handlers import View, tissue_share
from .layers import (
    CLASS_COLOURS,
    class_layer,
    heat_layer,
    region_marks,
    score_scale,
    source_geometry,
)
from .viewer import ViewerRegistry

#: a slide opens framed on its spots plus this many spot spacings
FIT_MARGIN = 1.5


def _spatial(adata) -> dict:
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    return adata.uns[keys.SPATIAL][lib] if lib else {}


def image_shown(adata) -> tuple[str, float, object]:
    """``(key, scale, opener)`` of the image the viewer shows for ``adata``: its source image when the
    file is there (``scale`` = ``source_image_scale``), else its display image (``tissue_hires_scalef``)."""
    info = _spatial(adata)
    meta = info.get("metadata", {})
    path = meta.get(keys.SOURCE_IMAGE)
    if path and Path(str(path)).is_file():
        return f"file:{path}", float(meta.get(keys.SOURCE_IMAGE_SCALE, 1.0)), lambda: open_source_slide(adata)
    hires = info.get("images", {}).get("hires")
    if hires is None:
        raise ValueError("this slide has neither its source image nor a display image to show")
    scale = float(info["scalefactors"][keys.HIRES_SCALEF])
    name = f"display:{id(hires)}"
    return name, scale, lambda: (ArraySlide(np.asarray(hires), name="display image"), scale)


def viewer_payload(registry: ViewerRegistry, session: str, owner: str | None, engine, view: View,
                   key: str = "main", slide: str | None = None) -> dict:
    """The viewer's JSON for ``slide`` (default: the one on screen) in this session's ``view``."""
    slide = slide or view.slide
    if slide is None:
        return {"key": key, "dzi": None, "message": "No slides yet: upload one below."}
    adata = engine.slide(slide)
    image_key, scale, opener = image_shown(adata)
    token = registry.token(session, f"{slide}|{image_key}", opener, owner)
    dz, _, _ = registry.opened(token)
    coords, tile, mpp = source_geometry(adata, scale)
    pad = FIT_MARGIN * tile
    lo, hi = coords.min(0) - pad, coords.max(0) + pad
    out = {"key": key, "slide": slide, "dzi": registry.url(token), "width": dz.width, "height": dz.height,
           "mpp": round(mpp, 6), "layer": None, "scale": None, "regions": [], "annotations": [],
           "message": view.message,
           "fit": {"x": round(float(lo[0]), 1), "y": round(float(lo[1]), 1),
                   "w": round(float(hi[0] - lo[0]), 1), "h": round(float(hi[1] - lo[1]), 1)}}
    comp = view.comparison if view.comparison is not None and view.comparison.slide == slide else None
    hits = view.hits(slide)
    if comp is not None and not view.message:
        layer = class_layer(coords, comp.classes, tile)
        out["layer"] = {"url": registry.add_layer(token, layer), **layer.box()}
        out["scale"] = {"kind": "classes", "items": [
            {"colour": CLASS_COLOURS[r["class"]], "label": r["label"],
             "detail": f"{r['spots']} spots, {r['area_mm2']:.2f} mm², {r['percent_tissue']:.0f}% of the tissue"}
            for r in comp.legend()]}
    elif hits is not None and not view.message:
        scale_bar = score_scale(view.shown, view.threshold)
        # no region at this threshold: an empty overlay (the answer says so), as in the CLI's overlays —
        # on a slide unlike the training slides, its low-confidence candidates instead, outlined as such
        marked = hits.regions or hits.candidates
        shown = np.full(len(coords), np.nan)
        if marked:
            keep = np.zeros(len(coords), dtype=bool)
            keep[np.concatenate([np.asarray(r.spots) for r in marked])] = True
            shown = np.where(keep, hits.fused, np.nan) if not hits.regions else hits.fused
        layer = heat_layer(coords, shown, tile, scale_bar["min"], scale_bar["max"], view.threshold)
        out["layer"] = {"url": registry.add_layer(token, layer), **layer.box()}
        out["scale"] = scale_bar
        share = {r.id: tissue_share(hits, r) for r in marked}
        out["regions"] = region_marks(marked, scale, share)
        out["confidence"] = hits.confidence
        if hits.familiarity.get("sentence") and hits.confidence == "low" and not out["message"]:
            out["message"], out["info"] = f"{hits.slide}: {hits.familiarity['sentence']}" + (
                "; the outlines are low-confidence candidates, not findings" if not hits.regions and marked else "") + (
                f"; {hits.specificity.sentence(view.shown.query.positive)}" if hits.specificity is not None and not hits.regions else ""), True
    out["annotations"] = [annotation_mark(a, scale) for a in view.annotations if a.get("slide") == slide]
    return out


def annotation_mark(a: dict, scale: float) -> dict:
    """An annotation as the viewer draws it: outlines in shown-image px and a label at the first outline's centre."""
    polys = [(np.asarray(p, dtype=float) * scale).round(1).tolist() for p in a["polygons"]]
    first = np.asarray(polys[0])
    title = f"{a.get('label')}" + (f" (from '{a['query']}', region {a['region']})" if a.get("query") else "")
    return {"label": str(a.get("label") or "")[:40], "title": title, "x": float(first[:, 0].mean()),
            "y": float(first[:, 1].mean()), "polygons": polys}


def region_at(view: View, engine, slide: str, x: float, y: float) -> int | None:
    """The region under a click at ``(x, y)`` px of the image shown for ``slide``, or None."""
    hits = view.hits(slide)
    if hits is None or not hits.regions:
        return None
    _, scale, _ = image_shown(engine.slide(slide))
    coords = np.asarray(hits.adata.obsm[keys.SPATIAL], dtype=float)
    d = np.hypot(coords[:, 0] - x / scale, coords[:, 1] - y / scale)
    spot = int(np.argmin(d))
    if d[spot] > spot_spacing(hits.adata) / 2 * np.sqrt(2):
        return None
    return next((r.id for r in hits.regions if spot in set(np.asarray(r.spots).tolist())), None)
