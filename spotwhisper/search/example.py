"""Search by example: spots of one slide (a region, a selection, an annotation) as the query.

An :class:`Example` is a set of spots on one slide. Each example route (:data:`~.scoring.EXAMPLE_ROUTES`:
the pooled image vector, the transcriptome embedding and the aligned image embedding) turns it into
a prototype — the normalised mean of the example spots' unit vectors — and scores every spot of a
searched slide by its cosine to it. Cosines are calibrated on the *example's* slide, never on the
searched one, so a spot's relevance does not depend on which slides are searched with it:

* ``F`` is the distribution of the cosine to the prototype over the example slide's other spots;
* the *hit level* is how alike the example's own spots are: the median, over its spots, of the
  cosine of one spot to the prototype of the others (a one-spot example: ``F``'s
  ``like.hit_quantile``), kept at or above ``F``'s ``like.min_hit_quantile``;
* relevance = ``logit F(cos) − logit F(hit level) + threshold`` — a spot as alike to the example as
  its own spots are sits exactly at the search threshold (the protein route's mapping,
  :func:`~.relevance.level_relevance`).

Routes are fused by ``like.weights`` (``configs/search.yaml``), regions and explanations follow as
for a text query. The image vector route compares only slides read by the same image encoder (the
vectors of different encoders live in different spaces); elsewhere it is left out, with a note.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np

from .. import keys
from ..pipeline import image_space
from .config import SearchConfig
from .relevance import level_relevance

#: percentiles the calibration keeps of the example slide's cosines (0th … 100th)
PERCENTILES = np.linspace(0.0, 100.0, 101)


@dataclass
class Example:
    """The query of a search by example: ``spots`` (indices into ``slide``'s AnnData) and how they
    were given (``label``, e.g. "C2 region 1 (3 spots)")."""

    slide: str
    spots: np.ndarray
    label: str = ""

    def __post_init__(self) -> None:
        self.spots = np.unique(np.asarray(self.spots, dtype=np.int64))
        if len(self.spots) == 0:
            raise ValueError(f"an example needs at least one spot of {self.slide} (none was selected)")
        if not self.label:
            self.label = f"{self.slide} ({len(self.spots)} spot{'s' if len(self.spots) != 1 else ''})"


@dataclass
class Prototype:
    """One route's view of an example: the prototype ``vector`` ``(D,)`` in obsm ``key``, the
    example slide's cosine ``quantiles`` ``(101,)`` over ``n_reference`` spots, the hit quantile, and
    the image ``space`` (encoder) for the image vector route."""

    route: str
    key: str
    vector: np.ndarray
    quantiles: np.ndarray
    n_reference: int
    hit_quantile: float
    space: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ExampleQuery:
    """What a search by example searched with: the :class:`Example` and each route's :class:`Prototype`."""

    example: Example
    prototypes: dict[str, Prototype]

    def vector(self, route: str) -> np.ndarray | None:
        """The prototype ``(D,)`` of ``route``, or None when that route did not take part."""
        p = self.prototypes.get(route)
        return None if p is None else p.vector


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``(n, D)`` scaled to unit length (float64; zero rows stay zero)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _mean_direction(rows: np.ndarray) -> np.ndarray:
    v = rows.mean(axis=0)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def prototype(adata: ad.AnnData, spots: np.ndarray, route: str, key: str, cfg: SearchConfig) -> Prototype:
    """The prototype of ``spots`` of ``adata`` in obsm ``key`` and its calibration on ``adata`` (see the module docstring)."""
    emb = unit_rows(adata.obsm[key])
    spots = np.asarray(spots, dtype=np.int64)
    q = _mean_direction(emb[spots])
    rest = np.setdiff1d(np.arange(adata.n_obs), spots)
    ref = emb[rest] @ q if len(rest) else emb @ q
    quantiles = np.percentile(ref, PERCENTILES)
    like = cfg.like
    if len(spots) >= 2:
        loo = [float(emb[i] @ _mean_direction(emb[np.setdiff1d(spots, [i])])) for i in spots]
        level = float(np.median(loo))
        hit = float(np.interp(level, quantiles, PERCENTILES / 100.0, left=0.0, right=1.0))
    else:
        hit = like.hit_quantile
    eps = 0.5 / max(len(ref), 1)
    hit = float(np.clip(hit, like.min_hit_quantile, 1.0 - eps))
    return Prototype(route, key, q, quantiles, len(ref), hit, image_space(adata) if key == keys.IMAGE_VEC else None)


def prototypes(adata: ad.AnnData, example: Example, routes: Mapping[str, str], weights: Mapping[str, float],
               cfg: SearchConfig) -> dict[str, Prototype]:
    """A :class:`Prototype` for every route (name → obsm key) with weight > 0 that the example's slide holds."""
    if int(example.spots.max()) >= adata.n_obs:
        raise ValueError(f"example spot index {int(example.spots.max())} is outside {example.slide} ({adata.n_obs} spots)")
    return {r: prototype(adata, example.spots, r, k, cfg) for r, k in routes.items()
            if weights.get(r, 0) > 0 and k in adata.obsm}


def like_scores(adata: ad.AnnData, protos: Mapping[str, Prototype], cfg: SearchConfig
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """``(raw cosines, relevance, notes)`` per route on one slide: ``(n,)`` each, for the routes whose
    vectors the slide holds (the image vector route only on slides of the example's image encoder)."""
    raw, rel, notes = {}, {}, []
    slide = str(adata.obs[keys.SECTION].iloc[0]) if keys.SECTION in adata.obs and adata.n_obs else "slide"
    for route, p in protos.items():
        if p.key not in adata.obsm:
            continue
        if p.space is not None and image_space(adata) != p.space:
            notes.append(f"Image vector route: {slide} was read by {image_space(adata) or 'another encoder'}, the example "
                         f"by {p.space}; their image vectors are not comparable, so only the other routes scored it.")
            continue
        cos = unit_rows(adata.obsm[p.key]) @ p.vector
        mapping = dataclasses.replace(cfg.relevance, protein_hit_quantile=p.hit_quantile)
        raw[route] = cos
        rel[route] = level_relevance(cos, p.quantiles, mapping, p.n_reference)
    return raw, rel, notes


# -- where the example comes from -------------------------------------------------------------------
def spots_by_name(adata: ad.AnnData, names: Sequence[str], slide: str = "") -> np.ndarray:
    """Indices of spots named in ``names`` (obs names, or obs names without the ``<slide>_`` prefix)."""
    index = {str(n): i for i, n in enumerate(adata.obs_names)}
    out, missing = [], []
    for n in map(str, names):
        i = index.get(n, index.get(f"{slide}_{n}"))
        (out if i is not None else missing).append(i if i is not None else n)
    if missing:
        raise KeyError(f"{slide or 'the slide'} has no spot(s) {missing[:5]} (spots are named like "
                       f"{', '.join(map(str, adata.obs_names[:3]))})")
    return np.asarray(out, dtype=np.int64)


def spots_in_box(adata: ad.AnnData, box: Sequence[float]) -> np.ndarray:
    """Indices of spots whose centre (``obsm["spatial"]``, full-resolution px) lies in ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = map(float, box)
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    inside = (xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1)) & (xy[:, 1] >= min(y0, y1)) & (xy[:, 1] <= max(y0, y1))
    return np.flatnonzero(inside)


def read_geojson(source: str | Path | Mapping) -> dict:
    """A GeoJSON object from a dict or a file; ``ValueError`` naming the file when it is not GeoJSON."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GeoJSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable GeoJSON file ({err})") from err
    if not isinstance(data, (dict, list)):
        raise ValueError(f"{path}: not GeoJSON (expected a FeatureCollection, Feature or geometry)")
    return data if isinstance(data, dict) else {"type": "FeatureCollection", "features": data}


def _polygons(geo: Mapping) -> list[tuple[list, Mapping]]:
    """``(rings, properties)`` of every (Multi)Polygon in a GeoJSON object (a QuPath export is a list of Features)."""
    kind = geo.get("type")
    if kind == "FeatureCollection":
        return [p for f in geo.get("features", []) for p in _polygons(f)]
    if kind == "Feature":
        return [(rings, geo.get("properties") or {}) for rings, _ in _polygons(geo.get("geometry") or {})]
    if kind == "Polygon":
        return [(geo.get("coordinates") or [], {})]
    if kind == "MultiPolygon":
        return [(rings, {}) for rings in geo.get("coordinates") or []]
    if kind == "GeometryCollection":
        return [p for g in geo.get("geometries", []) for p in _polygons(g)]
    return []


def geojson_slide(geo: Mapping) -> str | None:
    """The slide a GeoJSON names in its features' ``properties.slide`` (SpotWhisper's exports), or None."""
    names = {str(props["slide"]) for _, props in _polygons(geo) if props.get("slide")}
    return names.pop() if len(names) == 1 else None


def spots_in_geojson(adata: ad.AnnData, geo: Mapping, scale: float = 1.0) -> np.ndarray:
    """Indices of spots whose centre lies inside a polygon of ``geo`` (outer ring minus holes), in slide
    px (QuPath and SpotWhisper exports); ``scale`` maps ``obsm["spatial"]`` to those px."""
    from matplotlib.path import Path as Outline

    polys = _polygons(geo)
    if not polys:
        raise ValueError("the GeoJSON holds no polygon (expected QuPath annotations or SpotWhisper regions)")
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float) * scale
    inside = np.zeros(len(xy), dtype=bool)
    for rings, _ in polys:
        if not rings or len(rings[0]) < 3:
            continue
        hit = Outline(np.asarray(rings[0], dtype=float)[:, :2]).contains_points(xy)
        for hole in rings[1:]:
            if len(hole) >= 3:
                hit &= ~Outline(np.asarray(hole, dtype=float)[:, :2]).contains_points(xy)
        inside |= hit
    return np.flatnonzero(inside)


