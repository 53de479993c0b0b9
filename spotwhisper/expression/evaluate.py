"""Leave-one-section-out evaluation of the expression model against ridge and mean baselines."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .baselines import MeanBaseline, RidgeBaseline
from .config import ExpressionConfig
from .data import concat_training
from .metrics import evaluate_prediction, uncertainty_figures
from .model import Prediction
from .train import TrainingData, fit_ensemble

log = logging.getLogger(__name__)

METHODS = ("deepspot", "ridge", "mean")


def training_set(parts: Mapping[str, TrainingData], sections: Iterable[str],
                 augmented: Mapping[str, Sequence[TrainingData]] | None = None) -> TrainingData:
    """The spots of ``sections`` with their augmented copies (``augmented[section]``), stacked."""
    chosen = list(sections)
    extra = [c for s in chosen for c in (augmented or {}).get(s, [])]
    data = concat_training([parts[s] for s in chosen] + extra)
    data.copies = 1 + (len(extra) // max(1, len(chosen)))
    return data


def folds(parts: Mapping[str, TrainingData], augmented: Mapping[str, Sequence[TrainingData]] | None = None
          ) -> Iterator[tuple[str, TrainingData, TrainingData]]:
    """Leave-one-section-out splits: ``(held-out section, training data, held-out data)``; the training
    data hold the other sections' augmented copies, the held-out data only the original section."""
    if len(parts) < 2:
        raise ValueError("leave-one-section-out needs at least two sections")
    for held in parts:
        yield held, training_set(parts, [s for s in parts if s != held], augmented), parts[held]


def out_of_fold(parts: Mapping[str, TrainingData], cfg: ExpressionConfig, progress: bool = True,
                augmented: Mapping[str, Sequence[TrainingData]] | None = None) -> dict[str, Prediction]:
    """Each section predicted by an ensemble trained on the other sections (for honest benchmarks)."""
    return {held: fit_ensemble(train, cfg, progress=progress).predict(test.inputs)
            for held, train, test in folds(parts, augmented)}


def loso_evaluate(
    parts: Mapping[str, TrainingData],
    coords: Mapping[str, np.ndarray],
    cfg: ExpressionConfig,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    augmented: Mapping[str, Sequence[TrainingData]] | None = None,
) -> pd.DataFrame:
    """Hold out each section in turn, train on the rest, score the held-out one.

    Returns one row per (section, method) with the figures of
    :func:`~spotwhisper.expression.metrics.evaluate_prediction`; the deepspot rows add
    ``uncertainty_spearman`` (rank correlation of predicted variance with squared error, pooled over
    genes) and :func:`~spotwhisper.expression.metrics.uncertainty_figures` (50 % / 90 % interval
    coverage, variance–error Spearman within each gene).
    """
    rows = []
    for held, train, test in folds(parts, augmented):
        # baselines see the original spots only (ridge's internal CV would pick its penalty on copies)
        plain = training_set(parts, [s for s in parts if s != held]) if augmented else train
        for method in methods:
            extra = {}
            if method == "deepspot":
                pred = fit_ensemble(train, cfg, progress=progress).predict(test.inputs)
                y = pred.mean
                err = (y - test.log1p) ** 2
                var = pred.aleatoric + pred.epistemic
                sample = np.random.default_rng(0).choice(err.size, size=min(err.size, 200_000), replace=False)
                extra["uncertainty_spearman"] = float(spearmanr(var.ravel()[sample], err.ravel()[sample]).statistic)
                extra.update(uncertainty_figures(y, var, test.log1p))
            elif method == "ridge":
                y = RidgeBaseline().fit(plain.inputs, plain.log1p).predict(test.inputs)
            elif method == "mean":
                y = MeanBaseline().fit(plain.inputs, plain.log1p).predict(test.inputs)
            else:
                raise ValueError(f"unknown method {method!r} (known: {METHODS})")
            figures = evaluate_prediction(y, test.log1p, coords[held], cfg.top_variable, cfg.top_k_retrieval)
            rows.append({"section": held, "method": method, "n_spots": len(test.inputs), **figures, **extra})
            log.info("held out %s, %s: %s", held, method, figures)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and SEM over held-out sections, one row per method."""
    num = table.drop(columns=["section"]).groupby("method")
    mean = num.mean(numeric_only=True)
    sem = num.sem(numeric_only=True)
    out = mean.copy()
    for c in mean.columns:
        if c != "n_spots":
            out[f"{c}_sem"] = sem[c]
    return out.reindex([m for m in METHODS if m in out.index])
