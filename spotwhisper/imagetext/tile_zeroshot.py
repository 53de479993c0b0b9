"""Zero-shot scoring of image tiles against text queries with any :class:`ImageTextModel`.

A query is embedded with prompt ensembling (CLIP / CONCH recipe, :mod:`spotwhisper.prompts`):
when it names a vocabulary term, every synonym of the term goes into every template of the
``"image"`` route; otherwise the query itself does. Prompt embeddings are kept in an LRU cache
keyed by (model name, weights, prompt), so repeated searches do not re-run the text tower.

Scores per tile and query: cosine similarity, logits (cosine × the model's ``logit_scale``),
softmax probabilities over the candidate queries (plus optional background terms that compete
without being returned) and z-scores of the cosine over the tiles of the slide.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import anndata as ad
import numpy as np

from .. import keys
from ..encoders.clip_models import ImageTextModel
from ..io.slide import Slide
from ..io.spatial import open_source_slide
from ..prompts import Vocabulary, ensemble_text_embeddings, load_vocabulary, normalize_text
from ..routes import ZeroShotScores
from ..tiles import SpotTileConfig, iter_tile_batches, spot_layout
from .config import ImageTextConfig

log = logging.getLogger(__name__)

DEFAULT_ROUTE = ImageTextConfig.templates_route  #: template route of configs/vocabulary.yaml
DEFAULT_CACHE_SIZE = ImageTextConfig.text_cache_size  #: prompts kept by the module-level cache
DEFAULT_BATCH_SIZE = ImageTextConfig.batch_size  #: tiles per forward pass


class TextEmbeddingCache:
    """LRU cache of prompt embeddings ``(D,)`` keyed by (model name, weights, prompt)."""

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE):
        if maxsize < 1:
            raise ValueError(f"cache size must be ≥ 1, got {maxsize}")
        self.maxsize = maxsize
        self._store: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def encode(self, model: ImageTextModel, prompts: Sequence[str]) -> np.ndarray:
        """Embeddings ``(len(prompts), D)`` float32; only prompts not cached go through the model."""
        keyed = [(model.name, model.weights, p) for p in prompts]
        todo = list(dict.fromkeys(k for k in keyed if k not in self._store))
        self.hits += len(keyed) - len(todo)
        self.misses += len(todo)
        fresh = {}
        if todo:
            emb = model.encode_text([k[2] for k in todo]).cpu().numpy().astype(np.float32)
            fresh = dict(zip(todo, emb))
        out = []
        for k in keyed:
            vec = fresh[k] if k in fresh else self._store[k]
            self._store[k] = vec
            self._store.move_to_end(k)
            out.append(vec)
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return np.stack(out) if out else np.empty((0, model.embed_dim), np.float32)


#: The cache :func:`score_tiles` uses unless given another.
TEXT_CACHE = TextEmbeddingCache()


@lru_cache(maxsize=1)
def _default_vocabulary() -> Vocabulary:
    return load_vocabulary()


def _check_queries(queries: str | Sequence[str], what: str = "query") -> list[str]:
    items = [queries] if isinstance(queries, str) else list(queries)
    if not items:
        raise ValueError(f"no {what} given")
    for q in items:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"empty {what} {q!r}: give some text to search for")
    return [q.strip() for q in items]


def embed_queries_for_tiles(
    model: ImageTextModel,
    queries: str | Sequence[str],
    *,
    vocabulary: Vocabulary | None = None,
    templates: Sequence[str] | None = None,
    route: str = DEFAULT_ROUTE,
    cache: TextEmbeddingCache | None = None,
) -> np.ndarray:
    """Prompt-ensembled query embeddings ``(Q, D)``, L2-normalised.

    A query naming a vocabulary term (or synonym) expands to all of the term's names; templates
    default to the vocabulary's ``route`` templates. ``vocabulary=None`` uses configs/vocabulary.yaml.
    """
    items = _check_queries(queries)
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    tmpl = list(templates) if templates is not None else vocab.templates_for(route)
    classes = []
    for q in items:
        term = vocab.lookup(q)
        classes.append(term.names if term is not None else [q])
    cache = cache if cache is not None else TEXT_CACHE
    return ensemble_text_embeddings(lambda prompts: cache.encode(model, prompts), classes, tmpl)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Row softmax; rows with a NaN (tiles without an embedding) stay NaN."""
    out = np.full_like(x, np.nan)
    ok = np.isfinite(x).all(axis=1)
    e = np.exp(x[ok] - x[ok].max(axis=1, keepdims=True))
    out[ok] = e / e.sum(axis=1, keepdims=True)
    return out


