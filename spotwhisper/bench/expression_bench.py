"""``spotwhisper bench expression``: the image models judged on a patient they never saw, across shifts.

1. **Cross-patient** (the headline): expression model and aligned head trained with the project's
   own recipe (``configs/expression.yaml``, ``configs/aligned.yaml``, augmentation included) on
   ``train_sections`` only (her2st patient C), tested on ``test_sections`` (B4). Ridge on the same
   features and the training mean are fitted on the same spots. Each test section is measured as
   scanned and under every :class:`~spotwhisper.bench.shift.ShiftCondition` (resampled to 1–5 µm/px,
   HED shifts, another section's stain): per-gene Pearson (all panel genes; 50 most variable measured
   genes of the section), Moran's I agreement, top-k gene retrieval, 50 % / 90 % interval coverage,
   variance–error Spearman within genes; and zero-shot AUROC of every H&E route (bench harness), the
   text model being one that never saw the test patient.
2. **Leave-one-section-out** over every H&E section (as scanned): each section predicted by a model
   trained on the others — for C sections that includes patient B, for B4 it is the cross-patient model.

Trained models and the leave-one-section-out table are cached (``<cache>/bench/expression/<key>``),
keyed by the configs, the data files' content and the code.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..routes import FUSED, IMAGE, PROTEIN, TRANSCRIPTOME
from .. import keys
from ..cache import cache_dir, cache_key, code_fingerprint
from ..config import load_config, to_dict
from .shift import ShiftCondition

log = logging.getLogger(__name__)

#: code whose change changes the benchmark's trained models (part of their cache key)
MODEL_CODE = ("spotwhisper.expression", "spotwhisper.imagetext.aligned", "spotwhisper.imagetext.train",
              "spotwhisper.setmodel", "spotwhisper.encoders", "spotwhisper.tiles", "spotwhisper.genes")
#: zero-shot routes scored under every condition (H&E routes) and once (need no image)
HE_ROUTES = (TRANSCRIPTOME, IMAGE, PROTEIN, FUSED, "marker_inferred")
REFERENCE_ROUTES = ("measured", "marker", "chance")


@dataclass
class ExpressionBenchConfig:
    """Settings of ``spotwhisper bench expression`` (``configs/bench/expression.yaml``)."""

    expression_config: str = "expression"  #: model recipe (encoder, network, training, augmentation)
    aligned_config: str = "aligned"
    #: recipes of the coarse model pair, used (as by the pipeline) for conditions coarser than
    #: ``coarse_above_mpp`` µm/px; ``None`` (both): the default pair reads every condition
    coarse_expression_config: str | None = None
    coarse_aligned_config: str | None = None
    coarse_above_mpp: float | None = None  #: ``None``: configs/pipeline.yaml's, what users get
    text_config: str = "text"  #: leave-one-patient-out text models, when the shipped one saw a test patient
    harness_config: str = "bench/harness"
    train_sections: list[str] = field(default_factory=lambda: ["C2", "C3", "C4", "C5", "C6"])
    test_sections: list[str] = field(default_factory=lambda: ["B4"])
    loso_sections: list[str] = field(default_factory=lambda: ["B4", "C2", "C3", "C4", "C5", "C6"])
    conditions: list[ShiftCondition] = field(default_factory=lambda: [ShiftCondition("as scanned")])
    stain_donors: list[str] = field(default_factory=lambda: ["C2"])  #: sections whose stains ``macenko_target: auto`` takes
    zero_shot_tasks: list[str] = field(default_factory=lambda: ["celltypes", "clusters"])
    interval_levels: list[float] = field(default_factory=lambda: [0.5, 0.9])
    threads: int = 1
    out: str = "expression"  #: output prefix: <out>.md, <out>.json, <out>_*.csv


@dataclass
class ModelPair:
    """An expression model, aligned head and the baselines on the same features (one recipe)."""

    expression: object  #: ExpressionModel
    aligned: object | None  #: AlignedImageModel
    ridge: object  #: RidgeBaseline
    mean: object  #: MeanBaseline


@dataclass
class CrossPatientModels:
    """What the cross-patient rows are made with (all fitted on ``train_sections`` only): the default
    pair and, when configured, the coarse pair that reads slides coarser than ``coarse_above_mpp``."""

    pairs: dict[str, ModelPair]  #: "default" and optionally "coarse"
    text: object  #: TextExpressionModel that never saw a test patient
    coarse_above_mpp: float | None = None
    trained_s: float = 0.0

    def for_mpp(self, mpp: float | None) -> tuple[str, ModelPair]:
        """The pair the pipeline would use on a slide of ``mpp`` µm/px (:func:`spotwhisper.pipeline.needs_coarse`)."""
        from ..pipeline import needs_coarse

        which = "coarse" if "coarse" in self.pairs and needs_coarse(mpp, self.coarse_above_mpp) else "default"
        return which, self.pairs[which]


def text_model_for(patients: list[str], data_dir: str | Path | None, text_config: str, progress: bool = True):
    """A text model that never saw any of ``patients``: the shipped one when it did not, else the
    bench's leave-one-patient-out model (one held-out patient only)."""
    from ..language.config import TextConfig
    from .text_models import TextModels

    models = TextModels(data_dir, load_config(TextConfig, text_config), progress=progress)
    trained_on = set(map(str, models.shipped.meta.get("train_patients", [])))
    if not trained_on & set(patients):
        return models.shipped
    if len(set(patients)) > 1:
        raise ValueError(f"test patients {sorted(set(patients))}: one leave-one-patient-out text model covers one patient")
    return models.for_patient(patients[0])


