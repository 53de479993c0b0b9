"""Benchmark output: a markdown table in SpotWhisperer's format (rows = classes, columns = routes,
cells ``mean (SEM)`` over samples), JSON with every number, and a bar plot (PNG). Files are
written atomically (temporary file, then ``os.replace``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..config import to_dict
from ..userdata import output_path
from .config import BenchConfig
from .metrics import OVERALL
from .registry import ROUTES
from .evaluate import ScopeResult, TaskResult

SHORT_REASON = 24  #: longer n/a reasons go to the notes under the table


def _fmt(mean: float, sem: float, k: int, n_samples: int) -> str:
    """``mean (SEM)``; the number of samples ``k`` is added when fewer than the scope's (no SEM for one)."""
    if not np.isfinite(mean):
        return "–"
    if k == 1:
        return f"{mean:.3f} (k=1)" if n_samples > 1 else f"{mean:.3f} (–)"
    return f"{mean:.3f} ({sem:.3f})" if k == n_samples else f"{mean:.3f} ({sem:.3f}; k={k})"


def _cell(summary: pd.DataFrame, route: str, cls: str, n_samples: int) -> str:
    row = summary[(summary["route"] == route) & (summary["class"] == cls)]
    if row.empty or not np.isfinite(row["mean"].iloc[0]):
        return "–"  # the class is too small in every sample, or the route cannot score it
    return _fmt(row["mean"].iloc[0], row["sem"].iloc[0], int(row["n_samples"].iloc[0]), n_samples)


def _na(reason: str, notes: list[str]) -> str:
    if len(reason) <= SHORT_REASON:
        return f"n/a ({reason})"
    if reason not in notes:
        notes.append(reason)
    return f"n/a [{notes.index(reason) + 1}]"


