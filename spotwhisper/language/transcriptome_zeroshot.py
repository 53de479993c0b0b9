"""Zero-shot scoring of spots against free-text queries in the transcriptome–text space.

``score(adata, ["adipose tissue", "immune infiltrate"])`` embeds every spot (or reuses
``obsm["text_emb"]`` made by the same model), embeds each query with prompt ensembling — every
template × synonym of the vocabulary term it names, averaged (CONCH) — and returns per-spot
cosine similarities and softmax probabilities over the queries (logits = cosine × logit scale).
Query embeddings are cached on the model, so repeated queries cost a dictionary look-up.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

import anndata as ad
import numpy as np

from .. import keys
from ..prompts import Vocabulary, ensemble_text_embeddings, load_vocabulary
from ..routes import TRANSCRIPTOME, ZeroShotScores
from .model import TextExpressionModel

log = logging.getLogger(__name__)

#: route whose templates the transcriptome space uses (``configs/vocabulary.yaml``)
ROUTE = TRANSCRIPTOME  #: the route whose prompt templates (configs/vocabulary.yaml) embed spot queries
#: name recorded in ``uns["embedding_models"]["text_emb"]`` (read by the index)
MODEL_NAME = "spotwhisper-text"
QUERY_CACHE_SIZE = 1024

_DEFAULT_MODEL: TextExpressionModel | None = None
_QUERY_LOCK = threading.Lock()  # the query-embedding caches on the models (one server, many sessions)


def default_model() -> TextExpressionModel:
    """The shipped default model, loaded once per process."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = TextExpressionModel.from_pretrained()
    return _DEFAULT_MODEL


@lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """``configs/vocabulary.yaml``, read once per process."""
    return load_vocabulary()


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def query_names(query: str, vocabulary: Vocabulary | None, ensemble: bool) -> list[str]:
    """The names a query is ensembled over: the vocabulary term's name + synonyms, or the query itself."""
    if ensemble and vocabulary is not None:
        term = vocabulary.lookup(query)
        if term is not None:
            return term.names
    return [query]


def embed_queries_for_spots(
    model: TextExpressionModel,
    queries: Sequence[str],
    *,
    ensemble: bool = True,
    vocabulary: Vocabulary | None = None,
    check: bool = True,
) -> np.ndarray:
    """Query embeddings ``(Q, D)`` in the shared space, L2-normalised, cached on ``model`` (thread-safe).

    Empty queries raise ``ValueError``; queries the text encoder reads badly warn
    (:class:`~spotwhisper.language.text_encoder.UnreadableQueryWarning`, unless ``check=False``:
    callers that report it themselves use :func:`unreadable_query`) and are still embedded.
    """
    if isinstance(queries, str):
        queries = [queries]
    if not queries:
        raise ValueError("no queries given: pass a list of strings such as ['adipose tissue']")
    vocabulary = vocabulary if vocabulary is not None else (default_vocabulary() if ensemble else None)
    templates = tuple(vocabulary.templates_for(ROUTE)) if (ensemble and vocabulary is not None) else ("{}",)
    with _QUERY_LOCK:
        cache: OrderedDict = model.__dict__.setdefault("_query_cache", OrderedDict())
    out = []
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"empty query {q!r}: give a few words describing tissue, e.g. 'adipose tissue'")
        names = query_names(q, vocabulary, ensemble)
        key = (tuple(names), templates)
        with _QUERY_LOCK:
            emb = cache.get(key)
            if emb is not None:
                cache.move_to_end(key)
        if emb is None:
            if check:
                model.text_encoder.check_query(q, _known_words(model, vocabulary))
            emb = ensemble_text_embeddings(model.encode_text, [names], list(templates))[0]
            with _QUERY_LOCK:
                cache[key] = emb
                while len(cache) > QUERY_CACHE_SIZE:
                    cache.popitem(last=False)
        out.append(emb)
    return np.stack(out).astype(np.float32)


def unreadable_query(model: TextExpressionModel, query: str, vocabulary: Vocabulary | None = None) -> str | None:
    """Why ``query`` reads badly to ``model``'s text encoder (the text of the
    :class:`~spotwhisper.language.text_encoder.UnreadableQueryWarning`), or None; no warning is raised."""
    return model.text_encoder.unreadable_message(query, _known_words(model, vocabulary))