def _recipe(cfg: ExpressionBenchConfig, sections: list[str], coarse: bool = False):
    from ..expression.config import ExpressionConfig
    from ..imagetext.aligned import load_aligned_config

    names = (cfg.coarse_expression_config, cfg.coarse_aligned_config) if coarse else (cfg.expression_config, cfg.aligned_config)
    ecfg = dataclasses.replace(load_config(ExpressionConfig, names[0]), sections=list(sections))
    acfg = dataclasses.replace(load_aligned_config(names[1]), sections=list(sections))
    return ecfg, acfg


def cross_patient_models(data_dir: str | Path | None, cfg: ExpressionBenchConfig, progress: bool = True) -> CrossPatientModels:
    """Train (or load from the cache) the model pair(s) and baselines on ``train_sections``."""
    if bool(cfg.coarse_expression_config) != bool(cfg.coarse_aligned_config):
        raise ValueError("coarse_expression_config and coarse_aligned_config go together: set both (a coarse "
                         "model pair) or neither (the default pair reads every condition)")
    patients = sorted({s[0] for s in cfg.test_sections})
    text = text_model_for(patients, data_dir, cfg.text_config, progress)
    leaked = set(patients) & set(map(str, text.meta.get("train_patients", [])))
    if leaked or set(patients) & {s[0] for s in cfg.train_sections}:
        raise ValueError(f"cross-patient benchmark: test patients {patients} are in the training data")
    limit = cfg.coarse_above_mpp
    if limit is None:
        from ..pipeline import PipelineConfig

        limit = load_config(PipelineConfig, "pipeline").coarse_above_mpp
    t0 = time.time()
    pairs = {"default": _model_pair(data_dir, cfg, text, False, progress)}
    if cfg.coarse_expression_config:
        pairs["coarse"] = _model_pair(data_dir, cfg, text, True, progress)
    return CrossPatientModels(pairs, text, limit, time.time() - t0)


def _tiles_record() -> dict:
    """The tile settings the training features are read with (``configs/tiles.yaml``: stain normalisation, QC …),
    part of the cached models' keys: models trained on other features are other models."""
    from ..tiles.config import TileConfig

    return to_dict(load_config(TileConfig, "tiles"))


