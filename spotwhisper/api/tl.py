"""``sw.tl``: tools that take an AnnData and write documented keys (:mod:`spotwhisper.keys`), as ``sc.tl`` does.

::

    import spotwhisper as sw
    adata = sw.read("C2")                                 # or a Space Ranger folder, an image + spot table
    sw.tl.infer(adata)                                    # X = inferred log1p expression, proteins, embeddings
    result = sw.tl.search(adata, "tertiary lymphoid structures")
    adata.obs["search_fused"]                             # relevance per spot (log-odds); regions in obs["search_region"]
    sw.tl.search(adata, like=1, key_added="like")         # spots like region 1 of that search
    sw.tl.compare(adata, "invasive cancer", "immune infiltrate")
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..pipeline import Models, process_slide
from ..search.compare import CLASS_NAMES, NEITHER, Comparison, compare_queries
from ..search.engine import SearchEngine
from ..search.example import Example, example_spots
from ..search.regions import regions_table
from ..search.result import SearchResult, SlideHits
from .loaded import pipeline_models, text_model
from .reading import slide_input, slide_id

#: where :func:`search` writes by default (the UI's export uses it too): obs["search_fused"], uns["search"] …
DEFAULT_KEY = keys.SEARCH_INFO


def infer(adata: ad.AnnData, *, models: Models | None = None, copy: bool = False, progress: bool = True) -> ad.AnnData | None:
    """Run the pipeline on the slide of ``adata`` (from :func:`spotwhisper.read`): image features →
    inferred expression with uncertainty → virtual proteins → embeddings → pooled image vector.

    Writes (same spots, in place unless ``copy``): ``X`` and ``layers["log1p"]`` inferred log1p
    expression ``(n, 2067)`` of the model's gene panel, ``layers["uncertainty_aleatoric"/"_epistemic"]``
    (variance, log1p units²), ``obsm["proteins"]`` ``(n, 50)`` (names in ``uns["protein_markers"]``),
    ``obsm["text_emb"]`` and ``obsm["image_text_emb_aligned"]`` ``(n, 128)``, ``obsm["image_vec"]``
    ``(n, 128)``, ``uns["pipeline"]`` (which models read it) — and for a slide with measured counts
    ``obsm["text_emb_measured"]``, the counts themselves moving to ``adata.raw``. ``obs`` columns are kept.
    An image without spots gets the grid of tiles the CLI uses. ``models``: default the shipped ones
    (loaded once per process). Returns the AnnData with ``copy=True``, else None.
    """
    inp = slide_input(adata)
    try:
        out = process_slide(inp, pipeline_models(models), progress=progress)
    finally:
        if inp.slide is not None:
            inp.slide.close()
    for col in adata.obs.columns.difference(out.obs.columns):
        if out.n_obs == adata.n_obs and (out.obs_names == adata.obs_names).all():
            out.obs[col] = adata.obs[col].to_numpy()
    if copy:
        return out
    raw = ad.AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names), var=adata.var) if adata.n_vars else None
    adata._init_as_actual(out)  # in place, as anndata's own in-place subsetting does
    if raw is not None and raw.n_obs == adata.n_obs:
        adata.raw = raw  # the measured counts, as read
    return None


def engine_for(adata: ad.AnnData | Mapping[str, ad.AnnData], models: Models | None = None) -> SearchEngine:
    """A search engine over one processed slide (or slide id → AnnData), with the shared text model."""
    slides = {slide_id(adata): adata} if isinstance(adata, ad.AnnData) else dict(adata)
    return SearchEngine(slides, text_model=text_model(models))


def search(adata: ad.AnnData, query: str | None = None, *, like=None, key_added: str = DEFAULT_KEY,
           weights: dict[str, float] | None = None, threshold: float | None = None, explain: bool = True,
           engine: SearchEngine | None = None) -> SearchResult:
    """Search one processed slide (:func:`infer`) for a free-text ``query`` — or, with ``like``, for spots
    like an example — and write the answer into ``adata``.

    ``like``: spots of this slide — indices, a boolean mask, obs names, a region id of an earlier text
    search written under ``"search"`` (``like=1``; ``like=("other_key", 1)`` for another key),
    ``{"box": (x0, y0, x1, y1)}`` in full-resolution px, a GeoJSON dict or file (QuPath annotations,
    SpotWhisper regions) — or ``(other_adata, spec)`` for an example on another slide. Routes, weights and threshold: ``configs/search.yaml`` (``like`` for examples).

    Writes, with ``K = key_added``: ``obs["K_fused"]`` fused relevance (log-odds; threshold in
    ``uns["K"]["threshold"]``), ``obs["K_region"]`` region id (0 = none), ``obs["K_score_<route>"]``
    raw score (cosine; protein level) and ``obs["K_relevance_<route>"]`` of every route that answered,
    and ``uns["K"]``: ``query``, ``threshold``, ``unit``, ``routes``, ``regions`` (table), ``explanation``
    (genes and proteins of region 1 vs the rest), ``found``, ``message`` (why nothing matched), ``notes``,
    ``confidence`` (``"calibrated"``, or ``"low"`` on a slide unlike the training slides: ``uns["familiarity"]``).
    On such a slide a learned concept with no region gets low-confidence candidate areas: ``obs["K_candidate"]``
    (area id, 0 = none), ``uns["K"]["candidates"]`` (table) and ``uns["K"]["specificity"]`` (how much more they
    stand out for the query than for the other learned concepts, and which ones the models cannot tell apart).
    Returns the :class:`~spotwhisper.search.result.SearchResult` (``.summary()`` says it in words).
    """
    if (query is None) == (like is None):
        raise ValueError("give a text query or like= (an example), not both and not neither")
    name = slide_id(adata)
    if like is None:
        engine = engine or engine_for(adata)
        result = engine.search(query, slides=[name], weights=weights, threshold=threshold, explain=explain)
    else:
        source, spec = like if isinstance(like, tuple) and len(like) == 2 and isinstance(like[0], ad.AnnData) else (adata, like)
        key = DEFAULT_KEY
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            key, spec = spec
        source_name = slide_id(source)
        spots, label = example_spots(source, spec, source_name, key)
        engine = engine or engine_for({name: adata, source_name: source})
        result = engine.search_like(Example(source_name, spots, label), slides=[name], weights=weights,
                                    threshold=threshold, explain=explain)
    write_search(adata, result, key_added=key_added)
    return result


def write_search(adata: ad.AnnData, result: SearchResult, slide: str | None = None, key_added: str = DEFAULT_KEY) -> ad.AnnData:
    """Write ``result``'s answer on ``slide`` (default: ``adata``'s) into ``adata`` under ``key_added``
    (keys: :func:`search`); columns of an earlier result under the same key are replaced. Returns ``adata``."""
    name = slide or slide_id(adata)
    hits = _hits_of(result, name)
    if hits.adata.n_obs != adata.n_obs:
        raise ValueError(f"the result holds {hits.adata.n_obs} spots of {name}, this AnnData {adata.n_obs}")
    prefix = key_added + "_"
    for col in [c for c in adata.obs if c.startswith(prefix)]:
        del adata.obs[col]
    candidate = np.zeros(adata.n_obs, dtype=np.int64)
    for r in hits.candidates:
        candidate[r.spots] = r.id
    adata.obs[key_added + keys.FUSED_SUFFIX] = np.asarray(hits.fused, dtype=np.float64)
    adata.obs[key_added + keys.REGION_SUFFIX] = hits.region_ids()
    if hits.candidates:
        adata.obs[key_added + keys.CANDIDATE_SUFFIX] = candidate
    for route, scores in hits.routes.items():
        adata.obs[key_added + keys.SCORE_SUFFIX + route] = np.asarray(scores, dtype=np.float64)
    for route, rel in hits.calibrated.items():
        adata.obs[key_added + keys.RELEVANCE_SUFFIX + route] = np.asarray(rel, dtype=np.float64)
    q = result.query
    expl = hits.explanation
    adata.uns[key_added] = {
        "query": q.text, "positive": q.positive, "negative": q.negative or "", "threshold": float(result.threshold),
        "unit": result.unit, "routes": list(result.routes), "n_regions": len(hits.regions), "found": hits.found,
        "regions": pd.DataFrame(regions_table(hits.regions)) if hits.regions else pd.DataFrame(),
        "explanation": expl.sentence(8) if expl is not None else "",
        "genes": expl.genes if expl is not None else pd.DataFrame(),
        "message": "" if hits.found else hits.no_region_reason(result.threshold, q.text),
        "notes": list(result.notes), "example": _example_record(result),
        "confidence": hits.confidence,
        "candidates": pd.DataFrame(regions_table(hits.candidates)) if hits.candidates else pd.DataFrame(),
        "specificity": hits.specificity.to_dict() if hits.specificity is not None else {},
    }
    return adata


def _hits_of(result: SearchResult, slide: str) -> SlideHits:
    hits = next((h for h in result.slides if h.slide == slide), None)
    if hits is None:
        raise KeyError(f"slide {slide!r} is not in this result (slides: {', '.join(h.slide for h in result.slides)})")
    return hits


def _example_record(result: SearchResult) -> dict:
    query = result.example
    if query is None:
        return {}
    return {"slide": query.example.slide, "spots": np.asarray(query.example.spots), "label": query.example.label}


def compare(adata: ad.AnnData, query_a: str, query_b: str, *, key_added: str = "compare",
            threshold: float | None = None, weights: dict[str, float] | None = None,
            engine: SearchEngine | None = None) -> Comparison:
    """Where ``query_a``, ``query_b`` or both match on one processed slide, and the genes and proteins
    that separate them (:mod:`spotwhisper.search.compare`).

    Writes ``obs["<key_added>"]``: categorical ``neither`` / ``only A`` / ``only B`` / ``both`` per spot,
    and ``uns["<key_added>"]``: both queries, the threshold, the legend (spots, mm², % of tissue per
    class) and the summary in words. Returns the :class:`~spotwhisper.search.compare.Comparison`."""
    engine = engine or engine_for(adata)
    comp, res_a, _ = compare_queries(engine, query_a, query_b, slide_id(adata), threshold, weights)
    names = {NEITHER: "neither", **CLASS_NAMES}
    adata.obs[key_added] = pd.Categorical([names[int(c)] for c in comp.classes], categories=list(names.values()))
    adata.uns[key_added] = {"query_a": query_a, "query_b": query_b, "threshold": float(res_a.threshold),
                            "legend": pd.DataFrame(comp.legend()), "summary": comp.summary()}
    return comp
