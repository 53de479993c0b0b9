"""End-to-end steps: features for training sections, training with evaluation, prediction on a slide."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import keys
from ..cache import cache_dir, cache_key, code_fingerprint
from ..config import load_config, to_dict
from ..encoders import create_encoder, extract_features
from ..genes import load_panel
from ..io import read_h5ad, read_her2st, sections_fingerprint, write_h5ad
from ..io.slide import Slide
from ..tiles.config import SpotTileConfig
from ..tiles.views import section_views
from .config import ExpressionConfig
from .data import training_data
from .evaluate import loso_evaluate, out_of_fold, summarize, training_set
from .familiarity import FamiliarityConfig, FeatureReference
from .pretrained import ExpressionModel, prediction_to_anndata
from .train import TrainingData, fit_ensemble

log = logging.getLogger(__name__)

#: code whose change changes out-of-fold predictions (part of their cache key)
OOF_CODE = ("spotwhisper.expression", "spotwhisper.setmodel", "spotwhisper.genes", "spotwhisper.io.her2st",
            "spotwhisper.tiles.views")


def with_features(adata: ad.AnnData, encoder: str, slide: Slide | None = None, scale: float = 1.0,
                  progress: bool = True, geometry: SpotTileConfig | None = None) -> ad.AnnData:
    """``adata`` with ``obsm["features_<encoder>"]`` (extracted, or read from the cache, when absent);
    ``geometry`` the tiles of the model that reads them (:meth:`ExpressionModel.tile_config`)."""
    if f"{keys.FEATURES_PREFIX}{encoder}" in adata.obsm:
        return adata
    return extract_features(adata, create_encoder(encoder), slide=slide, scale=scale, layout_cfg=geometry, progress=progress)


def load_sections(data_dir: str | Path | None, cfg: ExpressionConfig, progress: bool = True
                  ) -> tuple[dict[str, TrainingData], dict[str, np.ndarray], list[str], float, dict[str, list[TrainingData]]]:
    """Features and panel targets of ``cfg.sections`` → (data per section, spot coordinates ``(n, 2)``
    per section, panel genes, tile side in µm, augmented copies per section (``cfg.augment``))."""
    genes = load_panel(cfg.panel)
    encoder = create_encoder(cfg.encoder)
    parts, coords, augmented = {}, {}, {}
    for section in cfg.sections:
        adata = read_her2st(data_dir, section)
        if not adata.uns[keys.SPATIAL][section]["metadata"].get(keys.SOURCE_IMAGE):
            raise FileNotFoundError(f"section {section} has no H&E image; image → expression training needs one")
        feats = extract_features(adata.copy(), encoder, progress=progress)
        parts[section] = training_data(feats, genes, cfg.encoder, cfg.net, cfg.min_panel_overlap)
        coords[section] = np.asarray(adata.obsm[keys.SPATIAL])
        tile_um = float(feats.uns[keys.FEATURES_UNS][cfg.encoder]["tile_um"])
        augmented[section] = []
        for name, view, scale in section_views(data_dir, section, cfg.augment):
            log.info("%s: augmented copy %s (%s)", section, name, view.spec())
            copy = extract_features(adata.copy(), encoder, slide=view, scale=scale, progress=progress)
            augmented[section].append(training_data(copy, genes, cfg.encoder, cfg.net, cfg.min_panel_overlap))
    log.info("training data: %d sections, %d spots (+%d augmented copies each), %d genes", len(parts),
             sum(len(p.inputs) for p in parts.values()), cfg.augment.n_copies, len(genes))
    return parts, coords, genes, tile_um, augmented


def train_expression(data_dir: str | Path | None, cfg: ExpressionConfig, evaluate: bool = True, progress: bool = True
                     ) -> tuple[ExpressionModel, pd.DataFrame | None]:
    """Optionally evaluate by leave-one-section-out, then fit the final model on every section."""
    parts, coords, genes, tile_um, augmented = load_sections(data_dir, cfg, progress)
    table = loso_evaluate(parts, coords, cfg, progress=progress, augmented=augmented) if evaluate else None
    ens = fit_ensemble(training_set(parts, parts, augmented), cfg, progress=progress)
    metrics = summarize(table).round(4).to_dict(orient="index") if table is not None else {}
    in_dim = next(iter(parts.values())).inputs.spot.shape[1]
    model = ExpressionModel(ens, genes, cfg, tile_um, in_dim, metrics)
    model.familiarity = fit_familiarity(data_dir, model, progress=progress)
    return model, table


def fit_familiarity(data_dir: str | Path | None, model: ExpressionModel, sections: list[str] | None = None,
                    cfg: FamiliarityConfig | None = None, progress: bool = True) -> FeatureReference:
    """The familiarity reference of ``model`` (:mod:`.familiarity`): raw spot-tile features of its
    training sections (default ``model.cfg.sections``; originals, not augmented copies), read with
    its own tile geometry from the feature cache or the images."""
    cfg = cfg or load_config(FamiliarityConfig, "familiarity")
    encoder = create_encoder(model.encoder)
    feats = {}
    for section in sections or model.cfg.sections:
        adata = read_her2st(data_dir, section)
        out = extract_features(adata, encoder, layout_cfg=model.tile_config(), progress=progress)
        feats[section] = np.asarray(out.obsm[f"{keys.FEATURES_PREFIX}{model.encoder}"])
    return FeatureReference.fit(model.encoder, feats, cfg)


def oof_cache_dir() -> Path:
    """``<cache root>/oof`` (see :mod:`spotwhisper.cache`)."""
    return cache_dir("oof")


def oof_expression(data_dir: str | Path | None, cfg: ExpressionConfig, progress: bool = True,
                   cache_dir: Path | None = None) -> dict[str, ad.AnnData]:
    """Out-of-fold inferred expression of ``cfg.sections``: each section predicted by an ensemble
    trained on the others (``ExpressionModel.predict`` layout, obs and images of the section).

    Cached on disk, since it trains one ensemble per section; the key hashes the config, the panel,
    the content of the sections' files and the code that trains and predicts (:data:`OOF_CODE`).
    Image features come from the feature cache (keyed by image content, encoder and tiles).
    """
    genes = load_panel(cfg.panel)
    key = cache_key("oof-expression", to_dict(cfg), genes, sections_fingerprint(data_dir, cfg.sections),
                    code_fingerprint(*OOF_CODE))
    folder = (cache_dir or oof_cache_dir()) / key
    paths = {s: folder / f"{s}.h5ad" for s in cfg.sections}
    if all(p.exists() for p in paths.values()):
        return {s: read_h5ad(p) for s, p in paths.items()}
    parts, _, genes, tile_um, augmented = load_sections(data_dir, cfg, progress)
    preds = out_of_fold(parts, cfg, progress, augmented)
    out = {}
    for s, pred in preds.items():
        src = read_her2st(data_dir, s)
        info = {"encoder": cfg.encoder, "tile_um": tile_um, "head": cfg.net.head, "members": cfg.train.ensemble,
                "n_genes": len(genes), "out_of_fold": True}
        out[s] = prediction_to_anndata(pred, src, genes, info)
        write_h5ad(out[s], paths[s])
    return out
