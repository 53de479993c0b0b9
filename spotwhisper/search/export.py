"""Export a search result: CSV of spot scores, ``.h5ad``, and GeoJSON regions QuPath imports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..names import slug  # noqa: F401 - kept importable here: export names are slugs
from .regions import Region

QUPATH_COLOUR = [0, 200, 255]


def _atomic_text(path: Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


def regions_geojson(regions: list[Region], query: str, slide: str | None = None) -> dict:
    """GeoJSON FeatureCollection of region outlines in slide (level-0) pixels, QuPath-style.

    Each region becomes one annotation (``objectType: annotation``) whose classification is the
    query; a region with several outlines becomes a MultiPolygon.
    """
    features = []
    for r in regions:
        rings = [np.vstack([p, p[:1]]).round(1).tolist() for p in r.polygons if len(p) > 2]
        if not rings:
            continue
        geometry = {"type": "Polygon", "coordinates": [rings[0]]} if len(rings) == 1 else {
            "type": "MultiPolygon", "coordinates": [[ring] for ring in rings]}
        features.append({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "objectType": "annotation",
                "name": f"{query} — region {r.id}",
                "classification": {"name": query, "color": QUPATH_COLOUR},
                "measurements": {"spots": r.n_spots, "mean_score": round(r.mean_score, 4),
                                 "max_score": round(r.max_score, 4), "area_um2": round(r.area_um2, 1)},
                **({"slide": slide} if slide else {}),
            },
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(regions: list[Region], query: str, path: str | Path, slide: str | None = None) -> Path:
    return _atomic_text(Path(path), json.dumps(regions_geojson(regions, query, slide)))


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    return _atomic_text(Path(path), table.to_csv(index=False))
