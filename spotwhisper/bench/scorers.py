"""The routes the benchmark compares, as small scorers registered in :mod:`.registry` (route names:
:mod:`spotwhisper.routes`; the search engine's routes keep their names here). Imported by the package's
``__init__``, as :mod:`.heldout_routes` is.

Each route maps a sample and the task's class queries to per-spot scores ``(n_obs, C)`` (higher =
more likely that class; NaN = the route cannot score that class), or raises
:class:`~spotwhisper.bench.context.RouteUnavailable` with a short reason.

=================  ===========================================================================
route              score of class ``c`` on a spot
=================  ===========================================================================
measured           measured expression → text model (upper bound: needs sequencing); softmax over
                   the class queries (or cosine, ``score: similarity``); her2st patients other
                   than the shipped model's held-out ones use a leave-one-patient-out model
transcriptome      H&E → out-of-fold inferred expression → shipped text model (same scoring)
image              H&E → aligned image head (out of fold) → the text model's query embeddings
plip / conch       H&E tile → PLIP / CONCH image–text model, prompt-ensembled queries (weights
                   given with ``--plip`` / ``--conch``)
protein            H&E → inferred expression → virtual proteins; mean level of the class's marker
                   proteins (NaN when the class names no marker with a proxy)
fused              the fused H&E search: the search engine's own scoring (absolute relevance of
                   transcriptome / image, PLIP / CONCH when given, and protein levels, weighted as
                   configs/search.yaml says) on the sample's out-of-fold H&E view
marker             mean marker-gene level of the class on *measured* expression (baseline)
marker_inferred    the same on inferred expression (an H&E-only baseline)
chance             uniform random scores (empirical chance, AUROC ≈ 0.5)
=================  ===========================================================================
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..genes import PanelMismatchError
from ..language.baselines import chance_scores, marker_gene_scores
from ..language.transcriptome_zeroshot import score
from ..routes import CONCH, FUSED, IMAGE, MEASURED, PLIP, PROTEIN, TRANSCRIPTOME
from .context import RouteContext, RouteUnavailable
from .registry import register_route
from .tasks import Sample
from .text_models import held_out_check

def text_scores(data, model, queries: Sequence[str], ctx: RouteContext, kind: str | None) -> np.ndarray:
    """Text-space scores ``(n, C)`` of ``data`` (AnnData or embeddings): ``kind`` probability | similarity
    (None = the harness's ``score``)."""
    res = score(data, list(queries), model, vocabulary=ctx.vocabulary)
    return res.probabilities if (kind or ctx.cfg.score) == "probability" else res.similarity


@register_route(MEASURED, "measured expr → text (upper bound)")
def measured(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    model = ctx.text_models.for_patient(sample.patient)
    held_out_check(model, sample.patient)
    try:
        return text_scores(sample.adata, model, queries, ctx, None)
    except PanelMismatchError as err:
        raise RouteUnavailable(f"gene panel: {str(err).split(';')[0]}") from err


@register_route(TRANSCRIPTOME, "H&E → inferred expr → text", he_only=True)
def inferred(sample: Sample, queries: Sequence[str], ctx: RouteContext, kind: str | None = None) -> np.ndarray:
    data, model = ctx.inferred(sample), ctx.text_models.shipped
    held_out_check(model, sample.patient)
    return text_scores(data, model, queries, ctx, kind)


@register_route(IMAGE, "H&E → image–text (aligned head)", he_only=True)
def aligned(sample: Sample, queries: Sequence[str], ctx: RouteContext, kind: str | None = None) -> np.ndarray:
    emb, model = ctx.aligned_embeddings(sample), ctx.text_models.shipped
    held_out_check(model, sample.patient)
    return text_scores(emb, model, queries, ctx, kind)


def _imagetext_scores(name: str, sample: Sample, queries: Sequence[str], ctx: RouteContext, kind: str | None = None
                ) -> np.ndarray:
    """PLIP / CONCH scores; tile embeddings are kept in ``sample.adata.obsm`` for later tasks."""
    from .. import keys
    from ..imagetext.tile_zeroshot import embed_tiles, score_tiles

    if not sample.has_image:
        raise RouteUnavailable("no H&E")
    model = ctx.image_text_model(name)
    key = keys.IMAGE_TEXT_EMB_PREFIX + model.name
    made = sample.adata.uns.get(keys.IMAGE_TEXT_INFO, {}).get(model.name, {})
    if key in sample.adata.obsm and made.get("weights") == model.weights:
        emb = np.asarray(sample.adata.obsm[key])
    else:
        emb = embed_tiles(model, sample.adata, batch_size=ctx.cfg.image_batch_size, progress=ctx.progress)
    res = score_tiles(model, emb, list(queries), vocabulary=ctx.vocabulary)
    return res.probabilities if (kind or ctx.cfg.score) == "probability" else res.similarity


@register_route(PLIP, "PLIP", he_only=True)
def plip(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return _imagetext_scores("plip", sample, queries, ctx)


@register_route(CONCH, "CONCH", he_only=True)
def conch(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return _imagetext_scores("conch", sample, queries, ctx)


def class_proteins(query: str, ctx: RouteContext) -> list[str]:
    """Panel names of the marker proteins the class query's term lists (unknown names dropped)."""
    from ..proteins import find_marker

    term = ctx.vocabulary.lookup(query)
    found = [find_marker(p) for p in (term.proteins if term else [])]
    return list(dict.fromkeys(m for m in found if m))


@register_route(PROTEIN, "H&E → virtual proteins", he_only=True)
def proteins(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    from .. import keys
    from ..proteins import proteins_from_expression

    inf = ctx.inferred(sample).copy()
    proteins_from_expression(inf)
    levels = np.asarray(inf.obsm[keys.PROTEINS], dtype=np.float64)
    names = list(inf.uns[keys.PROTEIN_MARKERS])
    out = np.full((inf.n_obs, len(queries)), np.nan)
    for j, q in enumerate(queries):
        cols = [names.index(m) for m in class_proteins(q, ctx)]
        cols = [c for c in cols if np.isfinite(levels[:, c]).any()]
        if cols:
            out[:, j] = np.nanmean(levels[:, cols], axis=1)
    return out


@register_route(FUSED, "fused H&E search", he_only=True)
def fused(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    """The search engine's own fused relevance of each class query (:meth:`SearchEngine.search` on the
    sample's search view: inferred / aligned out of fold, proteins, PLIP / CONCH when given)."""
    weights = fusion_settings(ctx)
    engine = ctx.search_engine(sample, weights)
    out = np.full((sample.adata.n_obs, len(queries)), np.nan)
    for j, q in enumerate(queries):
        res = engine.search(q, slides=[sample.name], weights=weights, explain=False)
        if res.readable:
            out[:, j] = res.slides[0].fused
            ctx._cache.setdefault("fused_parts", set()).update(res.routes)
    return out


def fusion_settings(ctx: RouteContext) -> dict[str, float]:
    """Route weights of the search config (``configs/search.yaml``): the benchmark's fused column is the
    search engine's own scoring. A missing search config is an error, not a silent fallback."""
    if "fusion" not in ctx._cache:
        ctx._cache["fusion"] = {k: float(v) for k, v in ctx.search_config().weights.items()}
    return ctx._cache["fusion"]


@register_route("marker", "marker genes (measured)")
def marker(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return marker_gene_scores(sample.adata, list(queries), vocabulary=ctx.vocabulary, mode=ctx.cfg.marker_mode)


@register_route("marker_inferred", "marker genes (inferred)", he_only=True)
def marker_inferred(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return marker_gene_scores(ctx.inferred(sample), list(queries), vocabulary=ctx.vocabulary, mode=ctx.cfg.marker_mode)


@register_route("chance", "chance")
def chance(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return chance_scores(sample.adata.n_obs, len(queries), seed=ctx.cfg.seed + zlib.crc32(sample.name.encode()))