def _model_pair(data_dir: str | Path | None, cfg: ExpressionBenchConfig, text, coarse: bool, progress: bool) -> ModelPair:
    """One recipe's expression model, aligned head (cached) and baselines, fitted on ``train_sections``."""
    from ..expression.baselines import MeanBaseline, RidgeBaseline
    from ..expression.evaluate import training_set
    from ..expression.pretrained import ExpressionModel
    from ..expression.train import fit_ensemble
    from ..expression.workflow import load_sections
    from ..imagetext.aligned import AlignedImageModel, fit_aligned
    from ..imagetext.train import paired_sections, training_pairs
    from ..io import sections_fingerprint

    ecfg, acfg = _recipe(cfg, cfg.train_sections, coarse)
    parts, _, genes, tile_um, augmented = load_sections(data_dir, ecfg, progress)
    plain = training_set(parts, cfg.train_sections)
    ridge, mean = RidgeBaseline().fit(plain.inputs, plain.log1p), MeanBaseline().fit(plain.inputs, plain.log1p)
    key = cache_key("bench-expression", to_dict(ecfg), to_dict(acfg), text.fingerprint(), _tiles_record(),
                    sections_fingerprint(data_dir, cfg.train_sections), code_fingerprint(*MODEL_CODE))
    folder = cache_dir("bench") / "expression" / key
    try:
        expr = ExpressionModel.from_pretrained(folder / "expression")
        aligned = AlignedImageModel.from_pretrained(folder / "aligned", text_model=text)
        log.info("cross-patient models from the cache %s", folder)
    except FileNotFoundError:
        ens = fit_ensemble(training_set(parts, cfg.train_sections, augmented), ecfg, progress=progress)
        expr = ExpressionModel(ens, genes, ecfg, tile_um, plain.inputs.spot.shape[1])
        pairs, copies = paired_sections(data_dir, acfg, text, progress)
        x, t, k = training_pairs(pairs, copies, list(pairs))
        aligned = AlignedImageModel(fit_aligned(x, t, acfg, progress, copies=k), acfg, text.fingerprint())
        expr.save_pretrained(folder / "expression")
        aligned.save_pretrained(folder / "aligned")
    return ModelPair(expr, aligned, ridge, mean)


def _truth(adata, genes: list[str]) -> np.ndarray:
    from ..genes import log1p_normalize, panel_matrix

    a = adata.copy()
    log1p_normalize(a)
    return panel_matrix(a, genes, min_overlap=0.5)[0]


def expression_rows(section: str, cond: ShiftCondition, feats, truth: np.ndarray, models: ModelPair,
                    levels: list[float]) -> tuple[list[dict], object]:
    """Metric rows (deepspot, ridge, mean) of one section under one condition by one model pair, and the prediction."""
    from ..expression.metrics import evaluate_prediction, uncertainty_figures
    from ..setmodel import inputs_for

    expr = models.expression
    coords = np.asarray(feats.obsm[keys.SPATIAL])
    pred = expr.predict_arrays(feats)
    x = inputs_for(feats, expr.encoder, expr.cfg.net)
    base = {"section": section, "condition": cond.name, "n_spots": int(feats.n_obs)}
    var = pred.aleatoric + pred.epistemic
    rows = [{**base, "method": "deepspot", **evaluate_prediction(pred.mean, truth, coords),
             **uncertainty_figures(pred.mean, var, truth, tuple(levels))}]
    for name, model in (("ridge", models.ridge), ("mean", models.mean)):
        rows.append({**base, "method": name, **evaluate_prediction(model.predict(x), truth, coords)})
    return rows, pred


def zero_shot_rows(section: str, cond: ShiftCondition, adata, inferred, aligned_emb, models: CrossPatientModels,
                   tasks: list[str], harness_config: str, routes: tuple[str, ...]) -> list[dict]:
    """Overall (class-size weighted) AUROC per route and task on one section under one condition."""
    from .config import BenchConfig, ScopeSpec
    from .evaluate import run_task
    from .shift import FixedTextModel, GivenRoutes
    from .tasks import load_task, make_sample, task_vocabulary

    rows = []
    for task_name in tasks:
        task = load_task(task_name)
        task.scopes = [ScopeSpec(name=section, sections=[section])]
        sample = make_sample(section, adata, task, str(adata.obs[keys.PATIENT].iloc[0]))
        if not (sample.classes != "").any():
            continue
        hcfg = load_config(BenchConfig, harness_config, bootstrap=0)
        ctx = GivenRoutes(cfg=hcfg, vocabulary=task_vocabulary(task), text_models=FixedTextModel(models.text), progress=False)
        ctx.give(section, inferred, aligned_emb)
        res = run_task(task, [sample], ctx, list(routes))
        summ = res.scopes[0].summary
        overall = summ[summ["class"] == "overall (weighted)"].set_index("route")["mean"]
        for route in routes:
            value = float(overall[route]) if route in overall.index else float("nan")
            rows.append({"section": section, "condition": cond.name, "task": task_name, "route": route, "auroc": value,
                         "spots": int((sample.classes != "").sum())})
    return rows


