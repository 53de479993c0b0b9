"""What the UI does with a request, as plain functions over a :class:`View` (no Gradio here).

A :class:`View` is one browser session's state: the last search with every route's calibrated
scores (``base``), what is shown after route toggles and the threshold (``shown``), a two-query
comparison when one was asked for, the slide on screen (and a second one side by side), the
region being explained and the session's annotations. Each action returns a sentence-style
answer and a new view; the Blocks callbacks in :mod:`spotwhisper.ui.app` only wire these to components.

Route toggles: a new question is answered by every route; the toggles then show the routes that
actually answered, and unticking one re-fuses the cached scores. With no route ticked nothing is
fused: the view carries a message instead of a stale map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spotwhisper.search.compare import Comparison, compare_queries

from .annotations import from_geojson, from_regions
from spotwhisper.search.engine import SearchEngine, SearchResult, SlideHits
from spotwhisper.search.example import Example
from spotwhisper.routes import CONCH, IMAGE, PLIP, PROTEIN, TRANSCRIPTOME
from spotwhisper.search.explain import Explanation

from .config import UIConfig

#: raw routes whose sign tells which side of a contrast a spot leans to (first present is used)
CONTRAST_ROUTES = (TRANSCRIPTOME, IMAGE, PLIP, CONCH, PROTEIN)
NO_ROUTE = "No route is ticked, so nothing is scored: tick at least one route (transcriptome, image–text or protein)."


@dataclass
class View:
    """One session's state. ``groups`` are the ticked route groups (``UIConfig.route_groups``)."""

    threshold: float
    groups: list[str]
    slide: str | None = None
    base: SearchResult | None = None  #: as searched: every route that could answer
    shown: SearchResult | None = None  #: re-fused over ``groups`` with regions at ``threshold``
    focus: int = 1  #: region explained in the evidence table
    explained: Explanation | None = None  #: explanation of ``focus`` when it is not region 1
    second: str | None = None  #: slide shown side by side (searched together with ``slide``)
    comparison: Comparison | None = None  #: "compare A and B" on ``slide``
    annotations: list[dict] = field(default_factory=list)  #: kept or loaded outlines (ui/annotations.py)
    message: str | None = None  #: why nothing is shown (e.g. no route ticked)
    compare_threshold: float | None = None  #: the threshold of ``comparison`` (the slider's value while it is shown)

    @property
    def active_threshold(self) -> float:
        """The threshold the slider shows: the comparison's while one is shown, else the search's."""
        return self.compare_threshold if self.comparison is not None and self.compare_threshold is not None \
            else self.threshold

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


def first_answer(engine: SearchEngine, cfg: UIConfig, answered) -> tuple[list[dict], View | None]:
    """The chat history and View of an example answered before the server started (``spotwhisper
    demo``): ``answered`` = ``(query, SearchResult, seconds after start)``, or None."""
    if not answered:
        return [], None
    query, result, seconds = answered
    view = new_view(engine, cfg)
    view = replace(view, base=result, slide=result.slides[0].slide if result.slides else view.slide)
    view = update_view(engine, view, cfg)
    view.groups = used_groups(view.shown, cfg.route_groups) or view.groups
    text = describe_result(view, cfg)
    text += f"\n(Answered {seconds:.0f} s after the demo started, on the {len(result.slides)} slide(s) ready then.)"
    return [{"role": "user", "content": query}, {"role": "assistant", "content": text}], view


# -- re-fusing and thresholds (no new search) ------------------------------------------------
def group_weights(engine: SearchEngine, groups: list[str], route_groups: dict[str, list[str]],
                  like: bool = False) -> dict[str, float]:
    """Search weights (``like``: of search by example) with every route of an unselected group set to 0."""
    unknown = [g for g in groups if g not in route_groups]
    if unknown:
        raise ValueError(f"unknown route group(s) {unknown}; known: {list(route_groups)}")
    off = {r for g, routes in route_groups.items() if g not in groups for r in routes}
    return {r: (0.0 if r in off else w) for r, w in (engine.cfg.like.weights if like else engine.cfg.weights).items()}


def used_groups(result: SearchResult | None, route_groups: dict[str, list[str]]) -> list[str]:
    """The route groups of which at least one route answered ``result`` (what the toggles show)."""
    if result is None:
        return []
    used = set(result.routes)
    return [g for g, routes in route_groups.items() if used & set(routes)]


def update_view(engine: SearchEngine, view: View, cfg: UIConfig, *, threshold: float | None = None,
                groups: list[str] | None = None, explain: bool = True) -> View:
    """New threshold and/or route toggles: re-fuse and re-threshold the cached search (or redo the
    comparison on screen, whose threshold it then is). No route ticked, or none that answered →
    ``shown`` is None and ``message`` says why."""
    if view.comparison is not None:
        view = replace(view, compare_threshold=view.active_threshold if threshold is None else float(threshold),
                       groups=list(view.groups if groups is None else groups), message=None)
        return _recompare(engine, view, cfg)
    view = replace(view, threshold=view.threshold if threshold is None else float(threshold),
                   groups=list(view.groups if groups is None else groups), focus=1, explained=None, message=None)
    if view.base is None:
        return view
    if not view.groups:
        return replace(view, shown=None, message=NO_ROUTE)
    weights = group_weights(engine, view.groups, cfg.route_groups, like=view.base.example is not None)
    try:
        view.shown = engine.reweight(view.base, weights, view.threshold, explain)
    except ValueError as err:  # none of the ticked routes answered this query
        return replace(view, shown=None, message=f"{err.args[0] if err.args else err}; tick another route.")
    return view


