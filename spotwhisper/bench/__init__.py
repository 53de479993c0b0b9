"""Stage 10 — zero-shot annotation benchmark (SpotWhisperer protocol), every route side by side.

Typical use::

    from spotwhisper.bench import BenchConfig, load_task, run_benchmark
    from spotwhisper.config import load_config

    cfg = load_config(BenchConfig, "bench/harness")
    run_benchmark([load_task("regions")], cfg, data_dir="../shared/data")   # writes <cfg.out>_regions.*

or ``spotwhisper bench zero-shot --task all``. Modules: :mod:`.tasks` (task YAML, labels, samples,
the bring-your-own format), :mod:`.registry` (route registry, no routes), :mod:`.scorers` and :mod:`.heldout_routes` (the routes, registered on import), :mod:`.metrics` (AUROC, SEM, weighted
overall, bootstrap), :mod:`.harness` (the whole run: samples, context, reports), :mod:`.evaluate` (a task's scopes), :mod:`.report` (markdown, JSON, PNG),
:mod:`.text_models` (leakage-safe leave-one-patient-out text models).
"""

from .harness import evaluate_task, run_benchmark
from .config import ALL_ROUTES, BenchConfig, ClassSpec, LabelSpec, ScopeSpec, TaskConfig
from .context import ImageTextWeights, RouteContext, RouteUnavailable
from .metrics import bootstrap_intervals, mean_sem, summarize_long, weighted_auroc
from .report import to_markdown, write_report
from .registry import ROUTES, route_scores
from .evaluate import ScopeResult, TaskResult, run_task
from .tasks import Sample, h5ad_samples, her2st_samples, load_task, task_vocabulary
from .text_models import TextModels

# the route modules register their scorers in .registry when imported (the registry holds none itself)
from . import heldout_routes, scorers  # noqa: E402,F401  isort: skip

__all__ = [
    "ALL_ROUTES",
    "ROUTES",
    "BenchConfig",
    "ClassSpec",
    "ImageTextWeights",
    "LabelSpec",
    "RouteContext",
    "RouteUnavailable",
    "Sample",
    "ScopeResult",
    "ScopeSpec",
    "TaskConfig",
    "TaskResult",
    "TextModels",
    "bootstrap_intervals",
    "evaluate_task",
    "h5ad_samples",
    "her2st_samples",
    "load_task",
    "mean_sem",
    "route_scores",
    "run_benchmark",
    "run_task",
    "summarize_long",
    "task_vocabulary",
    "to_markdown",
    "weighted_auroc",
    "write_report",
]
