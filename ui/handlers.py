"""What the UI does with a request, as plain functions over a :class:`View` (no Gradio here).

A :class:`View` is one browser session's state: the last search with every route's calibrated
scores (``base``), what is shown after route toggles and the threshold (``shown``), the slide
on screen and the region being explained. Each action returns a sentence-style answer and a new
view; the Blocks callbacks in :mod:`spotwhisper.ui.app` only wire these to components.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spotwhisper.search.engine import SearchEngine, SearchResult, SlideHits
from spotwhisper.search.explain import Explanation

from .config import UIConfig

#: raw routes whose sign tells which side of a contrast a spot leans to (first present is used)
CONTRAST_ROUTES = ("transcriptome", "image", "plip", "conch", "protein")


@dataclass
class View:
    """One session's state. ``groups`` are the toggled route groups (``UIConfig.route_groups``)."""

    threshold: float
    groups: list[str]
    slide: str | None = None
    base: SearchResult | None = None  #: as searched: every route that could answer
    shown: SearchResult | None = None  #: re-fused over ``groups`` with regions at ``threshold``
    focus: int = 1  #: region explained in the evidence table
    explained: Explanation | None = None  #: explanation of ``focus`` when it is not region 1

    def hits(self, slide: str | None = None) -> SlideHits | None:
        """The shown hits of ``slide`` (default: the slide on screen), or ``None``."""
        name = slide or self.slide
        if self.shown is None:
            return None
        return next((h for h in self.shown.slides if h.slide == name), None)


def new_view(engine: SearchEngine, cfg: UIConfig) -> View:
    """A fresh view: first slide, every route group on, the configured threshold."""
    names = engine.slide_names()
    threshold = engine.cfg.threshold if cfg.threshold is None else cfg.threshold
    return View(threshold=threshold, groups=list(cfg.route_groups), slide=names[0] if names else None)


# -- re-fusing and thresholds (no new search) ------------------------------------------------
def group_weights(engine: SearchEngine, groups: list[str], route_groups: dict[str, list[str]]) -> dict[str, float]:
    """Search weights with every route of an unselected group set to 0 (others as configured)."""
    unknown = [g for g in groups if g not in route_groups]
    if unknown:
        raise ValueError(f"unknown route group(s) {unknown}; known: {list(route_groups)}")
    off = {r for g, routes in route_groups.items() if g not in groups for r in routes}
    return {r: (0.0 if r in off else w) for r, w in engine.cfg.weights.items()}


def update_view(engine: SearchEngine, view: View, cfg: UIConfig, *, threshold: float | None = None,
                groups: list[str] | None = None) -> View:
    """New threshold and/or route toggles: re-fuse and re-threshold the cached search."""
    view = replace(view, threshold=view.threshold if threshold is None else float(threshold),
                   groups=list(view.groups if groups is None else groups), focus=1, explained=None)
    if view.base is not None:
        if not view.groups:
            raise ValueError("select at least one route (transcriptome, image–text or protein)")
        view.shown = engine.reweight(view.base, group_weights(engine, view.groups, cfg.route_groups), view.threshold)
    return view


# -- actions the chat routes to ----------------------------------------------------------------
def run_search(engine: SearchEngine, view: View, query: str, cfg: UIConfig, scope: str = "slide") -> tuple[str, View]:
    """Search ``query`` on the slide on screen (``scope="slide"``) or every slide (``"collection"``)."""
    slides = [view.slide] if scope == "slide" and view.slide else None
    base = engine.search(query, slides=slides, threshold=view.threshold)
    view = update_view(engine, replace(view, base=base), cfg)
    if scope == "collection" and view.shown.slides:
        view.slide = view.shown.slides[0].slide
    return describe_result(view, cfg), view


def run_contrast(engine: SearchEngine, view: View, positive: str, negative: str, cfg: UIConfig) -> tuple[str, View]:
    """Search "``positive`` minus ``negative``" on the slide on screen; say how many spots lean each way."""
    text, view = run_search(engine, view, f"{positive} minus {negative}", cfg)
    hits = view.hits()
    if hits is not None:
        route = next((r for r in CONTRAST_ROUTES if r in hits.routes), None)
        if route is not None:
            raw = hits.routes[route]
            ok = np.isfinite(raw)
            n_pos, n = int((raw[ok] > 0).sum()), int(ok.sum())
            text += (f"\nOn the {route} route, {n_pos} of {n} spots ({100 * n_pos / max(n, 1):.0f}%) read more like "
                     f"'{positive}' than '{negative}'; {n - n_pos} lean the other way.")
    return text, view


