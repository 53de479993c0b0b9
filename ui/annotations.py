"""A session's annotations: regions kept from answers (or loaded), saved and reloaded as GeoJSON.

An annotation is a plain dict — ``slide``, ``label``, ``query``, ``region``, ``polygons`` (closed
outlines in slide px, the coordinates of ``obsm["spatial"]``), ``area_mm2`` — so it lives in the
session's :class:`~spotwhisper.ui.handlers.View`. :func:`to_geojson` writes them as a QuPath-style
FeatureCollection (``objectType: annotation``, a classification named by the label); :func:`from_geojson`
reads such a file back (ours, or QuPath's own export: Polygon / MultiPolygon features).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spotwhisper.atomic import atomic_file
from spotwhisper.names import unique_path

#: QuPath colour of kept annotations (yellow, as the viewer draws them)
COLOUR = [255, 230, 0]
MAX_FEATURES = 5000
MAX_POINTS = 200_000


def from_regions(hits, label: str, query: str) -> list[dict]:
    """One annotation per region of a :class:`~spotwhisper.search.engine.SlideHits`."""
    out = []
    for r in hits.regions:
        polys = [np.round(np.asarray(p, dtype=float), 1).tolist() for p in r.polygons if len(p) > 2]
        if polys:
            out.append({"slide": hits.slide, "label": label or query, "query": query, "region": int(r.id),
                        "polygons": polys, "area_mm2": round(r.area_um2 / 1e6, 4)})
    return out


def to_geojson(annotations: list[dict]) -> dict:
    """A GeoJSON FeatureCollection of ``annotations`` (QuPath imports it: File › Import objects)."""
    features = []
    for a in annotations:
        rings = [p + [p[0]] if p[0] != p[-1] else p for p in a["polygons"]]
        geometry = ({"type": "Polygon", "coordinates": [rings[0]]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]})
        name = a.get("label") or a.get("query") or "annotation"
        features.append({"type": "Feature", "geometry": geometry, "properties": {
            "objectType": "annotation", "name": name, "classification": {"name": name, "color": COLOUR},
            "slide": a.get("slide"), "query": a.get("query"), "region": a.get("region"),
            "measurements": {"area_mm2": a.get("area_mm2")}}})
    return {"type": "FeatureCollection", "features": features}


def save_geojson(annotations: list[dict], folder: str | Path, stem: str = "annotations") -> Path:
    """Write ``annotations`` as ``<folder>/<stem>[-n].geojson`` (a name not yet used there), atomically."""
    path = unique_path(folder, stem, [".geojson"]).with_suffix(".geojson")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(to_geojson(annotations)))
    return path


def _rings(geometry: dict) -> list[list[list[float]]]:
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        polys = [coords]
    elif kind == "MultiPolygon":
        polys = coords
    else:
        raise ValueError(f"only Polygon and MultiPolygon outlines can be shown, not {kind!r}")
    rings = []
    for poly in polys or []:
        if poly and len(poly[0]) >= 3:
            rings.append([[float(x), float(y)] for x, y, *_ in poly[0]])  # outer ring; holes are not drawn
    return rings


def from_geojson(data: str | bytes | dict, default_slide: str | None = None) -> list[dict]:
    """Annotations from a GeoJSON Feature or FeatureCollection; a feature without a ``slide``
    property goes on ``default_slide``. ``ValueError`` with the reason for a file that is not one."""
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"not a GeoJSON file (not JSON: {err})") from err
    if not isinstance(data, dict):
        raise ValueError("not a GeoJSON file (expected a FeatureCollection or a Feature)")
    features = data.get("features") if data.get("type") == "FeatureCollection" else [data]
    if not isinstance(features, list) or not all(isinstance(f, dict) and f.get("type") == "Feature" for f in features):
        raise ValueError("not a GeoJSON file (expected a FeatureCollection or a Feature)")
    if len(features) > MAX_FEATURES:
        raise ValueError(f"{len(features)} outlines is more than the viewer shows ({MAX_FEATURES})")
    out, points = [], 0
    for f in features:
        props = f.get("properties") or {}
        rings = _rings(f.get("geometry") or {})
        points += sum(len(r) for r in rings)
        if points > MAX_POINTS:
            raise ValueError(f"the outlines have more than {MAX_POINTS:,} points; simplify them first")
        cls = props.get("classification") or {}
        label = props.get("name") or (cls.get("name") if isinstance(cls, dict) else None) or "annotation"
        if rings:
            out.append({"slide": props.get("slide") or default_slide, "label": str(label)[:80],
                        "query": props.get("query"), "region": props.get("region"), "polygons": rings,
                        "area_mm2": (props.get("measurements") or {}).get("area_mm2")})
    if not out:
        raise ValueError("the file holds no polygon outlines")
    return out
