"""Zero-shot and paraphrase routes: is a class recognised by a text model that never read it, and
when it is asked for in words no caption contains?

=================  ===========================================================================
route              score of class ``c`` on a spot
=================  ===========================================================================
measured_heldout   measured expression → a text model trained on the same patients as the
                   ``measured`` route's model but with every caption naming ``c``'s concept
                   removed (``configs/bench/concepts.yaml``); softmax over the class queries,
                   column ``c`` — zero-shot recognition of an unseen concept
transcriptome_heldout  the same on H&E → inferred expression (the ``transcriptome`` route's patients)
measured_para{k}   the ``measured`` route's model with ``c``'s query replaced by the ``k``-th
                   paraphrase of its concept (templates only, no synonyms); the paraphrases are
                   checked against every caption the model read: none may contain one
=================  ===========================================================================

Classes without a concept (or with fewer than ``k`` paraphrases) are NaN in these routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..config import ConfigError
from ..language.heldout import captions_containing
from ..prompts import Term, Vocabulary
from ..routes import TRANSCRIPTOME
from .context import RouteContext, RouteUnavailable
from .registry import register_route
from .scorers import text_scores
from .tasks import Sample
from .text_models import held_out_check

PARAPHRASES = 3  #: paraphrase routes measured_para1 … measured_para3


def _per_concept(sample: Sample, queries: Sequence[str], ctx: RouteContext, data: Callable[[], object]) -> np.ndarray:
    """Column ``c`` scored by the model without ``c``'s concept (one model per concept)."""
    if not any(ctx.concepts):
        raise RouteUnavailable("no class names a held-out concept")
    out = np.full((sample.adata.n_obs, len(queries)), np.nan)
    inputs = data()
    for j, concept in enumerate(ctx.concepts):
        if concept is None:
            continue
        try:
            model = ctx.text_models.for_patient(sample.patient, concept)
        except FileNotFoundError as err:  # no her2st data to train the held-out-concept model on
            raise RouteUnavailable("needs her2st data (--data-dir) to train") from err
        held_out_check(model, sample.patient)
        out[:, j] = text_scores(inputs, model, queries, ctx, None)[:, j]
    return out


@register_route("measured_heldout", "measured expr → text, concept held out (zero-shot)")
def measured_heldout(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return _per_concept(sample, queries, ctx, lambda: sample.adata)


@register_route(f"{TRANSCRIPTOME}_heldout", "H&E → inferred expr → text, concept held out (zero-shot)", he_only=True)
def inferred_heldout(sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    return _per_concept(sample, queries, ctx, lambda: ctx.inferred(sample))


def paraphrase_vocabulary(base: Vocabulary, queries: Sequence[str], j: int, phrase: str) -> tuple[list[str], Vocabulary]:
    """Class queries with query ``j`` replaced by ``phrase`` and a vocabulary in which ``phrase`` is a
    term of its own (no synonyms; looked up first, so a phrase that is another term's synonym stays alone)."""
    qs = list(queries)
    qs[j] = phrase
    terms = {phrase: Term(name=phrase)}
    terms.update({k: t for k, t in base.terms.items() if k != queries[j]})
    return qs, Vocabulary(terms=terms, templates=base.templates)


def _paraphrase(k: int, sample: Sample, queries: Sequence[str], ctx: RouteContext) -> np.ndarray:
    if not any(c is not None and len(c.paraphrases) >= k for c in ctx.concepts):
        raise RouteUnavailable(f"no class has {k} paraphrases")
    model = ctx.text_models.for_patient(sample.patient)
    held_out_check(model, sample.patient)
    phrases = {j: c.paraphrases[k - 1] for j, c in enumerate(ctx.concepts) if c is not None and len(c.paraphrases) >= k}
    memo = ctx._cache.setdefault("paraphrase_checked", set())
    who = "user data" if sample.patient is None else sample.patient
    if sample.patient is not None and (who, k) not in memo:
        found = captions_containing(ctx.text_models.training_texts(sample.patient), list(phrases.values()))
        if found:
            raise ConfigError(f"paraphrases {sorted(found)} occur in training captions of the model for patient "
                              f"{who} (e.g. {next(iter(found.values()))!r}): pick wordings no caption contains")
        memo.add((who, k))
    out = np.full((sample.adata.n_obs, len(queries)), np.nan)
    for j, phrase in phrases.items():
        qs, vocab = paraphrase_vocabulary(ctx.vocabulary, queries, j, phrase)
        probs = text_scores(sample.adata, model, qs, RouteContext(ctx.cfg, vocab, ctx.text_models), None)
        out[:, j] = probs[:, j]
    return out


for _k in range(1, PARAPHRASES + 1):
    register_route(f"measured_para{_k}", f"measured expr → text, paraphrase {_k}")(
        lambda sample, queries, ctx, k=_k: _paraphrase(k, sample, queries, ctx))