def run_compare_slides(engine: SearchEngine, view: View, query: str, cfg: UIConfig) -> tuple[str, View]:
    """Search every slide and rank them by their strongest region."""
    _, view = run_search(engine, view, query, cfg, scope="collection")
    res = view.shown
    lines = [f"Ranked {len(res.slides)} slide(s) for '{res.query.text}' (threshold {res.threshold:g}, routes {', '.join(res.routes)}):"]
    for i, h in enumerate(res.slides, 1):
        n_hot = int(np.nansum(h.fused >= res.threshold))
        if h.regions:
            lines.append(f"{i}. {h.slide}: {len(h.regions)} region(s), {n_hot} spots above the threshold, "
                         f"strongest region mean score {h.best:.2f}.")
        else:
            lines.append(f"{i}. {h.slide}: {h.no_region_reason(res.threshold, res.query.text)}.")
    if not res.readable:
        return res.summary(), view
    missing = res.without_regions()
    lines.append(f"No region matches on {len(missing)} of {len(res.slides)} slides: {', '.join(missing)}." if missing
                 else f"Every one of the {len(res.slides)} slides has a region.")
    return "\n".join(lines) + f"\n\nShowing {view.slide}.", view


def run_explain(engine: SearchEngine, view: View, cfg: UIConfig, region: int | None = None) -> tuple[str, View]:
    """Genes and proteins of region ``region`` (default: the one in focus) versus the rest of the slide."""
    hits = view.hits()
    if hits is None:
        return ("Nothing is highlighted yet: search first, e.g. 'show me tertiary lymphoid structures', "
                "then ask which genes explain the region."), view
    if not hits.regions:
        return (f"{hits.slide}: {hits.no_region_reason(view.threshold, view.shown.query.text)}, so there is nothing "
                "to explain; lower the threshold or search for something else."), view
    rid = region or view.focus or 1
    reg = next((r for r in hits.regions if r.id == rid), None)
    if reg is None:
        return f"{hits.slide} has {len(hits.regions)} region(s) at this threshold; there is no region {rid}.", view
    expl = hits.explanation if rid == 1 and hits.explanation is not None else engine.explain(hits.slide, reg.spots)
    view = replace(view, focus=rid, explained=None if rid == 1 else expl)
    text = (f"Region {rid} on {hits.slide} ({reg.n_spots} spots, {reg.area_um2 / 1e6:.2f} mm², mean score "
            f"{reg.mean_score:.2f}) versus the other {expl.n_out} spots: {expl.sentence(cfg.table_rows // 2)}.")
    if rid == 1 and hits.attributions is not None and len(hits.attributions):
        top = hits.attributions.head(cfg.table_rows // 2)
        text += " Genes that drive the match to the query (gradient × input): " + ", ".join(top["name"]) + "."
    return text, view


def describe_result(view: View, cfg: UIConfig) -> str:
    """The answer in sentences with numbers (regions, spots, areas, scores, top genes)."""
    res = view.shown
    if res is None:
        return "No search yet."
    text = res.summary(cfg.max_regions_listed)
    hits = view.hits()
    if hits is not None and len(res.slides) > 1:
        text += f"\nShowing {hits.slide}."
    return text


def map_caption(view: View) -> str:
    """One line under the overlay: what is shown and how much of it is above the threshold."""
    hits = view.hits()
    if view.shown is None or hits is None:
        return f"**{view.slide or 'no slide'}** — type a query to light up matching regions."
    res = view.shown
    if not res.readable:
        return f"**{hits.slide}** — cannot read this query: {res.message} No map is drawn."
    n_hot = int(np.nansum(hits.fused >= view.threshold))
    head = f"**{hits.slide}** — {res.what()}, routes {', '.join(res.routes)}: "
    if not hits.regions:
        return head + f"{hits.no_region_reason(view.threshold, res.query.text)} ({res.unit}, {hits.adata.n_obs} spots)."
    return head + (f"{len(hits.regions)} region(s), {n_hot} of {hits.adata.n_obs} spots ≥ {view.threshold:g} "
                   f"({res.unit}).")
