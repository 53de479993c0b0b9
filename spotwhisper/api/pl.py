"""``sw.pl``: matplotlib figures on the slide image, as ``sc.pl`` draws them.

:func:`search` draws the same overlay as the CLI's ``<slide>_<query>.png`` (absolute colour scale
around the threshold, faint spots below it, numbered region outlines; :mod:`spotwhisper.search.render`)
with a matplotlib colour bar; :func:`proteins` one panel per virtual protein marker.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from .. import keys
from ..io.spatial import spot_spacing
from ..search.regions import Region
from ..search.render import COLOUR_SPAN, colour_range, display_image, frame, render_hits, render_overlay
from ..search.result import SlideHits
from .reading import slide_id

CMAP = "inferno"


def stored_regions(adata: ad.AnnData, key: str = "search") -> list[Region]:
    """The regions of a search written under ``key`` (``obs["<key>_region"]``), rebuilt for drawing."""
    col, fused = key + keys.REGION_SUFFIX, key + keys.FUSED_SUFFIX
    if col not in adata.obs or fused not in adata.obs:
        raise KeyError(f"no search under key {key!r} (obs[{col!r}]): run spotwhisper.tl.search(adata, ..., key_added={key!r})")
    ids = adata.obs[col].to_numpy().astype(int)
    score = adata.obs[fused].to_numpy(dtype=float)
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    side = spot_spacing(adata)
    lib = next(iter(adata.uns.get(keys.SPATIAL, {})), None)
    mpp = float(adata.uns[keys.SPATIAL][lib]["scalefactors"].get(keys.MPP, 1.0)) if lib else 1.0
    out = []
    for rid in sorted(set(ids) - {0}):
        spots = np.flatnonzero(ids == rid)
        s = score[spots]
        out.append(Region(int(rid), spots, float(np.nanmean(s)), float(np.nanmax(s)), len(spots) * (side * mpp) ** 2,
                          tuple(xy[spots].mean(0)), (xy[spots], side)))
    return out


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def search(adata: ad.AnnData, key: str = "search", *, ax=None, margin: float | None = 2.0, max_side: int | None = 1600,
           title: str | None = None, colorbar: bool = True, figsize: tuple[float, float] = (7, 7)):
    """The search map written under ``key`` (:func:`spotwhisper.tl.search`) on the slide image → the matplotlib Axes.

    The picture is the CLI's PNG (cropped to the spots plus ``margin`` spot spacings, ``None`` = the
    whole image; longer side ≤ ``max_side`` px); a slide without a region shows the image alone and
    says why in the title. The colour bar is the fused relevance on the absolute scale.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    info = adata.uns.get(key, {})
    threshold = float(info.get("threshold", -1.0))
    regions = stored_regions(adata, key)
    hits = SlideHits(slide_id(adata), adata, {}, {}, adata.obs[key + keys.FUSED_SUFFIX].to_numpy(dtype=float), regions)
    image = render_hits(hits, threshold, margin=margin, max_side=max_side)
    fig, ax = _axes(ax, figsize)
    ax.imshow(np.asarray(image))
    ax.set_axis_off()
    what = info.get("query", key)
    found = f"{len(regions)} region(s)" if regions else "no region reaches the threshold"
    ax.set_title(title or f"{hits.slide}: {what}\n{found}", fontsize=9)
    if colorbar:
        vmin, vmax = colour_range(threshold, COLOUR_SPAN)
        bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), CMAP), ax=ax, fraction=0.046, pad=0.02)
        bar.set_label(info.get("unit", "fused relevance"), fontsize=8)
        bar.ax.axhline(threshold, color="cyan", lw=2)
    return ax


def proteins(adata: ad.AnnData, markers: Sequence[str] | None = None, *, ncols: int = 4, max_side: int = 600,
             panel_size: float = 3.0, quantiles: tuple[float, float] = (0.01, 0.99)):
    """Virtual protein levels (``obsm["proteins"]``, from :func:`spotwhisper.tl.infer`) of ``markers``
    (default: the informative markers of ``uns["protein_qc"]``, at most 8) on the slide image, one panel
    each, coloured from the slide's 1st to 99th percentile of that marker → the matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if keys.PROTEINS not in adata.obsm:
        raise KeyError("no obsm['proteins']: run spotwhisper.tl.infer(adata) first")
    names = [str(m) for m in adata.uns[keys.PROTEIN_MARKERS]]
    markers = list(markers) if markers is not None else _default_markers(adata, names)
    unknown = [m for m in markers if m not in names]
    if unknown:
        raise KeyError(f"no virtual protein {unknown} (markers: {', '.join(names)})")
    values = np.asarray(adata.obsm[keys.PROTEINS], dtype=float)
    img, scale = display_image(adata)
    box, size = frame(adata, img.shape[:2], scale, max_side, 2.0)
    crop = img[box[1]:box[3], box[0]:box[2]]
    coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    nrows = int(np.ceil(len(markers) / ncols))
    fig, axes = plt.subplots(nrows, min(ncols, len(markers)), figsize=(panel_size * min(ncols, len(markers)), panel_size * nrows),
                             squeeze=False)
    for ax, marker in zip(axes.ravel(), markers):
        v = values[:, names.index(marker)]
        lo, hi = np.nanquantile(v, quantiles) if np.isfinite(v).any() else (0.0, 1.0)
        pic = render_overlay(crop, scale, coords, v, spot_spacing(adata), cmap="viridis", vmin=lo, vmax=hi,
                             offset=(box[0], box[1]))
        ax.imshow(np.asarray(pic.resize(size)))
        ax.set_title(marker, fontsize=9)
        ax.set_axis_off()
        fig.colorbar(ScalarMappable(Normalize(lo, hi), "viridis"), ax=ax, fraction=0.046, pad=0.02)
    for ax in axes.ravel()[len(markers):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _default_markers(adata: ad.AnnData, names: list[str], n: int = 8) -> list[str]:
    qc = adata.uns.get(keys.PROTEIN_QC)
    if qc is not None and "informative" in qc and "marker" in qc:
        import pandas as pd

        table = pd.DataFrame(qc)
        picked = [str(m) for m in table.loc[table["informative"].astype(bool), "marker"]][:n]
        if picked:
            return picked
    return names[:n]