def parse_like(text: str) -> tuple[str, list[str] | list[float]]:
    """``SLIDE:REGION`` of the command line → ``(slide, spot names)`` or ``(slide, [x0, y0, x1, y1])``:
    REGION is comma-separated spot ids (``C2:10x21,10x22``) or a box of four numbers in full-resolution
    px (``C2:4000,5000,5600,6200``)."""
    slide, sep, region = str(text).partition(":")
    if not sep or not slide.strip() or not region.strip():
        raise ValueError(f"--like {text!r}: expected SLIDE:SPOT[,SPOT…] or SLIDE:X0,Y0,X1,Y1 (e.g. C2:10x21,10x22)")
    parts = [p.strip() for p in region.split(",") if p.strip()]
    try:
        box = [float(p) for p in parts]
    except ValueError:
        return slide.strip(), parts
    if len(box) != 4:
        raise ValueError(f"--like {text!r}: a box needs four numbers X0,Y0,X1,Y1 (full-resolution px), got {len(box)}")
    return slide.strip(), box


def region_spots(adata: ad.AnnData, region: int, key: str = "search") -> np.ndarray:
    """Spots of region ``region`` of a search written into ``adata`` under ``key`` (``obs["<key>_region"]``)."""
    col = key + keys.REGION_SUFFIX
    if col not in adata.obs:
        raise KeyError(f"no obs[{col!r}]: search first (spotwhisper.tl.search(adata, ..., key_added={key!r}))")
    spots = np.flatnonzero(adata.obs[col].to_numpy() == int(region))
    if not len(spots):
        ids = sorted(set(int(v) for v in adata.obs[col].to_numpy()) - {0})
        raise ValueError(f"no region {region} in obs[{col!r}] (regions: {ids or 'none'})")
    return spots


