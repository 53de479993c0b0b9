"""AnnData with embeddings in ``obsm`` → a collection (new, replaced, or extended by slides).

Which model made ``obsm[k]`` is read, in order, from the caller's ``models``, from
``uns["embedding_models"][k]`` (``{"name", "version", "dim"}``), and from the records the
stages leave: ``uns["image_text"][m]`` (image-text models) and ``uns["text_emb_info"]``
(transcriptome-text model). Spots whose vector is all-NaN in a route ("not embedded") are left
out with a warning; partly non-finite vectors are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np

from .. import keys
from .config import IndexConfig, load_index_config, resolve_index_dir
from .faiss_collection import CollectionIndex, list_collections
from .manifest import RouteModel
from .metadata import SlideData, slides_from_anndata

log = logging.getLogger(__name__)

#: Model name recorded for the transcriptome-text route (``obsm["text_emb"]``).
TEXT_MODEL_NAME = "spotwhisper-text"
_TEXT_EMB_INFO = "text_emb_info"  # written by spotwhisper.language.transcriptome_zeroshot.embed


def model_from_uns(adata: ad.AnnData, obsm_key: str) -> RouteModel | None:
    """The model that made ``adata.obsm[obsm_key]`` as recorded in ``uns``, or None when unrecorded."""
    dim = int(np.shape(adata.obsm[obsm_key])[1]) if obsm_key in adata.obsm else None
    rec = adata.uns.get(keys.EMBEDDING_MODELS, {}).get(obsm_key)
    if rec:
        return RouteModel(str(rec["name"]), int(rec.get("dim", dim)), rec.get("version"))
    if obsm_key.startswith(keys.IMAGE_TEXT_EMB_PREFIX):
        name = obsm_key[len(keys.IMAGE_TEXT_EMB_PREFIX) :]
        rec = adata.uns.get(keys.IMAGE_TEXT_INFO, {}).get(name)
        if rec:
            return RouteModel(
                name, int(rec.get("embed_dim", dim)), str(rec.get("weights")) if rec.get("weights") else None
            )
    if obsm_key == keys.TEXT_EMB and adata.uns.get(_TEXT_EMB_INFO):
        rec = adata.uns[_TEXT_EMB_INFO]
        return RouteModel(TEXT_MODEL_NAME, int(rec.get("dim", dim)), rec.get("fingerprint"))
    return None


def _drop_unembedded(slides: list[SlideData]) -> list[SlideData]:
    """Leave out spots whose vector is all-NaN in any route (stages mark 'not embedded' that way)."""
    out = []
    for s in slides:
        keep = np.ones(len(s), dtype=bool)
        for route, vec in s.vectors.items():
            empty = np.isnan(np.asarray(vec, dtype=np.float32)).all(axis=1)
            if empty.any():
                log.warning(
                    "slide %r, route %r: %d of %d spots not embedded (all-NaN); left out of the index",
                    s.slide,
                    route,
                    empty.sum(),
                    len(s),
                )
            keep &= ~empty
        if not keep.any():
            log.warning("slide %r: no embedded spots; skipped", s.slide)
            continue
        out.append(SlideData(s.slide, s.metadata.loc[keep], {r: np.asarray(v)[keep] for r, v in s.vectors.items()}))
    return out


def resolve_routes(adatas: Sequence[ad.AnnData], routes: Mapping[str, str] | None, cfg: IndexConfig) -> dict[str, str]:
    """Routes to index (name → obsm key): ``routes``, else the configured ones every AnnData holds."""
    if routes:
        return dict(routes)
    found = {r: k for r, k in cfg.routes.items() if all(k in a.obsm for a in adatas)}
    if not found:
        have = sorted(set().union(*(a.obsm.keys() for a in adatas)))
        raise KeyError(
            f"no configured route's embeddings in the AnnData (routes: {cfg.routes}; obsm keys: {have}); "
            "name them with routes=/--route"
        )
    return found


def build_from_anndata(
    adatas: ad.AnnData | Sequence[ad.AnnData],
    collection: str,
    *,
    routes: Mapping[str, str] | None = None,
    models: Mapping[str, RouteModel] | None = None,
    index_dir: str | Path | None = None,
    cfg: IndexConfig | None = None,
    factory: str | Mapping[str, str] | None = None,
    mode: str = "create",
) -> CollectionIndex:
    """Index the embeddings held in ``adatas`` into ``collection``; returns the opened collection.

    ``routes`` maps route → obsm key (default: configured routes present in every AnnData);
    ``models`` gives each route's model (default: read from ``uns``, see module doc). ``mode`` is
    ``"create"`` (fail if it exists), ``"overwrite"`` (replace it) or ``"add"`` (add the slides to
    an existing collection, creating it when missing). One slide per ``obs["section"]`` value.
    """
    if mode not in ("create", "overwrite", "add"):
        raise ValueError(f"mode must be 'create', 'overwrite' or 'add', got {mode!r}")
    cfg = cfg or load_index_config()
    adatas = [adatas] if isinstance(adatas, ad.AnnData) else list(adatas)
    if not adatas:
        raise ValueError("no AnnData to index")
    routes = resolve_routes(adatas, routes, cfg)
    chosen: dict[str, RouteModel] = dict(models or {})
    for route, key in routes.items():
        if route in chosen:
            continue
        found = {m for a in adatas if (m := model_from_uns(a, key)) is not None}
        if len(found) != 1:
            what = "no record" if not found else f"different models {sorted(map(str, found))}"
            raise ValueError(
                f"route {route!r} (obsm[{key!r}]): {what} of the model that made the embeddings in uns; "
                f"pass models={{'{route}': RouteModel(name, dim, version)}} (CLI: --model {route}=NAME[@VERSION])"
            )
        chosen[route] = found.pop()
    slides: list[SlideData] = []
    for a in adatas:
        slides.extend(slides_from_anndata(a, routes, columns=cfg.metadata_columns))
    slides = _drop_unembedded(slides)
    log.info(
        "indexing %d slides, %d spots, routes %s into %r",
        len(slides),
        sum(map(len, slides)),
        sorted(routes),
        collection,
    )
    exists = collection in list_collections(resolve_index_dir(index_dir, cfg))
    if mode == "add" and exists:
        coll = CollectionIndex.open(collection, index_dir=index_dir, models=chosen, cfg=cfg)
        coll.add_slides(slides)
        return coll
    return CollectionIndex.build(
        collection, slides, chosen, index_dir=index_dir, cfg=cfg, factory=factory, overwrite=mode == "overwrite"
    )
