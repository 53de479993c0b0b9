"""What the routes share during one benchmark run: settings, the task vocabulary, leakage-safe text
models, and lazily built H&E resources (out-of-fold inferred expression and aligned-head
embeddings for her2st, predictions of the shipped models for user slides, PLIP / CONCH models).

Everything H&E-derived for a her2st section comes *out of fold* (a model trained on the other
sections of patient C), so no image route scores a section it was trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from ..routes import CONCH, IMAGE, PLIP, PROTEIN, TRANSCRIPTOME
from ..encoders.clip_models import ImageTextModel
from ..language.heldout import Concept
from ..prompts import Vocabulary
from .config import BenchConfig
from .tasks import Sample
from .text_models import TextModels

log = logging.getLogger(__name__)


class RouteUnavailable(Exception):
    """A route cannot score a sample; ``args[0]`` is the short reason shown in the table ("no H&E")."""


@dataclass
class ImageTextWeights:
    """Where the optional image–text models come from (``None`` = not given: the route is n/a)."""

    plip: str | None = None  #: PLIP hub id (local cache) or save_pretrained folder
    conch: Path | None = None  #: CONCH ``pytorch_model.bin``
    conch_tokenizer: Path | None = None


@dataclass
class RouteContext:
    """Shared state of one run (see the module docstring). ``scores`` caches route scores per
    (route, sample) — or the :class:`RouteUnavailable` raised — so composite routes reuse them."""

    cfg: BenchConfig
    vocabulary: Vocabulary
    text_models: TextModels
    concepts: list[Concept | None] = field(default_factory=list)  #: held-out concept of each class (task order)
    data_dir: str | Path | None = None
    weights: ImageTextWeights = field(default_factory=ImageTextWeights)
    progress: bool = True
    scores: dict[tuple[str, str], np.ndarray | RouteUnavailable] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    # -- inferred expression ---------------------------------------------------------------------
    def _oof_expression(self) -> dict[str, ad.AnnData]:
        if "oof" not in self._cache:
            from ..config import load_config
            from ..expression.config import ExpressionConfig
            from ..expression.workflow import oof_expression

            cfg = load_config(ExpressionConfig, self.cfg.expression_config)
            self._cache["oof"] = oof_expression(self.data_dir, cfg, progress=self.progress)
        return self._cache["oof"]

    def inferred(self, sample: Sample) -> ad.AnnData:
        """Inferred log1p expression of ``sample``'s spots (same obs order): out-of-fold for the her2st
        sections the shipped expression model was trained on, the shipped model for every other slide."""
        key = f"inferred/{sample.name}"
        if key in self._cache:
            return self._cache[key]
        if not sample.has_image:
            raise RouteUnavailable("no H&E")
        from ..expression.workflow import with_features

        model = self._shipped("expression_model")
        if sample.patient is not None and sample.name in model.cfg.sections:
            oof = self._oof_expression()
            if sample.name not in oof:
                raise RouteUnavailable(f"no out-of-fold expression for {sample.name}")
            out = aligned_rows(oof[sample.name], sample.adata, f"inferred expression of {sample.name}")
        else:  # a section the shipped model never saw (her2st B4) or a user slide
            out = model.predict(with_features(sample.adata, model.encoder, progress=self.progress))
        self._cache[key] = out
        return out

    # -- aligned image head -----------------------------------------------------------------------
    def aligned_embeddings(self, sample: Sample) -> np.ndarray:
        """Aligned-head spot embeddings ``(n, D)`` in the shipped text model's space: out of fold for the
        sections the shipped head was trained on, the shipped head for every other slide."""
        if not sample.has_image:
            raise RouteUnavailable("no H&E")
        from ..expression.workflow import with_features

        model = self._shipped("aligned_model")
        if sample.patient is not None and sample.name in model.cfg.sections:
            if "aligned_oof" not in self._cache:
                from ..imagetext.train import oof_image_embeddings

                self._cache["aligned_oof"] = oof_image_embeddings(
                    self.data_dir, text_model=self.text_models.shipped, progress=self.progress
                )
            emb = self._cache["aligned_oof"].get(sample.name)
            if emb is None:
                raise RouteUnavailable(f"no out-of-fold aligned embeddings for {sample.name}")
            if len(emb) != sample.adata.n_obs:
                raise ValueError(f"aligned embeddings of {sample.name}: {len(emb)} rows for {sample.adata.n_obs} spots")
            return emb
        return model.embed(with_features(sample.adata, model.encoder, progress=self.progress), store=False)

    def _shipped(self, which: str):
        """The shipped expression model or aligned head (loaded once); they record their training sections."""
        if which not in self._cache:
            from ..expression.pretrained import ExpressionModel
            from ..imagetext.aligned import AlignedImageModel

            try:
                self._cache[which] = (ExpressionModel.from_pretrained() if which == "expression_model"
                                      else AlignedImageModel.from_pretrained(text_model=self.text_models.shipped))
            except FileNotFoundError as err:
                raise RouteUnavailable(f"no shipped {which.replace('_', ' ')}") from err
        return self._cache[which]

    # -- the search engine -----------------------------------------------------------------------
    def search_slide(self, sample: Sample, weights: dict[str, float]) -> ad.AnnData:
        """``sample`` as the search engine sees a processed H&E slide, with what the routes weighted in
        ``weights`` read: inferred expression (``X``, ``layers["log1p"]``) and its text embedding by the
        shipped model, the aligned-head embedding, the virtual protein panel, PLIP / CONCH tile embeddings."""
        from .. import keys

        parts = tuple(sorted(r for r in (TRANSCRIPTOME, IMAGE, PROTEIN, PLIP, CONCH) if weights.get(r, 0) > 0))
        key = f"search/{sample.name}/{parts}"
        if key in self._cache:
            return self._cache[key]
        if not sample.has_image:
            raise RouteUnavailable("no H&E")
        if {TRANSCRIPTOME, PROTEIN} & set(parts):
            view = self.inferred(sample).copy()
        else:
            view = ad.AnnData(obs=sample.adata.obs.copy())
        view.obsm[keys.SPATIAL] = np.asarray(sample.adata.obsm[keys.SPATIAL])
        view.uns[keys.SPATIAL] = sample.adata.uns.get(keys.SPATIAL, {})
        view.obs[keys.SECTION] = sample.name
        if TRANSCRIPTOME in parts:
            from ..language.transcriptome_zeroshot import embed

            embed(view, self.text_models.shipped)
        if IMAGE in parts:
            view.obsm[keys.IMAGE_TEXT_EMB_ALIGNED] = self.aligned_embeddings(sample)
        if PROTEIN in parts:
            from ..proteins import proteins_from_expression

            proteins_from_expression(view)
        for name in {PLIP, CONCH} & set(parts):
            try:
                model = self.image_text_model(name)
            except RouteUnavailable:
                continue
            from ..imagetext.tile_zeroshot import embed_tiles

            made = sample.adata.uns.get(keys.IMAGE_TEXT_INFO, {}).get(model.name, {})
            tile_key = keys.IMAGE_TEXT_EMB_PREFIX + model.name
            view.obsm[keys.IMAGE_TEXT_EMB_PREFIX + name] = (
                np.asarray(sample.adata.obsm[tile_key]) if tile_key in sample.adata.obsm and made.get("weights") == model.weights
                else embed_tiles(model, sample.adata, batch_size=self.cfg.image_batch_size, progress=self.progress))
        self._cache[key] = view
        return view

    def search_config(self):
        """The search settings the fused route and the relevance bench score with (``cfg.search_config``,
        ``configs/search.yaml``), read once. A missing search config is an error, not a silent fallback."""
        if "search_config" not in self._cache:
            from ..config import load_config
            from ..search.config import SearchConfig

            self._cache["search_config"] = load_config(SearchConfig, self.cfg.search_config)
        return self._cache["search_config"]

    def search_engine(self, sample: Sample, weights: dict[str, float]):
        """A search engine over ``sample``'s :meth:`search_slide` view (configs/search.yaml, the shipped
        text model, PLIP / CONCH when given) — the scoring users get."""
        view = self.search_slide(sample, weights)
        key = f"engine/{id(view)}"
        if key not in self._cache:
            from ..search.engine import SearchEngine

            models = {}
            for n in (PLIP, CONCH):
                try:
                    models[n] = self.image_text_model(n)
                except RouteUnavailable:
                    pass
            self._cache[key] = SearchEngine({sample.name: view}, text_model=self.text_models.shipped,
                                            image_text_models=models, cfg=self.search_config())
        return self._cache[key]

    # -- PLIP / CONCH --------------------------------------------------------------------------
    def image_text_model(self, name: str) -> ImageTextModel:
        """PLIP or CONCH from the weights given on the command line (else :class:`RouteUnavailable`)."""
        if name in self._cache:
            return self._cache[name]
        from ..imagetext.config import ConchSettings, ImageTextConfig, PlipSettings, load_model

        if name == "plip" and self.weights.plip is None:
            raise RouteUnavailable("no weights: --plip")
        if name == "conch" and self.weights.conch is None:
            raise RouteUnavailable("no weights: --conch")
        cfg = ImageTextConfig(
            model=name,  # type: ignore[arg-type]
            plip=PlipSettings(source=self.weights.plip or PlipSettings.source),
            conch=ConchSettings(checkpoint=self.weights.conch, tokenizer=self.weights.conch_tokenizer),
            batch_size=self.cfg.image_batch_size,
        )
        self._cache[name] = load_model(cfg, name)
        return self._cache[name]


def aligned_rows(source: ad.AnnData, target: ad.AnnData, what: str) -> ad.AnnData:
    """``source`` with rows in ``target``'s obs order (matched by obs name); error if spots differ."""
    if list(source.obs_names) == list(target.obs_names):
        return source
    missing = target.obs_names.difference(source.obs_names)
    if len(missing):
        raise ValueError(f"{what}: {len(missing)} spots missing, e.g. {list(missing[:3])}")
    return source[target.obs_names].copy()
