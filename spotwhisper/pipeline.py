"""The whole pipeline on one slide: tiles → features → inferred transcriptome → proteins → embeddings.

:func:`process_slide` returns one AnnData per slide holding everything search needs: inferred
log1p expression (``X``) with its uncertainty (``layers``), the virtual protein panel
(``obsm["proteins"]``), the transcriptome–text embedding of the inferred expression
(``obsm["text_emb"]``), the aligned image embedding (``obsm["image_text_emb_aligned"]``), PLIP /
CONCH tile embeddings when configured, and — when the slide comes with measured counts — the
embedding of the measured transcriptome (``obsm["text_emb_measured"]``) for comparison.

Image models are chosen by the slide's resolution: the default (CNN) models hold across patients up
to ``coarse_above_mpp`` µm/px (``spotwhisper bench expression``); a coarser slide (a Space Ranger
``tissue_hires_image.png`` is ~3.5 µm/px) is read by the coarse models (stain statistics at 3.5
µm/px), and the choice is logged and kept in ``uns["pipeline"]["image_models"]`` (``keys.PIPELINE``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import anndata as ad
import numpy as np

from . import keys
from .config import load_config
from .encoders import create_encoder, extract_features, extract_grid_features
from .expression.pretrained import ExpressionModel
from .genes import looks_like_counts
from .imagetext.aligned import AlignedImageModel
from .io.inputs import SlideInput
from .language import TextExpressionModel
from .proteins import proteins_from_expression
from .tiles.config import SpotTileConfig, TileConfig
from .timing import stage

log = logging.getLogger(__name__)
#: a slide's X is embedded as measured expression only with at least this many genes (a panel, not a few markers)
MIN_MEASURED_GENES = 100



@dataclass
class PipelineConfig:
    """Which models the pipeline uses (``configs/pipeline.yaml``); ``None`` = the shipped default."""

    expression_model: str | None = None
    text_model: str | None = None
    aligned_model: str | None = None
    coarse_expression_model: str | None = None  #: for slides coarser than ``coarse_above_mpp`` (None = shipped expression-coarse)
    coarse_aligned_model: str | None = None  #: likewise (None = shipped aligned-coarse)
    coarse_above_mpp: float | None = 2.0  #: µm/px above which the coarse models read the slide (None = never)
    image_text_models: list[str] = field(default_factory=list)  #: "plip" / "conch" (weights in configs/imagetext.yaml)
    embed_measured: bool = True  #: also embed measured counts when the slide has them
    keep_features: bool = False  #: keep image features in the output (large)
    image_vec_dim: int = 128  #: dimensions of obsm["image_vec"], the pooled image vector for search by example (0 = none)
    image_vec_seed: int = 0  #: seed of its fixed random projection (one seed = comparable vectors)


@dataclass
class Models:
    """The models one pipeline run needs, loaded once."""

    expression: ExpressionModel
    text: TextExpressionModel
    aligned: AlignedImageModel | None
    image_text: dict = field(default_factory=dict)
    coarse_expression: ExpressionModel | None = None  #: for slides coarser than ``coarse_above_mpp``
    coarse_aligned: AlignedImageModel | None = None
    coarse_above_mpp: float | None = None

    @classmethod
    def load(cls, cfg: PipelineConfig | None = None) -> Models:
        cfg = cfg or load_config(PipelineConfig, "pipeline")
        text = TextExpressionModel.from_pretrained(cfg.text_model)
        try:
            aligned = AlignedImageModel.from_pretrained(cfg.aligned_model, text_model=text)
        except FileNotFoundError as err:
            log.warning("no aligned image head (%s); the image route is off", err)
            aligned = None
        image_text = {}
        if cfg.image_text_models:
            from .imagetext.config import ImageTextConfig, load_model

            it_cfg = load_config(ImageTextConfig, "imagetext")
            image_text = {name: load_model(it_cfg, name) for name in cfg.image_text_models}
        coarse_expression, coarse_aligned = _load_coarse(cfg, text)
        return cls(ExpressionModel.from_pretrained(cfg.expression_model), text, aligned, image_text,
                   coarse_expression, coarse_aligned, cfg.coarse_above_mpp)

    def for_slide(self, mpp: float | None, name: str = "slide") -> tuple[ExpressionModel, AlignedImageModel | None, str]:
        """The expression model and aligned head that read a slide of ``mpp`` µm/px, and which pair
        it is (``"default"`` or ``"coarse"``; see :func:`image_pair_for`)."""
        which = image_pair_for(mpp, self.coarse_above_mpp, self.coarse_expression is not None, name)
        if which == "coarse" and self.coarse_expression is not None:
            return self.coarse_expression, self.coarse_aligned, "coarse"
        return self.expression, self.aligned, "default"

    def describe(self, which: str = "default") -> dict[str, str]:
        """Model names and versions, for manifests (``which``: the image model pair a slide used)."""
        expression, aligned = (self.coarse_expression, self.coarse_aligned) if which == "coarse" else (self.expression, self.aligned)
        out = {"expression": f"{expression.encoder}/{len(expression.genes)} genes", "text": self.text.fingerprint(),
               "image_models": which}
        if aligned is not None:
            out["aligned"] = aligned.fingerprint()
        out.update({k: getattr(m, "weights", k) for k, m in self.image_text.items()})
        return out


def needs_coarse(mpp: float | None, limit: float | None) -> bool:
    """Whether a slide of ``mpp`` µm/px is coarser than the default image models hold (``limit``,
    ``coarse_above_mpp``; ``None``: never)."""
    return mpp is not None and limit is not None and mpp > limit


def image_pair_for(mpp: float | None, limit: float | None, have_coarse: bool, name: str = "slide") -> str:
    """``"coarse"`` or ``"default"``: the image model pair that reads a slide of ``mpp`` µm/px. The
    choice is logged; a coarse slide without a coarse model installed is warned about."""
    if not needs_coarse(mpp, limit):
        return "default"
    if not have_coarse:
        log.warning("%s: %.2f µm/px is coarser than %.1f µm/px, beyond what the default image models were "
                    "measured to hold, and no coarse model is installed; expect weaker inferred expression "
                    "(use a finer image if there is one)", name, mpp, limit)
        return "default"
    log.info("%s: %.2f µm/px is coarser than %.1f µm/px: read by the coarse image models", name, mpp, limit)
    return "coarse"


def expression_model_for(inp: SlideInput, cfg: PipelineConfig | None = None) -> ExpressionModel:
    """The configured expression model that reads ``inp`` at its µm/px (default or coarse, by
    :func:`image_pair_for`); only that model is loaded."""
    cfg = cfg or load_config(PipelineConfig, "pipeline")
    mpp = inp.slide.mpp if inp.slide is not None else None
    coarse = _load_coarse(cfg, None)[0] if needs_coarse(mpp, cfg.coarse_above_mpp) else None
    if image_pair_for(mpp, cfg.coarse_above_mpp, coarse is not None, inp.name) == "coarse" and coarse is not None:
        return coarse
    return ExpressionModel.from_pretrained(cfg.expression_model)


def _load_coarse(cfg: PipelineConfig, text: TextExpressionModel | None) -> tuple[ExpressionModel | None, AlignedImageModel | None]:
    """The coarse model pair (the aligned head only with ``text``), or ``(None, None)`` when routing
    is off or the expression model is missing."""
    from .expression.pretrained import COARSE_MODEL_DIR
    from .imagetext.aligned import COARSE_DIR

    if cfg.coarse_above_mpp is None:
        return None, None
    try:
        expression = ExpressionModel.from_pretrained(cfg.coarse_expression_model or COARSE_MODEL_DIR)
    except FileNotFoundError as err:
        log.warning("no coarse expression model (%s); slides coarser than %.1f µm/px use the default models",
                    err, cfg.coarse_above_mpp)
        return None, None
    if text is None:
        return expression, None
    try:
        aligned = AlignedImageModel.from_pretrained(cfg.coarse_aligned_model or COARSE_DIR, text_model=text)
    except FileNotFoundError as err:
        log.warning("no coarse aligned image head (%s); the image route is off on coarse slides", err)
        aligned = None
    return expression, aligned


def spots_with_features(inp: SlideInput, encoder: str, progress: bool = True, geometry: SpotTileConfig | None = None
                        ) -> ad.AnnData:
    """Spot AnnData with image features; a bare image becomes a grid of tiles.

    ``geometry`` is the tile geometry of the model that reads the features (its
    :meth:`~spotwhisper.expression.pretrained.ExpressionModel.tile_config`): spot tiles of its trained side
    and a ring at its trained pitch, whatever the slide's spot pitch; a grid of tiles that side. ``None``:
    ``configs/tiles.yaml`` (tiles follow the slide's spot spacing)."""
    if inp.slide is None:
        raise FileNotFoundError(f"{inp.name}: no H&E image, so nothing can be inferred from it")
    enc = create_encoder(encoder)
    tile_cfg = load_config(TileConfig, "tiles")
    if geometry is not None:
        tile_cfg = replace(tile_cfg, spot=geometry, grid=replace(tile_cfg.grid, tile_um=geometry.tile_um or tile_cfg.grid.tile_um))
    if inp.adata is None:
        log.info("%s: no spots given, tiling a regular grid of %.0f µm tiles over the tissue", inp.name, tile_cfg.grid.tile_um)
        return extract_grid_features(inp.slide, enc, library_id=inp.name, tile_cfg=tile_cfg, progress=progress)
    if geometry is not None:
        log.info("%s: %.0f µm spot tiles and a ring at %.0f µm pitch, as the %s model was trained", inp.name,
                 geometry.tile_um, geometry.ring_pitch_um or geometry.tile_um, encoder)
    return extract_features(inp.adata, enc, slide=inp.slide, scale=inp.scale, tile_cfg=tile_cfg, progress=progress, copy=True)


def process_slide(inp: SlideInput, models: Models, cfg: PipelineConfig | None = None, progress: bool = True,
                  timings: dict[str, dict[str, float]] | None = None) -> ad.AnnData:
    """Run every stage on one slide → AnnData over its spots (see the module docstring). Each stage's wall
    time, CPU time and peak memory are logged (:mod:`spotwhisper.timing`) and added to ``timings`` when given."""
    cfg = cfg or load_config(PipelineConfig, "pipeline")
    expression, aligned, which = models.for_slide(inp.slide.mpp if inp.slide is not None else None, inp.name)
    with stage("features", inp.name, timings):
        spots = spots_with_features(inp, expression.encoder, progress, expression.tile_config())
    with stage("expression", inp.name, timings):
        out = expression.predict(spots)
        if expression.familiarity is not None:
            out.uns[keys.FAMILIARITY] = familiarity_of(spots, out, expression, inp)
            log.info("%s: %s", inp.name, out.uns[keys.FAMILIARITY]["sentence"])
    with stage("proteins", inp.name, timings):
        proteins_from_expression(out)
    with stage("embeddings", inp.name, timings):
        _embed(out, inp, models, aligned, expression.encoder, cfg, progress)
    if keys.SECTION not in out.obs:
        out.obs[keys.SECTION] = inp.name
    out.uns[keys.PIPELINE] = models.describe(which)
    return out


def _embed(out: ad.AnnData, inp: SlideInput, models: Models, aligned: AlignedImageModel | None, encoder: str,
           cfg: PipelineConfig, progress: bool) -> None:
    """The embedding stage of :func:`process_slide`: transcriptome–text, aligned image, image–text models,
    measured expression, pooled image vectors; then drops the image features unless ``keep_features``."""
    from .language import embed

    embed(out, models.text)
    if aligned is not None:
        aligned.embed(out)
    for name, model in models.image_text.items():
        from .imagetext.tile_zeroshot import embed_tiles

        embed_tiles(model, out, slide=inp.slide, scale=inp.scale, progress=progress)
    if cfg.embed_measured and inp.adata is not None and _has_counts(inp.adata):
        out.obsm[keys.TEXT_EMB_MEASURED] = models.text.encode_expression(inp.adata)
        out.uns.setdefault(keys.EMBEDDING_MODELS, {})[keys.TEXT_EMB_MEASURED] = {
            **out.uns[keys.EMBEDDING_MODELS][keys.TEXT_EMB]}
    if cfg.image_vec_dim:
        add_image_vectors(out, encoder, cfg.image_vec_dim, cfg.image_vec_seed)
    if not cfg.keep_features:
        for k in [k for k in out.obsm if k.startswith(keys.FEATURES_PREFIX)]:
            del out.obsm[k]


def familiarity_of(spots: ad.AnnData, predicted: ad.AnnData, expression: ExpressionModel, inp: SlideInput) -> dict:
    """``uns["familiarity"]`` of a slide (:func:`~spotwhisper.expression.familiarity.slide_familiarity`): its raw
    spot-tile features against the expression model's training slides, with the median epistemic variance of
    the inferred expression and the slide's µm/px beside the one the encoder reads at."""
    from .encoders import get_spec
    from .encoders.features import feature_key
    from .expression.familiarity import FamiliarityConfig, slide_familiarity

    reference = expression.familiarity
    assert reference is not None
    epistemic = (np.asarray(predicted.layers[keys.UNCERTAINTY_EPISTEMIC]).mean(1)
                 if keys.UNCERTAINTY_EPISTEMIC in predicted.layers else None)
    return slide_familiarity(np.asarray(spots.obsm[feature_key(expression.encoder)]), reference,
                             load_config(FamiliarityConfig, "familiarity"), epistemic=epistemic,
                             mpp=inp.slide.mpp if inp.slide is not None else None,
                             model_mpp=get_spec(expression.encoder).tile_mpp)


def add_image_vectors(adata: ad.AnnData, encoder: str, dim: int, seed: int = 0) -> None:
    """``obsm["image_vec"]`` ``(n, dim)`` from ``obsm["features_<encoder>"]`` (and its sub-tiles) —
    :func:`spotwhisper.encoders.pooled.pooled_image_vectors` — recorded in ``uns["image_vec"]`` and
    ``uns["embedding_models"]``. Vectors of one ``(encoder, dim, seed)`` are comparable across slides."""
    from .encoders import feature_key, subtile_key
    from .encoders.pooled import pooled_image_vectors

    key = feature_key(encoder)
    if key not in adata.obsm:
        raise KeyError(f"no obsm[{key!r}] to pool into obsm[{keys.IMAGE_VEC!r}] (obsm: {sorted(adata.obsm)})")
    sub = adata.obsm.get(subtile_key(encoder))
    adata.obsm[keys.IMAGE_VEC] = pooled_image_vectors(np.asarray(adata.obsm[key]), sub, dim, seed)
    adata.uns[keys.IMAGE_VEC] = {"encoder": encoder, "dim": int(dim), "seed": int(seed), "subtiles": sub is not None}
    # one route name and version for every encoder (as the aligned route, whose two heads share a space), so a
    # collection may hold slides of both image model pairs; search compares image vectors of one encoder only
    adata.uns.setdefault(keys.EMBEDDING_MODELS, {})[keys.IMAGE_VEC] = {"name": keys.IMAGE_VEC, "version": f"rp{dim}s{seed}",
                                                                       "dim": int(dim)}


def image_space(adata: ad.AnnData) -> str | None:
    """The encoder whose features made ``obsm["image_vec"]`` (vectors of different encoders are not comparable)."""
    info = adata.uns.get(keys.IMAGE_VEC)
    return str(info["encoder"]) if isinstance(info, Mapping) and "encoder" in info else None


def _has_counts(adata: ad.AnnData) -> bool:
    """The slide comes with measured counts worth embedding (a gene panel, integer values)."""
    return adata.n_vars >= MIN_MEASURED_GENES and looks_like_counts(adata.X)
