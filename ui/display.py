"""What the UI shows: the heat-map overlay, top-tile gallery and the evidence tables.

The overlay is drawn on the slide's display image (``uns["spatial"][lib]["images"]["hires"]``),
shrunk to at most ``max_side`` px for the browser; gallery tiles are read from the
full-resolution source image, so a huge slide stays sharp where it matters.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image

from spotwhisper import keys
from spotwhisper.io.slide import Slide
from spotwhisper.io.spatial import open_source_slide, spot_spacing
from spotwhisper.search.engine import SlideHits
from spotwhisper.search.explain import Explanation
from spotwhisper.search.regions import regions_table
from spotwhisper.search.render import display_image, frame, framed, render_hits

#: memory for decoded source slides kept open (a plain JPEG is decoded whole on first read: ~0.28 GB for a
#: her2st image); the least recently used are closed beyond it (one always stays)
SOURCE_CACHE_MB = 2048
_sources: OrderedDict[str, tuple[Slide, float, Lock]] = OrderedDict()
_sources_lock = Lock()
EVIDENCE_COLUMNS = ["kind", "name", "region mean", "rest mean", "difference", "t"]


def slide_picture(adata: ad.AnnData, max_side: int, margin: float | None = None) -> Image.Image:
    """The slide alone (no search yet), framed as :func:`overlay` frames it."""
    hires, scale = display_image(adata)
    box, size = frame(adata, hires.shape[:2], scale, max_side, margin)
    return framed(Image.fromarray(np.ascontiguousarray(hires[..., :3])), box, size)


def overlay(hits: SlideHits, threshold: float, max_side: int, margin: float | None = None) -> Image.Image:
    """Fused-score heat map with numbered region outlines on the slide's display image, cropped
    to the spots plus ``margin`` spot spacings (None = whole slide), at most ``max_side`` px."""
    return render_hits(hits, threshold, margin=margin, max_side=max_side)


def _source(adata: ad.AnnData) -> tuple[Slide, float, Lock]:
    """The open source slide of ``adata``, its scale and its lock: regions are read under the lock,
    so concurrent sessions decode an image once, not once each."""
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), "")
    path = str(adata.uns[keys.SPATIAL][lib].get("metadata", {}).get(keys.SOURCE_IMAGE, "")) if lib else ""
    with _sources_lock:
        if path in _sources:
            _sources.move_to_end(path)
            return _sources[path]
        slide, scale = open_source_slide(adata)  # lazy: nothing decoded yet
        _sources[path] = (slide, scale, Lock())
        return _sources[path]


def _trim_sources() -> None:
    """Close the least recently used sources while the decoded ones hold more than :data:`SOURCE_CACHE_MB`."""
    with _sources_lock:
        def held() -> float:
            return sum(getattr(s, "_array", None).nbytes for s, _, _ in _sources.values()
                       if getattr(s, "_array", None) is not None) / 2**20
        while len(_sources) > 1 and held() > SOURCE_CACHE_MB:
            _sources.popitem(last=False)


def tile_gallery(hits: SlideHits, n: int, tile_px: int, context: float = 1.0) -> list[tuple[np.ndarray, str]]:
    """The ``n`` best spots as ``(tile_px, tile_px, 3)`` crops of the full-resolution slide, with
    captions (spot, fused score, region). A tile covers ``context`` spot spacings."""
    top = hits.top_spots(n)
    if top.empty:
        return []
    slide, scale, lock = _source(hits.adata)
    half = spot_spacing(hits.adata) * context * scale / 2
    region_of = {int(s): r.id for r in hits.regions for s in r.spots}
    index = {name: i for i, name in enumerate(hits.adata.obs_names)}
    out = []
    with lock:
        for row in top.itertuples(index=False):
            x, y = row.x * scale, row.y * scale
            tile = slide.read_scaled((x - half, y - half, x + half, y + half), tile_px)
            rid = region_of.get(index[row.spot])
            out.append((tile, f"{row.spot} · score {row.score:.2f}" + (f" · region {rid}" if rid else "")))
    _trim_sources()
    return out


def evidence_table(explanation: Explanation | None, rows: int) -> pd.DataFrame:
    """Genes and proteins higher in the explained region than in the rest of the slide."""
    if explanation is None:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS)
    parts = []
    for kind, table in (("gene", explanation.genes), ("protein", explanation.proteins)):
        if table is None or table.empty:
            continue
        up = table[table["diff"] > 0].head(rows)
        parts.append(pd.DataFrame({"kind": kind, "name": up["name"], "region mean": up["mean_in"],
                                   "rest mean": up["mean_out"], "difference": up["diff"], "t": up["t"]}))
    return _rounded(parts, EVIDENCE_COLUMNS, ["region mean", "rest mean", "difference", "t"])


def _rounded(parts: list[pd.DataFrame], columns: list[str], numeric: list[str]) -> pd.DataFrame:
    """``parts`` stacked, numbers to 3 decimals (an empty frame with ``columns`` when there are none)."""
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    out[numeric] = out[numeric].astype(np.float64).round(3)
    return out


COMPARE_COLUMNS = ["kind", "name", "higher in", "A mean", "B mean", "difference", "t"]


def comparison_table(comp, rows: int) -> pd.DataFrame:
    """Genes and proteins that separate the only-A spots from the only-B spots of a
    :class:`~spotwhisper.search.compare.Comparison`: the top ``rows`` each way, per kind."""
    sep = comp.separating if comp is not None else None
    if sep is None:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    parts = []
    for kind, table in (("gene", sep.genes), ("protein", sep.proteins)):
        if table is None or table.empty:
            continue
        for side, up in (("A", table[table["diff"] > 0].sort_values("diff", ascending=False)),
                         ("B", table[table["diff"] < 0].sort_values("diff"))):
            up = up.head(rows)
            parts.append(pd.DataFrame({"kind": kind, "name": up["name"], "higher in": side, "A mean": up["mean_in"],
                                       "B mean": up["mean_out"], "difference": up["diff"], "t": up["t"]}))
    return _rounded(parts, COMPARE_COLUMNS, ["A mean", "B mean", "difference", "t"])


REGION_COLUMNS = ["region", "spots", "area_mm2", "percent_tissue", "mean_score", "max_score", "centroid_x", "centroid_y"]


def regions_frame(hits: SlideHits | None) -> pd.DataFrame:
    """One row per region: id, spots, area (mm² and % of the tissue, i.e. of the slide's spots),
    mean / max score, centroid (slide px)."""
    rows = regions_table(hits.regions) if hits is not None else []
    for row in rows:
        row["percent_tissue"] = round(100.0 * row["spots"] / max(hits.adata.n_obs, 1), 1)
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def spot_at(hits: SlideHits, x: float, y: float, max_side: int, margin: float | None = None) -> int | None:
    """Index of the spot under pixel ``(x, y)`` of :func:`overlay` (same ``max_side``/``margin``), else ``None``."""
    hires, scale = display_image(hits.adata)
    box, size = frame(hits.adata, hires.shape[:2], scale, max_side, margin)
    f = size[0] / (box[2] - box[0])
    sx, sy = (x / f + box[0]) / scale, (y / f + box[1]) / scale
    coords = np.asarray(hits.adata.obsm[keys.SPATIAL], dtype=float)
    d = np.hypot(coords[:, 0] - sx, coords[:, 1] - sy)
    i = int(np.argmin(d))
    return i if d[i] <= spot_spacing(hits.adata) / 2 * np.sqrt(2) else None
