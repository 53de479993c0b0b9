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

from ..encoders.clip_models import ImageTextModel
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
        """Inferred log1p expression of ``sample``'s spots (same obs order): out-of-fold for her2st
        sections, the shipped expression model for user slides."""
        key = f"inferred/{sample.name}"
        if key in self._cache:
            return self._cache[key]
        if not sample.has_image:
            raise RouteUnavailable("no H&E")
        if sample.patient is not None:
            oof = self._oof_expression()
            if sample.name not in oof:
                raise RouteUnavailable(f"no out-of-fold expression for {sample.name}")
            out = aligned_rows(oof[sample.name], sample.adata, f"inferred expression of {sample.name}")
        else:
            from ..expression.pretrained import ExpressionModel
            from ..expression.workflow import with_features

            if "expression_model" not in self._cache:
                self._cache["expression_model"] = ExpressionModel.from_pretrained()
            model = self._cache["expression_model"]
            out = model.predict(with_features(sample.adata, model.encoder, progress=self.progress))
        self._cache[key] = out
        return out

    # -- aligned image head -----------------------------------------------------------------------
    def aligned_embeddings(self, sample: Sample) -> np.ndarray:
        """Aligned-head spot embeddings ``(n, D)`` in the shipped text model's space."""
        if not sample.has_image:
            raise RouteUnavailable("no H&E")
        if sample.patient is not None:
            if "aligned_oof" not in self._cache:
                from ..imagetext.aligned_pipeline import oof_image_embeddings

                self._cache["aligned_oof"] = oof_image_embeddings(
                    self.data_dir, text_model=self.text_models.shipped, progress=self.progress
                )
            emb = self._cache["aligned_oof"].get(sample.name)
            if emb is None:
                raise RouteUnavailable(f"no out-of-fold aligned embeddings for {sample.name}")
            if len(emb) != sample.adata.n_obs:
                raise ValueError(f"aligned embeddings of {sample.name}: {len(emb)} rows for {sample.adata.n_obs} spots")
            return emb
        from ..expression.workflow import with_features
        from ..imagetext.aligned import AlignedImageModel

        if "aligned_model" not in self._cache:
            try:
                self._cache["aligned_model"] = AlignedImageModel.from_pretrained(text_model=self.text_models.shipped)
            except FileNotFoundError as err:
                raise RouteUnavailable("no shipped aligned head") from err
        model = self._cache["aligned_model"]
        return model.embed(with_features(sample.adata, model.encoder, progress=self.progress), store=False)

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
