"""Training of the transcriptome–text model, split by patient, and its held-out evaluation.

``run_training(cfg, data_dir, out_dir)`` reads the her2st sections, writes captions for the
training patients (pathologist-label captions only for them), trains with the CLIP loss on cached
caption embeddings (the text tower is frozen), evaluates zero-shot AUROC and recall@k on the held-out
patients and saves the model with its metrics. ``cross_validate`` repeats this leaving each patient
out in turn.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import keys
from ..atomic import atomic_file
from ..cache import cache_dir
from ..config import to_dict
from ..genes import load_panel, log1p_normalize
from ..io import read_her2st, tls_signature
from ..prompts import load_vocabulary
from .captions import KINDS, caption_spots, caption_table
from .card import write_model_card
from .config import TextConfig
from .data import CaptionedSpots, EmbeddingStore, build_captioned_spots
from .evaluate import evaluate_section, recall_at_k, summarize
from .heldout import Concept, drop_concept
from .model import TextExpressionModel, clip_loss
from .text_encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """A trained model and what it scored on its held-out patients."""

    model: TextExpressionModel
    test_patients: list[str]
    history: list[dict] = field(default_factory=list)
    auroc: pd.DataFrame | None = None  #: long table from :func:`~spotwhisper.language.evaluate.evaluate_section`
    recall: dict[str, float] = field(default_factory=dict)  #: held-out recall@k per caption kind
    train_seconds: float = 0.0
    train_texts: list[str] = field(default_factory=list)  #: the unique captions the model was trained on
    removed_captions: int = 0  #: captions left out because they name the held-out concept


def load_sections(data_dir: str | Path | None, sections: Sequence[str] | None = None) -> ad.AnnData:
    """All her2st sections (counts, annotations; no images) in one AnnData with ``layers["log1p"]``."""
    from ..io import list_sections

    sections = list(sections) if sections else list_sections(data_dir)
    parts = {s: read_her2st(data_dir, s, with_image=False) for s in tqdm(sections, desc="read sections", unit="section")}
    adata = ad.concat(parts, join="outer", fill_value=0, merge="first")
    adata.uns.pop(keys.SPATIAL, None)
    return log1p_normalize(adata)


def caption_subset(adata: ad.AnnData, cfg: TextConfig, genes: Sequence[str], tls, with_labels: bool) -> list:
    """Captions of ``adata`` (one patient group; thresholds are computed within it)."""
    return caption_spots(
        adata, cfg.captions, genes, with_labels=with_labels, tls_weights=tls, vocabulary=load_vocabulary()
    )


def train_model(
    data: CaptionedSpots,
    cfg: TextConfig,
    genes: Sequence[str],
    text_dim: int,
    *,
    progress: bool = True,
) -> tuple[TextExpressionModel, list[dict]]:
    """Fit a fresh :class:`TextExpressionModel` on ``data`` (text embeddings precomputed). Returns the
    model (eval mode) and the per-epoch history (mean loss, logit scale)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = TextExpressionModel(genes, cfg.model, text_dim=text_dim)
    model.train()
    x = torch.from_numpy(data.x)
    temb = torch.from_numpy(data.text_emb)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(data) / tc.batch_size))
    total = tc.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    weights = dict(tc.kind_weights)
    history = []
    bar = tqdm(range(tc.epochs), desc="train text model", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(len(data))
        losses = []
        for s in range(0, len(order), tc.batch_size):
            rows = order[s : s + tc.batch_size]
            if len(rows) < 2:
                continue
            cap = torch.from_numpy(data.sample(rows, rng, weights))
            logits = model(x[rows], temb[cap])
            loss = clip_loss(logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            model.clamp_logit_scale()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "logit_scale": model.logit_scale})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", scale=f"{model.logit_scale:.1f}")
    model.eval()
    return model, history