def _table(lines: list[str], header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines.extend("| " + " | ".join(r) + " |" for r in rows)


def scope_markdown(scope: ScopeResult, class_names: Sequence[str], ci_level: float) -> list[str]:
    """Markdown lines of one scope: the class × route table, its overall CI row and per-sample overall."""
    notes: list[str] = []
    lines = [f"## {scope.name}", "", f"Samples ({len(scope.samples)}): {', '.join(scope.samples)}", ""]
    shown = [c for c in class_names if scope.class_sizes.get(c, 0) > 0]
    header = ["class", "spots"] + [ROUTES[r].title for r in scope.routes]
    rows = []
    for cls in [*shown, OVERALL]:
        size = sum(scope.class_sizes.get(c, 0) for c in shown) if cls == OVERALL else scope.class_sizes[cls]
        cells = [_na(scope.unavailable[r], notes) if r in scope.unavailable
                 else _cell(scope.summary, r, cls, len(scope.samples)) for r in scope.routes]
        if cls == OVERALL:
            cells = [f"**{c}**" for c in cells]
        rows.append([f"**{cls}**" if cls == OVERALL else cls, str(size), *cells])
    ci_cells = []
    for r in scope.routes:
        row = scope.ci[(scope.ci["route"] == r) & (scope.ci["class"] == OVERALL)] if len(scope.ci) else scope.ci
        ci_cells.append("" if row.empty or not np.isfinite(row["lo"].iloc[0])
                        else f"[{row['lo'].iloc[0]:.3f}, {row['hi'].iloc[0]:.3f}]")
    rows.append([f"overall {ci_level:.0%} bootstrap CI", "", *ci_cells])
    _table(lines, header, rows)
    if any("k=" in c for r in rows for c in r):
        lines += ["", "k = number of samples in which the class occurs, when fewer than all (SEM over those)."]
    if notes:
        lines += [""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    kept = [r for r in scope.routes if r not in scope.unavailable]
    if len(scope.samples) > 1 and kept:
        piv = scope.per_sample.pivot(index="sample", columns="route", values="auroc")
        lines += ["", "Overall AUROC (weighted by class size) per sample:", ""]
        _table(lines, ["sample"] + [ROUTES[r].title for r in kept],
               [[s] + [("–" if not np.isfinite(v := piv.at[s, r]) else f"{v:.3f}") for r in kept] for s in scope.samples
                if s in piv.index])
    return lines


def to_markdown(result: TaskResult, cfg: BenchConfig, command: str) -> str:
    """The task's results page: protocol, one table per scope, provenance notes."""
    task = result.task
    lines = [
        f"# Zero-shot annotation benchmark — {task.name}",
        "",
        task.description.strip(),
        "",
        f"Command: `{command}`",
        "",
        "Protocol (SpotWhisperer): one-vs-rest AUROC of each class query's score against the spot labels, per "
        "sample; cells are mean (SEM) over samples; the overall row is each sample's mean over classes weighted by "
        f"class size, then mean (SEM) over samples; the CI row is a {cfg.ci:.0%} percentile bootstrap interval of the "
        f"overall figure ({cfg.bootstrap} resamples of each sample's spots, paired across routes). Text routes score "
        f"with the {cfg.score} over the task's class queries (prompt-ensembled); marker genes = mean {cfg.marker_mode} "
        f"of the class's vocabulary marker genes. A class is scored in a sample when it has at least "
        f"{task.min_class_spots} spot(s) there (– = in none). Within a table every route scores the same spots.",
        "",
    ]
    for scope in result.scopes:
        lines += scope_markdown(scope, [c.name for c in task.classes], cfg.ci) + [""]
    lines += ["Text models (a her2st patient is only scored by a model that never saw it):", ""]
    lines += [f"- {p if p == 'user data' else 'patient ' + p}: {m}" for p, m in sorted(result.models.items())]
    lines += [] if result.models else ["- none used"]
    if result.fusion["weights"]:
        lines += ["", f"Fused H&E search: the search engine's own scoring (SearchEngine.search), the weighted mean "
                  f"{result.fusion['weights']} of the routes' absolute relevance (configs/search.yaml)."]
    lines.append("")
    return "\n".join(lines)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _clean(obj.item())
    return obj


def to_json(result: TaskResult, cfg: BenchConfig, command: str) -> dict:
    """Every number of the run (NaN → null), with the task and harness settings."""
    return _clean({
        "task": to_dict(result.task),
        "bench_config": to_dict(cfg),
        "command": command,
        "models": result.models,
        "fusion": result.fusion,
        "routes": {r: ROUTES[r].title for r in ROUTES},
        "scopes": [
            {
                "name": s.name, "samples": s.samples, "routes": s.routes, "unavailable": s.unavailable,
                "class_sizes": s.class_sizes,
                "summary": s.summary.to_dict(orient="records"), "ci": s.ci.to_dict(orient="records"),
                "per_sample_overall": s.per_sample.to_dict(orient="records"), "auroc": s.long.to_dict(orient="records"),
            }
            for s in result.scopes
        ],
    })


def bar_plot(result: TaskResult, path: Path) -> None:
    """Grouped bars (mean AUROC ± SEM) per class and overall, one panel per scope, chance at 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = [s for s in result.scopes if any(r not in s.unavailable for r in s.routes)]
    fig, axes = plt.subplots(max(1, len(scopes)), 1, figsize=(13, 3.8 * max(1, len(scopes))), squeeze=False)
    colours = {r: plt.get_cmap("tab10")(i % 10) for i, r in enumerate(ROUTES)}  # one colour per route everywhere
    if not scopes:
        axes[0, 0].text(0.5, 0.5, "no route could score these samples", ha="center", va="center")
    for ax, scope in zip(axes[:, 0], scopes):
        routes = [r for r in scope.routes if r not in scope.unavailable]
        scored = set(scope.summary.loc[scope.summary["mean"].notna(), "class"])
        groups = [c.name for c in result.task.classes if c.name in scored] + [OVERALL]
        width = 0.8 / len(routes)
        for k, r in enumerate(routes):
            sub = scope.summary[scope.summary["route"] == r].set_index("class").reindex(groups)
            x = np.arange(len(groups)) + (k - (len(routes) - 1) / 2) * width
            ax.bar(x, sub["mean"].to_numpy(dtype=float), width, yerr=sub["sem"].to_numpy(dtype=float),
                   label=ROUTES[r].title, capsize=2, color=colours[r])
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(groups)), groups, rotation=15, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUROC")
        ax.set_title(f"{result.task.name} — {scope.name} ({len(scope.samples)} samples)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_report(result: TaskResult, cfg: BenchConfig, prefix: str | Path, command: str) -> dict[str, Path]:
    """Write ``<prefix>_<task>.md``, ``.json`` and ``.png`` (a relative prefix: under the results folder,
    :func:`spotwhisper.userdata.output_path`); returns the paths by kind."""
    prefix = output_path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^0-9a-z]+", "_", result.task.name.lower()).strip("_") or "task"
    paths = {k: prefix.with_name(f"{prefix.name}_{slug}.{k}") for k in ("md", "json", "png")}
    _write_text(paths["md"], to_markdown(result, cfg, command))
    _write_text(paths["json"], json.dumps(to_json(result, cfg, command), indent=1))
    bar_plot(result, paths["png"])
    return paths
