"""Run a task: every route on every sample of each scope, AUROC tables, summaries and intervals.

Within a scope all reported routes score the same spots: a route that cannot score every sample
of the scope (e.g. an image route on sections without H&E) is reported as unavailable there with
its reason, not averaged over a different set of samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..routes import canonical_route
from .config import ALL_ROUTES, ScopeSpec, TaskConfig
from .context import RouteContext, RouteUnavailable
from .metrics import auroc_table, bootstrap_intervals, sample_overall, summarize_long
from .registry import ROUTES, route_scores
from .tasks import Sample, class_query

log = logging.getLogger(__name__)


@dataclass
class ScopeResult:
    """One scope of a task: AUROC per (sample, route, class), summary, intervals, unavailable routes.

    ``long``: sample, patient, route, class, n_pos, n, auroc; ``summary``: route, class, mean, sem,
    n_samples, n_pos (plus ``overall (weighted)`` rows); ``ci``: route, class, lo, hi;
    ``per_sample``: sample, route, auroc (weighted overall), n_pos; ``unavailable``: route → reason.
    """

    name: str
    samples: list[str]
    routes: list[str]
    long: pd.DataFrame
    summary: pd.DataFrame
    ci: pd.DataFrame
    per_sample: pd.DataFrame
    unavailable: dict[str, str] = field(default_factory=dict)
    class_sizes: dict[str, int] = field(default_factory=dict)  #: evaluated spots per class, all samples


@dataclass
class TaskResult:
    """All scopes of a task and how they were made."""

    task: TaskConfig
    scopes: list[ScopeResult]
    models: dict[str, str]  #: patient → text model that scored it
    fusion: dict  #: weights of the fused parts actually used


def scope_routes(scope: ScopeSpec, default: Sequence[str], only: Sequence[str] | None) -> list[str]:
    """Routes of ``scope`` (its own list, else ``default``), restricted to ``only``, in table order."""
    wanted = [canonical_route(r) for r in scope.routes or default]
    only = None if only is None else [canonical_route(r) for r in only]  # older names (inferred …) read alike
    unknown = [r for r in [*wanted, *(only or [])] if r not in ROUTES]
    if unknown:
        raise ValueError(f"unknown route(s) {unknown}; choose from {list(ALL_ROUTES)}")
    if only:
        wanted = [r for r in wanted if r in only]
    return [r for r in ALL_ROUTES if r in wanted]


def _sample_table(sample: Sample, scores: np.ndarray, names: Sequence[str], min_pos: int) -> pd.DataFrame:
    keep = sample.evaluated
    t = auroc_table(scores[keep], sample.classes[keep], names)
    t.loc[t["n_pos"] < min_pos, "auroc"] = np.nan
    return t


def run_scope(scope: ScopeSpec, samples: Sequence[Sample], task: TaskConfig, ctx: RouteContext,
              only: Sequence[str] | None = None) -> ScopeResult | None:
    """Evaluate one scope (``None`` when it has no sample or no route left)."""
    chosen = [s for s in samples if scope.sections is None or s.name in scope.sections]
    routes = scope_routes(scope, ctx.cfg.routes, only)
    if not chosen or not routes:
        log.info("scope %r: nothing to evaluate (%d samples, routes %s)", scope.name, len(chosen), routes)
        return None
    names = [c.name for c in task.classes]
    queries = [class_query(c) for c in task.classes]
    frames, unavailable, kept = [], {}, []
    boot: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {
        s.name: (s.classes[s.evaluated], {}) for s in chosen
    }
    bar = tqdm(total=len(routes) * len(chosen), desc=f"{task.name}: {scope.name}", unit="score", disable=not ctx.progress)
    for route in routes:
        parts, reasons = [], {}
        for s in chosen:
            bar.set_postfix(route=route, sample=s.name)
            try:
                scores = route_scores(route, s, queries, ctx)
            except RouteUnavailable as err:
                reasons[s.name] = str(err.args[0]) if err.args else "unavailable"
            else:
                t = _sample_table(s, scores, names, task.min_class_spots)
                t.insert(0, "route", route)
                t.insert(0, "patient", s.patient or "")
                t.insert(0, "sample", s.name)
                parts.append((s, t, scores))
            bar.update()
        if reasons:
            why = sorted(set(reasons.values()))
            unavailable[route] = "; ".join(why) if len(reasons) == len(chosen) else (
                f"ran on {len(parts)} of {len(chosen)} samples; " + "; ".join(why))
            continue
        kept.append(route)
        for s, t, scores in parts:
            frames.append(t)
            boot[s.name][1][route] = scores[s.evaluated]
    bar.close()
    cols = ["sample", "patient", "route", "class", "n_pos", "n", "auroc"]
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    sizes = {c: int(sum((s.classes == c).sum() for s in chosen)) for c in names}
    ci = (bootstrap_intervals(boot, names, ctx.cfg.bootstrap, ctx.cfg.ci, ctx.cfg.seed, task.min_class_spots)
          if ctx.cfg.bootstrap > 0 and kept else pd.DataFrame(columns=["route", "class", "lo", "hi"]))
    return ScopeResult(
        name=scope.name, samples=[s.name for s in chosen], routes=routes, long=long,
        summary=summarize_long(long) if frames else pd.DataFrame(columns=["route", "class", "mean", "sem", "n_samples", "n_pos"]),
        ci=ci, per_sample=sample_overall(long) if frames else pd.DataFrame(columns=["sample", "route", "auroc", "n_pos"]),
        unavailable=unavailable, class_sizes=sizes,
    )


def run_task(task: TaskConfig, samples: Sequence[Sample], ctx: RouteContext,
             routes: Sequence[str] | None = None) -> TaskResult:
    """Every scope of ``task`` on ``samples`` (``routes`` restricts the routes of every scope)."""
    from .scorers import fusion_settings

    scopes = [r for sc in task.scopes if (r := run_scope(sc, samples, task, ctx, routes)) is not None]
    if not scopes:
        raise ValueError(f"task {task.name!r}: no scope had samples and routes to evaluate "
                         f"(samples {[s.name for s in samples]}, routes {list(routes or ctx.cfg.routes)})")
    weights = fusion_settings(ctx)
    used = ctx._cache.get("fused_parts", set())
    return TaskResult(task=task, scopes=scopes, models=dict(ctx.text_models.used),
                      fusion={"weights": {k: w for k, w in weights.items() if k in used}})