def _known_words(model: TextExpressionModel, vocabulary: Vocabulary | None) -> set[str]:
    """Lower-case words the model knows beyond the tokenizer: vocabulary names/synonyms and panel genes."""
    known = model.__dict__.get("_known_words")
    if known is None:
        vocabulary = vocabulary or default_vocabulary()
        names = [n for t in vocabulary.terms.values() for n in t.names]
        known = {w for n in names for w in re.split(r"[\s/\-]+", n.lower()) if w} | {g.lower() for g in model.genes}
        model.__dict__["_known_words"] = known
    return known


def spot_embeddings(adata: ad.AnnData, model: TextExpressionModel) -> np.ndarray:
    """``obsm["text_emb"]`` when this model made it, else freshly encoded spots ``(n, D)``."""
    info = adata.uns.get(keys.TEXT_EMB_INFO, {})
    if keys.TEXT_EMB in adata.obsm and info.get("fingerprint") == model.fingerprint():
        return np.asarray(adata.obsm[keys.TEXT_EMB], dtype=np.float32)
    return model.encode_expression(adata)


def embed(adata: ad.AnnData, model: TextExpressionModel | None = None) -> ad.AnnData:
    """Store spot embeddings ``(n, D)`` in ``adata.obsm["text_emb"]`` (for FAISS search) and the model that
    made them in ``uns["text_emb_info"]`` and ``uns["embedding_models"]["text_emb"]``; returns ``adata``."""
    model = model or default_model()
    adata.obsm[keys.TEXT_EMB] = model.encode_expression(adata)
    fp, dim = model.fingerprint(), model.config.embed_dim
    adata.uns[keys.TEXT_EMB_INFO] = {"fingerprint": fp, "logit_scale": model.logit_scale, "dim": dim}
    adata.uns.setdefault(keys.EMBEDDING_MODELS, {})[keys.TEXT_EMB] = {"name": MODEL_NAME, "version": fp, "dim": dim}
    return adata


def score(
    adata: ad.AnnData | np.ndarray,
    queries: Sequence[str],
    model: TextExpressionModel | None = None,
    *,
    ensemble: bool = True,
    vocabulary: Vocabulary | None = None,
) -> ZeroShotScores:
    """Zero-shot scores of every spot against ``queries`` (see the module docstring).

    ``adata``: an AnnData (measured counts, or inferred log1p expression in ``layers["log1p"]``/``X``;
    genes matched by symbol) or a precomputed spot-embedding matrix ``(n, D)``. Writes nothing.
    """
    model = model or default_model()
    q = embed_queries_for_spots(model, queries, ensemble=ensemble, vocabulary=vocabulary)
    if isinstance(adata, ad.AnnData):
        emb, names = spot_embeddings(adata, model), list(adata.obs_names)
    else:
        emb = np.asarray(adata, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != q.shape[1]:
            raise ValueError(f"spot embeddings of shape {emb.shape}: expected (n, {q.shape[1]})")
        names = [str(i) for i in range(len(emb))]
    sim = emb @ q.T
    return ZeroShotScores(
        queries=list(queries),
        similarity=sim,
        probabilities=softmax(sim * model.logit_scale),
        logit_scale=model.logit_scale,
        obs_names=names,
    )


def illegible_words(model: TextExpressionModel, query: str) -> list[str]:
    """Words of ``query`` the text encoder cannot read at all: mostly letters of a script it was not
    trained on, or pieces its tokenizer does not know (``[UNK]``). Unusual but spellable words
    (rare terms, typos, random letters) are not listed: they are read, if badly."""
    import unicodedata

    enc = model.text_encoder
    out = []
    for word in query.split():
        core = word.strip(".,;:!?()[]'\"")
        letters = [c for c in core if c.isalpha()]
        latin = sum("LATIN" in unicodedata.name(c, "") for c in letters)
        if letters and latin < len(letters) / 2:
            out.append(word)
        elif core and enc.tokenizer.unk_token in enc.tokens(core):  # under the tokenizer's lock
            out.append(word)
    return out


def readable_fraction(model: TextExpressionModel, query: str, vocabulary: Vocabulary | None = None) -> float:
    """Fraction ``[0, 1]`` of the words of ``query`` the model's text encoder can read (see
    :meth:`~spotwhisper.language.text_encoder.TextEncoder.readability`; vocabulary words and panel
    genes count as readable). No warning is raised."""
    return model.text_encoder.readability(query, _known_words(model, vocabulary))