def loso_table(data_dir: str | Path | None, cfg: ExpressionBenchConfig, progress: bool = True) -> pd.DataFrame:
    """Leave-one-section-out over ``loso_sections`` with the project's recipe (cached)."""
    from ..expression.evaluate import loso_evaluate
    from ..expression.workflow import load_sections
    from ..io import sections_fingerprint

    ecfg, _ = _recipe(cfg, cfg.loso_sections)
    key = cache_key("bench-expression-loso", to_dict(ecfg), _tiles_record(), sections_fingerprint(data_dir, cfg.loso_sections),
                    code_fingerprint(*MODEL_CODE))
    path = cache_dir("bench") / "expression" / f"loso-{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    parts, coords, _, _, augmented = load_sections(data_dir, ecfg, progress)
    table = loso_evaluate(parts, coords, ecfg, progress=progress, augmented=augmented)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..atomic import atomic_file

    with atomic_file(path, suffix=".part.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


@dataclass
class ExpressionBenchResult:
    """Tables of one run (see :func:`run_expression_bench`)."""

    expression: pd.DataFrame  #: section, condition, method, figures
    zero_shot: pd.DataFrame  #: section, condition, task, route, auroc, spots
    loso: pd.DataFrame | None  #: leave-one-section-out rows (section, method, figures)
    conditions: list[dict]  #: per section and condition: what was done to the slide, µm/px
    info: dict  #: models, text model, timings


def run_expression_bench(data_dir: str | Path | None, cfg: ExpressionBenchConfig, *, loso: bool = True,
                         progress: bool = True) -> ExpressionBenchResult:
    """The whole benchmark (see the module docstring)."""
    import torch

    from ..encoders import create_encoder, extract_features
    from ..expression.pretrained import prediction_to_anndata
    from ..io import read_her2st
    from ..io.spatial import open_source_slide
    from .shift import condition_view

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        t0 = time.time()
        models = cross_patient_models(data_dir, cfg, progress)
        encoders = {}
        t_models = time.time() - t0
        expr_rows, zs_rows, conds = [], [], []
        for section in cfg.test_sections:
            adata = read_her2st(data_dir, section)
            slide, scale = open_source_slide(adata)
            truths: dict[tuple[str, ...], np.ndarray] = {}  # measured expression on each model's panel
            for cond in cfg.conditions:
                view, vscale, what = condition_view(slide, scale, cond, section, data_dir, cfg.stain_donors)
                which, pair = models.for_mpp(view.mpp)
                expr = pair.expression
                log.info("%s, %s: %s; %s models", section, cond.name, what, which)
                feats = adata.copy()
                for name in dict.fromkeys([expr.encoder] + ([pair.aligned.encoder] if pair.aligned is not None else [])):
                    enc = encoders.setdefault(name, create_encoder(name))
                    feats = extract_features(feats, enc, slide=view, scale=vscale, progress=progress)
                panel = tuple(expr.genes)
                if panel not in truths:
                    truths[panel] = _truth(adata, expr.genes)
                rows, pred = expression_rows(section, cond, feats, truths[panel], pair, cfg.interval_levels)
                expr_rows += [{**r, "models": which} for r in rows]
                inferred = prediction_to_anndata(pred, adata, expr.genes, {"encoder": expr.encoder, "condition": cond.name})
                emb = pair.aligned.embed(feats, store=False) if pair.aligned is not None else None
                routes = HE_ROUTES + (REFERENCE_ROUTES if cond.is_native else ())
                zs_rows += zero_shot_rows(section, cond, adata, inferred, emb, models, cfg.zero_shot_tasks,
                                          cfg.harness_config, routes)
                conds.append({"section": section, "condition": cond.name, "mpp": float(view.mpp or float("nan")),
                              "what": what, "models": which, "encoder": expr.encoder, "resampling": feats.uns[keys.FEATURES_UNS][expr.encoder].get("resampling", "")})
        t_sweep = time.time() - t0 - t_models
        table = loso_table(data_dir, cfg, progress) if loso else None
        info = {"expression_encoder": {k: p.expression.encoder for k, p in models.pairs.items()},
                "coarse_above_mpp": models.coarse_above_mpp if "coarse" in models.pairs else None, "text_model": models.text.fingerprint(),
                "text_model_train_patients": list(map(str, models.text.meta.get("train_patients", []))),
                "train_sections": cfg.train_sections, "test_sections": cfg.test_sections,
                "seconds": {"models": round(t_models, 1), "sweep": round(t_sweep, 1),
                            "loso": round(time.time() - t0 - t_models - t_sweep, 1), "total": round(time.time() - t0, 1)}}
        return ExpressionBenchResult(pd.DataFrame(expr_rows), pd.DataFrame(zs_rows), table, conds, info)
    finally:
        torch.set_num_threads(threads)