def score_tiles(
    model: ImageTextModel,
    tile_embeddings: np.ndarray,
    queries: str | Sequence[str],
    *,
    vocabulary: Vocabulary | None = None,
    background: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    route: str = DEFAULT_ROUTE,
    cache: TextEmbeddingCache | None = None,
) -> ZeroShotScores:
    """Score tiles ``(n, D)`` (L2-normalised image embeddings of ``model``; NaN rows allowed)
    against ``queries``; ``background`` terms join the softmax as competitors only."""
    items = _check_queries(queries)
    emb = np.asarray(tile_embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] != model.embed_dim:
        raise ValueError(f"tile embeddings must be (n, {model.embed_dim}) for {model.name}, got {emb.shape}")
    own = {normalize_text(q) for q in items}
    extra = (
        [b for b in _check_queries(background, "background term") if normalize_text(b) not in own] if background else []
    )
    kw = {"vocabulary": vocabulary, "templates": templates, "route": route, "cache": cache}
    text = embed_queries_for_tiles(model, items + extra, **kw)
    if len(items) == 1 and not extra:
        log.info("one query and no background: probabilities are all 1; use cosine/zscores or add background terms")
    cos_all = emb @ text.T
    scale = model.logit_scale
    probs = _softmax(cos_all * scale)[:, : len(items)]
    cos = cos_all[:, : len(items)]
    return ZeroShotScores(
        queries=items,
        similarity=cos,
        probabilities=probs.astype(np.float32),
        logit_scale=scale,
        text_embeddings=text[: len(items)],
        background=extra,
    )


def embed_tiles(
    model: ImageTextModel,
    adata: ad.AnnData,
    *,
    slide: Slide | None = None,
    scale: float = 1.0,
    tile_cfg: SpotTileConfig | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    indices: np.ndarray | None = None,
    library_id: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed the spot tiles of a slide; writes ``obsm["image_text_emb_<model>"]`` and returns it.

    Tiles are spot-centred (``tile_cfg.tile_um`` µm, default the spot spacing), read at
    ``model.image_size`` px. ``slide``/``scale`` default to the source image in ``uns["spatial"]``.
    ``indices`` embeds only those spots; the other rows are NaN. Output ``(n_obs, D)`` float32.
    """
    own_slide = slide is None
    if own_slide:
        slide, scale = open_source_slide(adata, library_id)
    try:
        layout = spot_layout(adata, slide, scale, tile_cfg, library_id)
        out = np.full((adata.n_obs, model.embed_dim), np.nan, dtype=np.float32)
        for batch in iter_tile_batches(
            slide,
            layout,
            out_px=model.image_size,
            batch_size=batch_size,
            with_subtiles=False,
            indices=indices,
            progress=progress,
            desc=f"{model.name} tiles",
        ):
            out[batch.indices] = model.embed_images(batch.tiles, batch_size)
    finally:
        if own_slide:
            slide.close()
    adata.obsm[keys.IMAGE_TEXT_EMB_PREFIX + model.name] = out
    info = adata.uns.setdefault(keys.IMAGE_TEXT_INFO, {})
    info[model.name] = {
        "weights": model.weights,
        "embed_dim": model.embed_dim,
        "image_size_px": model.image_size,
        "tile_um": float(layout.side_um),
        "mpp": float(layout.mpp),
        "n_embedded": int(np.isfinite(out[:, 0]).sum()),
    }
    return out