def example_spots(adata: ad.AnnData, spec, slide: str = "", key: str = "search") -> tuple[np.ndarray, str]:
    """Resolve what a user gives as an example on one slide → ``(spot indices, label)``.

    ``spec``: spot indices (ints), a boolean mask ``(n,)``, spot names (obs names), a region id of a
    search written under ``key`` (an ``int`` alone), a box ``(x0, y0, x1, y1)`` in full-resolution px
    (``{"box": …}``), or a GeoJSON (dict, or a path to a ``.geojson`` / ``.json`` file).
    """
    name = slide or (str(adata.obs[keys.SECTION].iloc[0]) if keys.SECTION in adata.obs and adata.n_obs else "slide")
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return region_spots(adata, int(spec), key), f"{name} region {int(spec)}"
    if isinstance(spec, Mapping) and "box" in spec:
        return spots_in_box(adata, spec["box"]), f"{name} box {tuple(round(float(v)) for v in spec['box'])}"
    if isinstance(spec, Mapping) or (isinstance(spec, (str, Path)) and str(spec).lower().endswith((".geojson", ".json"))):
        found = spots_in_geojson(adata, read_geojson(spec))
        if not len(found):
            raise ValueError(f"no spot of {name} lies inside the GeoJSON's polygons (are they in this slide's px?)")
        where = Path(str(spec)).name if isinstance(spec, (str, Path)) else "GeoJSON"
        return found, f"{name} annotation {where}"
    arr = np.asarray(spec)
    if arr.dtype == bool:
        if arr.shape != (adata.n_obs,):
            raise ValueError(f"a boolean example mask needs {adata.n_obs} values for {name}, got {arr.shape}")
        return np.flatnonzero(arr), f"{name} selection"
    if arr.dtype.kind in "iu":
        if len(arr) and (arr.min() < 0 or arr.max() >= adata.n_obs):
            raise ValueError(f"example spot indices must lie in [0, {adata.n_obs}) for {name}")
        return arr.astype(np.int64).ravel(), f"{name} selection"
    return spots_by_name(adata, [str(s) for s in np.atleast_1d(arr)], name), f"{name} selection"