# -- actions the chat routes to ----------------------------------------------------------------
def _scope(view: View, scope: str) -> list[str] | None:
    if scope != "slide" or not view.slide:
        return None
    return [view.slide] + ([view.second] if view.second and view.second != view.slide else [])


def run_search(engine: SearchEngine, view: View, query: str, cfg: UIConfig, scope: str = "slide",
               explain: bool = True) -> tuple[str, View]:
    """Search ``query`` on the slide on screen (and the one beside it; ``scope="slide"``) or on
    every slide (``"collection"``) with every route; the toggles then show the routes that answered."""
    base = engine.search(query, slides=_scope(view, scope), threshold=view.threshold, explain=False)
    view = replace(view, base=base, comparison=None, groups=list(cfg.route_groups))
    view = update_view(engine, view, cfg, explain=explain)
    view.groups = used_groups(view.shown, cfg.route_groups) or view.groups
    if scope == "collection" and view.shown is not None and view.shown.slides:
        view.slide = view.shown.slides[0].slide
    return describe_result(view, cfg), view


def explain_all(engine: SearchEngine, view: View) -> View:
    """Explain the strongest region of every shown slide that has regions (after ``explain=False``)."""
    if view.shown is not None:
        for hits in view.shown.slides:
            if hits.regions and hits.explanation is None:
                engine.explain_hits(hits, view.shown.query, view.shown.example)
    return view


def run_like(engine: SearchEngine, view: View, cfg: UIConfig, region: int | None = None,
             slide: str | None = None) -> tuple[str, View]:
    """"Find more like this": region ``region`` (default: the one in focus) as the example, searched on
    every slide (:meth:`SearchEngine.search_like`); the view stays on the example's slide."""
    hits = view.hits(slide) if view.comparison is None else None
    if hits is None or not hits.regions:
        return "Search first and click a region: its spots are then the example to find more of.", view
    rid = region or view.focus or 1
    reg = next((r for r in hits.regions if r.id == rid), None)
    if reg is None:
        return f"{hits.slide} has no region {rid} at this threshold.", view
    base = engine.search_like(Example(hits.slide, reg.spots, f"{hits.slide} region {rid}"), threshold=view.threshold,
                              explain=False)
    view = replace(view, base=base, comparison=None, groups=list(cfg.route_groups), slide=hits.slide)
    view = update_view(engine, view, cfg)
    view.groups = used_groups(view.shown, cfg.route_groups) or view.groups
    return describe_result(view, cfg), view


def run_contrast(engine: SearchEngine, view: View, positive: str, negative: str, cfg: UIConfig) -> tuple[str, View]:
    """Search "``positive`` minus ``negative``" (one contrast map); say how many spots lean each way."""
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


def _recompare(engine: SearchEngine, view: View, cfg: UIConfig) -> View:
    comp = view.comparison
    if not view.groups:
        return replace(view, message=NO_ROUTE)
    weights = group_weights(engine, view.groups, cfg.route_groups)
    try:
        comp, res_a, _ = compare_queries(engine, comp.query_a, comp.query_b, comp.slide, view.active_threshold, weights)
    except ValueError as err:
        return replace(view, message=f"{err.args[0] if err.args else err}; tick another route.")
    return replace(view, comparison=comp, base=res_a, shown=res_a, slide=comp.slide)


def run_compare(engine: SearchEngine, view: View, query_a: str, query_b: str, cfg: UIConfig) -> tuple[str, View]:
    """"compare A and B": where each matches on the slide on screen, where both do, and what separates them.

    Matches are the regions at the comparison threshold (``cfg.compare_threshold``, lower than a
    search's by default since compared things are often broad; None = the search threshold)."""
    if view.slide is None:
        return "No slide to compare on yet: upload one below.", view
    weights = group_weights(engine, list(cfg.route_groups), cfg.route_groups)
    at = view.compare_threshold if view.comparison is not None and view.compare_threshold is not None else (
        view.threshold if cfg.compare_threshold is None else cfg.compare_threshold)
    comp, res_a, res_b = compare_queries(engine, query_a, query_b, view.slide, at, weights)
    used = sorted(set(res_a.routes) | set(res_b.routes))
    view = replace(view, comparison=comp, base=res_a, shown=res_a, focus=1, explained=None, message=None,
                   compare_threshold=at, groups=[g for g, routes in cfg.route_groups.items() if set(used) & set(routes)])
    return (f"Compared '{query_a}' (A, blue) and '{query_b}' (B, orange; both: purple) at threshold {at:g}, "
            f"routes {', '.join(used)}. " + comp.summary()), view


