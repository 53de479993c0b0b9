"""One call for the whole benchmark: load samples, build the run context, evaluate, write reports."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import anndata as ad

from ..config import load_config
from ..language.config import TextConfig
from .config import BenchConfig, TaskConfig
from .context import ImageTextWeights, RouteContext
from .report import write_report
from .evaluate import TaskResult, run_task
from .tasks import Sample, h5ad_samples, her2st_samples, task_concepts, task_vocabulary
from .text_models import TextModels

log = logging.getLogger(__name__)


def evaluate_task(
    task: TaskConfig,
    samples: Sequence[Sample],
    cfg: BenchConfig,
    text_models: TextModels,
    *,
    data_dir: str | Path | None = None,
    routes: Sequence[str] | None = None,
    weights: ImageTextWeights | None = None,
    progress: bool = True,
) -> TaskResult:
    """Run ``task`` on ``samples`` with a fresh route context (scores are not shared between tasks,
    since each task has its own class queries)."""
    ctx = RouteContext(cfg=cfg, vocabulary=task_vocabulary(task), text_models=text_models, data_dir=data_dir,
                       weights=weights or ImageTextWeights(), progress=progress, concepts=task_concepts(task))
    return run_task(task, samples, ctx, routes)


def run_benchmark(
    tasks: Sequence[TaskConfig],
    cfg: BenchConfig,
    *,
    data_dir: str | Path | None = None,
    h5ad: Sequence[str | Path] | None = None,
    sections: Sequence[str] | None = None,
    routes: Sequence[str] | None = None,
    weights: ImageTextWeights | None = None,
    command: str = "",
    progress: bool = True,
    samples: Sequence[Sample] | None = None,
) -> list[Path]:
    """Evaluate each task on her2st (``data_dir``; ``sections`` narrows it), on user ``h5ad`` files or on
    ready ``samples`` (e.g. :func:`~spotwhisper.bench.tasks.visium_sample`) and write
    ``<cfg.out>_<task>.{md,json,png}``; returns the written paths."""
    text_models = TextModels(data_dir, load_config(TextConfig, cfg.text_config), progress=progress)
    cache: dict[str, ad.AnnData] = {}
    written: list[Path] = []
    for task in tasks:
        chosen = (list(samples) if samples is not None else h5ad_samples(h5ad, task) if h5ad else
                  her2st_samples(data_dir, task, sections, progress=progress, cache=cache))
        result = evaluate_task(task, chosen, cfg, text_models, data_dir=data_dir, routes=routes, weights=weights,
                               progress=progress)
        paths = write_report(result, cfg, cfg.out, command)
        written += [paths["md"], paths["json"], paths["png"]]
    return written