def fit_and_evaluate(
    adata: ad.AnnData,
    cfg: TextConfig,
    test_patients: Sequence[str],
    encoder: TextEncoder,
    *,
    genes: Sequence[str],
    tls: pd.Series | None = None,
    progress: bool = True,
    concept: Concept | None = None,
    captions: list | None = None,
    evaluate: bool = True,
) -> FoldResult:
    """Train on every patient not in ``test_patients``; evaluate on the held-out ones.

    ``concept``: leave out every training caption naming it (:mod:`~spotwhisper.language.heldout`);
    ``captions``: the training spots' captions when already made (``caption_subset`` of the training
    patients, in their order); ``evaluate=False`` skips the held-out evaluation.
    """
    patients = adata.obs[keys.PATIENT].astype(str).to_numpy()
    test = np.isin(patients, list(test_patients))
    if (~test).sum() == 0:
        raise ValueError(f"no training spots left after holding out patients {list(test_patients)}")
    store = EmbeddingStore(cfg.cache_dir or cache_dir("text"), encoder)
    train_ad = adata[~test].copy()
    kinds = [k for k in KINDS if getattr(cfg.captions, {"deconv": "deconvolution"}.get(k, k))]
    if captions is None:
        captions = caption_subset(train_ad, cfg, genes, tls, with_labels=True)
    elif len(captions) != train_ad.n_obs:
        raise ValueError(f"{len(captions)} caption lists for {train_ad.n_obs} training spots")
    captions, removed = drop_concept(captions, concept)
    train = build_captioned_spots(train_ad, captions, genes, cfg.model.input, kinds)
    train.text_emb = store.embed(train.texts)
    log.info("training on %d spots, %d unique captions (patients %s)", len(train), len(train.texts), sorted(set(train.patients)))
    t0 = time.perf_counter()
    model, history = train_model(train, cfg, genes, encoder.dim, progress=progress)
    model.set_text_encoder(encoder)
    result = FoldResult(
        model=model, test_patients=list(test_patients), history=history, train_seconds=time.perf_counter() - t0,
        train_texts=list(train.texts), removed_captions=removed,
    )
    if test.any() and evaluate:
        test_ad = adata[test].copy()
        result.auroc = evaluate_held_out(test_ad, model, cfg)
        result.recall.update(held_out_recall(test_ad, model, cfg, genes, tls, store))
    return result


def evaluate_held_out(adata: ad.AnnData, model: TextExpressionModel, cfg: TextConfig) -> pd.DataFrame | None:
    """AUROC tables of every labelled section in ``adata`` (see :func:`evaluate_section`)."""
    if keys.LABEL not in adata.obs:
        return None
    frames = []
    vocab = load_vocabulary()
    for section in adata.obs[keys.SECTION].astype(str).unique():
        sub = adata[adata.obs[keys.SECTION].astype(str) == section]
        labelled = sub.obs[keys.LABEL].astype(str).isin(cfg.eval.classes)
        if labelled.sum() == 0:
            continue
        frames.append(evaluate_section(sub, model, cfg.eval.classes, vocabulary=vocab, score_kind=cfg.eval.score))
    return pd.concat(frames, ignore_index=True) if frames else None


def held_out_recall(
    adata: ad.AnnData, model: TextExpressionModel, cfg: TextConfig, genes, tls, store: EmbeddingStore
) -> dict[str, float]:
    """Text↔expression recall@k on held-out spots, per caption kind (no label captions)."""
    caps = caption_subset(adata, cfg, genes, tls, with_labels=False)
    out: dict[str, float] = {}
    for kind in ("genes", "deconv", "cluster", "markers"):
        try:
            data = build_captioned_spots(adata, caps, genes, cfg.model.input, kinds=[kind])
        except ValueError:
            continue
        with torch.no_grad():
            spot = model.project_expression(torch.from_numpy(data.x)).numpy()
            text = model.project_text(torch.from_numpy(store.embed(data.texts))).numpy()
        for k, v in recall_at_k(spot, text, data.spot_captions, cfg.eval.recall_k).items():
            out[f"{kind}/{k}"] = v
        out[f"{kind}/n_spots"], out[f"{kind}/n_captions"] = len(data), len(data.texts)
    return out