def run_compare_slides(engine: SearchEngine, view: View, query: str, cfg: UIConfig) -> tuple[str, View]:
    """Search every slide and rank them by their strongest region."""
    _, view = run_search(engine, view, query, cfg, scope="collection")
    res = view.shown
    if res is None:
        return view.message or "Nothing to rank.", view
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
    return "\n".join(lines + res.notes) + f"\n\nShowing {view.slide}.", view


def tissue_share(hits: SlideHits, region) -> float:
    """Percent of the slide's tissue (its spots, which lie under tissue) that ``region`` covers."""
    return 100.0 * region.n_spots / max(hits.adata.n_obs, 1)


def run_explain(engine: SearchEngine, view: View, cfg: UIConfig, region: int | None = None,
                slide: str | None = None) -> tuple[str, View]:
    """Genes and proteins of region ``region`` (default: the one in focus) versus the rest of the slide."""
    if view.comparison is not None:
        return (view.comparison.summary() + "\n(Regions are explained one at a time after a search, e.g. "
                "'show me tertiary lymphoid structures'.)"), view
    hits = view.hits(slide)
    if hits is None:
        return (view.message or "Nothing is highlighted yet: search first, e.g. 'show me tertiary lymphoid "
                "structures', then ask which genes explain the region."), view
    if not hits.regions:
        return (f"{hits.slide}: {hits.no_region_reason(view.threshold, view.shown.query.text)}, so there is nothing "
                "to explain; lower the threshold or search for something else."), view
    rid = region or view.focus or 1
    reg = next((r for r in hits.regions if r.id == rid), None)
    if reg is None:
        return f"{hits.slide} has {len(hits.regions)} region(s) at this threshold; there is no region {rid}.", view
    if rid == 1 and hits.explanation is None:
        engine.explain_hits(hits, view.shown.query, view.shown.example)
    expl = hits.explanation if rid == 1 else engine.explain(hits.slide, reg.spots)
    view = replace(view, focus=rid, explained=None if rid == 1 else expl, slide=hits.slide)
    text = (f"Region {rid} on {hits.slide} ({reg.n_spots} spots, {reg.area_um2 / 1e6:.2f} mm², "
            f"{tissue_share(hits, reg):.1f}% of the tissue, mean score {reg.mean_score:.2f}) versus the other "
            f"{expl.n_out} spots: {expl.sentence(cfg.table_rows // 2)}.")
    if rid == 1 and hits.attributions is not None and len(hits.attributions):
        top = hits.attributions.head(cfg.table_rows // 2)
        text += " Genes that drive the match to the query (gradient × input): " + ", ".join(top["name"]) + "."
    return text, view


def describe_result(view: View, cfg: UIConfig) -> str:
    """The answer in sentences with numbers (regions, spots, areas, share of the tissue, scores, top genes)."""
    res = view.shown
    if res is None:
        return view.message or "No search yet."
    text = res.summary(cfg.max_regions_listed)
    hits = view.hits()
    if hits is not None and hits.regions:
        shares = ", ".join(f"region {r.id} {tissue_share(hits, r):.1f}%" for r in hits.regions[:cfg.max_regions_listed])
        text += f"\nShare of the tissue of {hits.slide}: {shares}."
    if hits is not None and len(res.slides) > 1:
        text += f"\nShowing {hits.slide}."
    return text


def map_caption(view: View) -> str:
    """One line under the slide: what is shown and how much of it is above the threshold."""
    if view.message:
        return f"**{view.slide or 'no slide'}** — {view.message}"
    if view.comparison is not None:
        c = view.comparison
        legend = "; ".join(f"{r['label']}: {r['spots']} spots, {r['area_mm2']:.2f} mm² ({r['percent_tissue']:.0f}%)"
                           for r in c.legend())
        return f"**{c.slide}** — compare: {legend} (threshold {view.active_threshold:g})."
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
                   f"({res.unit}); click a region to explain it.")


# -- annotations ---------------------------------------------------------------------------------
def keep_regions(view: View, label: str) -> tuple[str, View]:
    """Keep the regions on screen as annotations labelled ``label`` (default: the query)."""
    hits = view.hits() if view.comparison is None else None
    if hits is None or not hits.regions:
        return "No regions on screen to keep: search first.", view
    new = from_regions(hits, (label or "").strip(), view.shown.query.text)
    view = replace(view, annotations=[*view.annotations, *new])
    return f"Kept {len(new)} region(s) of {hits.slide} as annotations ({len(view.annotations)} in all).", view


def load_annotations(view: View, data: bytes, slides: list[str]) -> tuple[str, View]:
    """Add the outlines of a GeoJSON file to the view (those of slides in ``slides``; a feature
    naming no slide goes on the one on screen). ``ValueError`` for a file that is not one."""
    loaded = from_geojson(data, default_slide=view.slide)
    here = [a for a in loaded if a["slide"] in set(slides)]
    skipped = len(loaded) - len(here)
    view = replace(view, annotations=[*view.annotations, *here])
    return f"Loaded {len(here)} annotation(s)" + (f"; {skipped} belong to slides not here" if skipped else "") + ".", view