def cross_validate(adata: ad.AnnData, cfg: TextConfig, encoder: TextEncoder, genes, tls=None) -> list[FoldResult]:
    """Leave-one-patient-out over ``cfg.split.cv_patients``."""
    present = set(adata.obs[keys.PATIENT].astype(str))
    folds = [p for p in cfg.split.cv_patients if p in present]
    results = []
    for p in tqdm(folds, desc="cross-validation folds", unit="fold"):
        results.append(fit_and_evaluate(adata, cfg, [p], encoder, genes=genes, tls=tls, progress=False))
    return results


def _model_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["method"] == "model"]


def _write_json(path: Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=float))


def run_training(cfg: TextConfig, data_dir: str | Path | None, out_dir: str | Path, *, cv: bool = False) -> Path:
    """Train the model of ``cfg`` (held-out patients ``cfg.split.test_patients``), evaluate, save.

    Writes ``out_dir/{config.json, model.safetensors, metrics.json, auroc.csv}`` and, with ``cv``,
    ``cv_auroc.csv`` / ``cv_summary.csv`` of leave-one-patient-out folds. Returns ``out_dir``.
    """
    torch.set_num_threads(cfg.train.threads)
    genes = load_panel(cfg.panel)
    adata = load_sections(data_dir, cfg.split.sections)
    tls = tls_signature(data_dir)
    encoder = TextEncoder(cfg.model.text)
    out = Path(out_dir)
    metrics: dict = {"config": to_dict(cfg), "n_spots": int(adata.n_obs), "panel_size": len(genes),
                     "n_sections": int(adata.obs[keys.SECTION].nunique())}
    if cv:
        folds = cross_validate(adata, cfg, encoder, genes, tls)
        table = pd.concat([f.auroc for f in folds if f.auroc is not None], ignore_index=True)
        metrics["cv"] = {
            "auroc_summary": summarize(table).to_dict(),
            "recall": {",".join(f.test_patients): f.recall for f in folds},
        }
    result = fit_and_evaluate(adata, cfg, cfg.split.test_patients, encoder, genes=genes, tls=tls)
    metrics["held_out"] = {
        "patients": result.test_patients,
        "recall": result.recall,
        "history": result.history,
        "train_seconds": result.train_seconds,
        "auroc_summary": summarize(result.auroc).to_dict() if result.auroc is not None else None,
        "class_sizes": (
            {f"{sec} {cls}": int(n) for sec, cls, n in _model_rows(result.auroc)[["section", "class", "n_pos"]].to_numpy()}
            if result.auroc is not None
            else None
        ),
    }
    train_patients = sorted(set(adata.obs[keys.PATIENT].astype(str)) - set(cfg.split.test_patients))
    metrics["train_patients"] = train_patients
    result.model.save_pretrained(out, extra={"train_patients": train_patients, "test_patients": result.test_patients})
    if cv:
        with atomic_file(out / "cv_auroc.csv") as tmp:
            table.to_csv(tmp, index=False)
    if result.auroc is not None:
        with atomic_file(out / "auroc.csv") as tmp:
            result.auroc.to_csv(tmp, index=False)
    _write_json(out / "metrics.json", metrics)
    write_model_card(out, metrics, example_captions(adata, cfg, genes, tls, train_patients))
    return out


def example_captions(adata: ad.AnnData, cfg: TextConfig, genes, tls, patients: Sequence[str], section: str = "G2") -> pd.DataFrame:
    """All captions of one labelled spot of a training section (the spot with the most caption kinds)."""
    sections = adata.obs[keys.SECTION].astype(str)
    if section not in set(sections) or section[0] not in patients:
        section = sections[adata.obs[keys.PATIENT].astype(str).isin(patients)].iloc[0]
    sub = adata[sections == section].copy()
    table = caption_table(caption_subset(sub, cfg, genes, tls, with_labels=True), sub.obs_names)
    kinds = table.groupby("spot", sort=False)["kind"].nunique()
    return table[table["spot"] == kinds.idxmax()]
