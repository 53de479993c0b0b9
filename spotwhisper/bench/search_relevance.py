"""Relevance benchmark: does search answer "nothing here" for what is not in the tissue, and still
find what is?

Every query goes through the search engine's own scoring (:meth:`SearchEngine.search`, absolute
relevance, regions at the configured threshold) on each section by itself:

* **H&E** — the fused H&E search on the sections with H&E (out-of-fold inferred expression and
  aligned head for the expression model's training sections, the shipped models for the others);
* **measured expression** — the measured-expression route alone on every section, embedded by a text
  model that never saw the section's patient.

Queries: concepts absent from breast tissue and nonsense strings (→ share of (query, section) pairs
with any region: the false-region rate), the calibration bank the threshold was chosen on, and each
labelled class present in a section with at least ``min_class_spots`` spots (→ recall: share of such
(class, section) pairs with a region; precision: share of the region spots that carry the class,
against its prevalence among the section's labelled spots).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .. import keys
from .context import RouteContext
from .config import TaskConfig
from .tasks import Sample, class_query, her2st_samples, load_task

log = logging.getLogger(__name__)

SCOPES = ("H&E (fused search)", "measured expression")


@dataclass
class RelevanceBenchConfig:
    """``configs/bench/relevance.yaml``."""

    absent: list[str] = field(default_factory=list)  #: concepts that do not occur in breast tissue
    nonsense: list[str] = field(default_factory=list)  #: strings that mean nothing here
    calibration: list[str] = field(default_factory=list)  #: unrelated queries the threshold was chosen on
    tasks: list[str] = field(default_factory=lambda: ["regions", "clusters", "celltypes"])
    min_class_spots: int = 20  #: a labelled class is present in a section with at least this many spots
    he_sections: list[str] = field(default_factory=lambda: ["B4", "C2", "C3", "C4", "C5", "C6"])
    measured_sections: list[str] | None = None  #: None = every section
    out: str = "relevance"


def precision_target(prevalence: float) -> float:
    """Region precision a present class should reach: 2 × its prevalence, capped at ``(1 + p) / 2`` where
    twice the prevalence is out of reach (p > 1/3)."""
    return min(2 * prevalence, (1 + prevalence) / 2)


def _record(res, name: str, kind: str, query: str) -> dict:
    hits = res.slides[0]
    spots = np.concatenate([r.spots for r in hits.regions]) if hits.regions else np.array([], dtype=int)
    return {"section": name, "kind": kind, "query": query, "readable": res.readable, "found": hits.found,
            "n_regions": len(hits.regions), "region_spots": int(len(spots)), "n_spots": int(hits.adata.n_obs),
            "spots_at_threshold": int(np.nansum(hits.fused >= res.threshold)), "best_spot": hits.best_spot,
            "caveat": hits.caveat or "", "_spots": spots, "_fused": hits.fused}


def present_pairs(samples: dict[str, dict[str, Sample]], tasks: dict[str, TaskConfig], name: str, min_spots: int
                  ) -> list[tuple[str, str, str, np.ndarray, np.ndarray]]:
    """(task, class, query, class mask, evaluated mask) of every class with ≥ ``min_spots`` spots in section ``name``."""
    out = []
    for task, by_name in samples.items():
        s = by_name.get(name)
        if s is None:
            continue
        for spec in tasks[task].classes:
            mask = s.classes == spec.name
            if mask.sum() >= min_spots:
                out.append((task, spec.name, class_query(spec), mask, s.evaluated))
    return out


def score_section(engine, name: str, cfg: RelevanceBenchConfig, pairs, weights: dict[str, float] | None) -> list[dict]:
    """Every query of the benchmark on one section → one row per (query[, class])."""
    rows = []
    groups = [("absent", cfg.absent), ("nonsense", cfg.nonsense), ("calibration", cfg.calibration)]
    for kind, queries in groups:
        for q in queries:
            rows.append(_record(_search(engine, q, name, weights), name, kind, q))
    for task, cls, q, mask, ev in pairs:
        row = _record(_search(engine, q, name, weights), name, "present", q)
        spots = row["_spots"][ev[row["_spots"]]]
        fused = row["_fused"]
        ok = ev & np.isfinite(fused)
        row.update(task=task, **{"class": cls}, prevalence=float(mask[ev].mean()),
                   precision=float(mask[spots].mean()) if len(spots) else np.nan,
                   auroc=float(roc_auc_score(mask[ok], fused[ok])) if 0 < mask[ok].sum() < ok.sum() else np.nan)
        rows.append(row)
    return rows


def _search(engine, query: str, name: str, weights):
    import warnings

    from ..language import UnreadableQueryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableQueryWarning)
        return engine.search(query, slides=[name], weights=weights, explain=False)


def measured_view(sample: Sample, model) -> ad.AnnData:
    """A section's measured transcriptome as the search engine sees it (``obsm["text_emb_measured"]``)."""
    view = ad.AnnData(obs=sample.adata.obs[[keys.SECTION]].copy())
    view.obsm[keys.SPATIAL] = np.asarray(sample.adata.obsm[keys.SPATIAL])
    view.uns[keys.SPATIAL] = sample.adata.uns.get(keys.SPATIAL, {})
    view.obsm[keys.TEXT_EMB_MEASURED] = model.encode_expression(sample.adata)
    return view


def run_relevance(cfg: RelevanceBenchConfig, ctx: RouteContext, data_dir, scopes: Sequence[str] = SCOPES,
                  progress: bool = True) -> pd.DataFrame:
    """All rows of the benchmark (see the module docstring) over the chosen ``scopes``."""
    from ..io import list_sections
    from ..search.engine import SearchEngine
    from .text_models import held_out_check

    search_cfg = ctx.search_config()
    names = list(dict.fromkeys([*cfg.he_sections, *(cfg.measured_sections or list_sections(data_dir))]))
    cache: dict = {}
    tasks = {t: load_task(t) for t in cfg.tasks}
    samples = {t: {s.name: s for s in her2st_samples(data_dir, task, [n for n in names if n in (task.sections or names)],
                                                     progress=progress, cache=cache)}
               for t, task in tasks.items()}
    base = {s.name: s for s in her2st_samples(data_dir, tasks[cfg.tasks[-1]], names, progress=False, cache=cache)}
    rows: list[dict] = []
    if SCOPES[0] in scopes:
        weights = dict(search_cfg.weights)
        for name in tqdm(cfg.he_sections, desc="relevance: H&E", disable=not progress):
            engine = ctx.search_engine(base[name], weights)
            for r in score_section(engine, name, cfg, present_pairs(samples, tasks, name, cfg.min_class_spots), weights):
                rows.append({"scope": SCOPES[0], **r})
    if SCOPES[1] in scopes:
        weights = {r: 0.0 for r in search_cfg.weights} | {"measured": 1.0}
        for name in tqdm(cfg.measured_sections or list_sections(data_dir), desc="relevance: measured", disable=not progress):
            sample = base[name]
            model = ctx.text_models.for_patient(sample.patient)
            held_out_check(model, sample.patient)
            engine = SearchEngine({name: measured_view(sample, model)}, text_model=model, cfg=search_cfg)
            for r in score_section(engine, name, cfg, present_pairs(samples, tasks, name, cfg.min_class_spots), weights):
                rows.append({"scope": SCOPES[1], **r})
    return pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def summarize_relevance(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per scope and query kind, per present class) tables."""
    out = []
    for (scope, kind), g in rows.groupby(["scope", "kind"], sort=False):
        row = {"scope": scope, "queries": kind, "pairs": len(g), "with a region": float(g["found"].mean()),
               "spots at threshold": float((g["spots_at_threshold"] / g["n_spots"]).mean())}
        if kind == "present":
            found = g[g["found"]]
            row.update({"precision": float(found["precision"].mean()), "prevalence": float(found["prevalence"].mean()),
                        "precision ≥ target": float((found["precision"] >= found["prevalence"].map(precision_target)).mean()),
                        "AUROC": float(g["auroc"].mean())})
        out.append(row)
    present = rows[rows["kind"] == "present"]
    per_class = pd.DataFrame()
    if len(present):
        present = present.assign(found_precision=present["precision"].where(present["found"]))
        per_class = (present.groupby(["scope", "task", "class"], sort=False)
                     .agg(sections=("found", "size"), recall=("found", "mean"), precision=("found_precision", "mean"),
                          prevalence=("prevalence", "mean"), AUROC=("auroc", "mean")).reset_index())
    return pd.DataFrame(out), per_class


def relevance_markdown(rows: pd.DataFrame, search_threshold: float, command: str, unit: str) -> str:
    """The results page: protocol, the summary table per scope, the per-class table."""
    summary, per_class = summarize_relevance(rows)
    pct = lambda v: "–" if not np.isfinite(v) else f"{100 * v:.1f} %"  # noqa: E731
    num = lambda v: "–" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    lines = ["# Relevance benchmark — does search say \"nothing here\"?", "",
             f"Command: `{command}`", "",
             f"Every query goes through the search engine's own scoring on one section at a time; a region is a group "
             f"of adjacent spots with {unit} ≥ {search_threshold:g} (configs/search.yaml). *With a region* = share of "
             "(query, section) pairs that get at least one region; *spots at threshold* = mean share of a section's "
             "spots at or above the threshold. Present classes: each labelled class with enough spots in a section "
             "(recall = *with a region*); precision = share of region spots (among labelled ones) that carry the "
             "class, against its prevalence; the target is 2 × prevalence, capped at (1 + prevalence) / 2 where twice "
             "the prevalence is out of reach; AUROC = one-vs-rest AUROC of the fused relevance within the section. "
             "The threshold was chosen on the calibration queries, never on the absent or nonsense ones.", ""]
    header = ["scope", "queries", "(query, section) pairs", "with a region", "spots at threshold", "region precision",
              "prevalence", "precision ≥ target", "AUROC"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, d in summary.iterrows():
        get = lambda k: float(d[k]) if k in d and d[k] is not None else np.nan  # noqa: E731
        lines.append("| " + " | ".join([d["scope"], d["queries"], str(d["pairs"]), pct(get("with a region")),
                                       pct(get("spots at threshold")), num(get("precision")), num(get("prevalence")),
                                       pct(get("precision ≥ target")), num(get("AUROC"))]) + " |")
    if len(per_class):
        lines += ["", "Present classes:", "", "| scope | task | class | sections | recall | precision | prevalence | AUROC |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in per_class.iterrows():
            lines.append(f"| {r['scope']} | {r['task']} | {r['class']} | {int(r['sections'])} | {pct(r['recall'])} | "
                         f"{num(r['precision'])} | {num(r['prevalence'])} | {num(r['AUROC'])} |")
    found = rows[(rows["kind"].isin(["absent", "nonsense"])) & rows["found"]]
    if len(found):
        lines += ["", "Absent or nonsense queries that got a region: "
                  + ", ".join(f"'{q}' on {s} ({sc})" for q, s, sc in found[["query", "section", "scope"]].itertuples(index=False)) + "."]
    lines.append("")
    return "\n".join(lines)


def write_relevance_report(rows: pd.DataFrame, out: str | Path, search_threshold: float, command: str, unit: str) -> list[Path]:
    """``<out>.md`` and ``<out>.json`` (every row; a relative ``out`` under the results folder,
    :func:`spotwhisper.userdata.output_path`); returns the paths."""
    import json

    from ..atomic import atomic_file
    from ..userdata import output_path

    out = output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    with atomic_file(md) as tmp:
        tmp.write_text(relevance_markdown(rows, search_threshold, command, unit))
    summary, per_class = summarize_relevance(rows)
    clean = lambda df: json.loads(df.to_json(orient="records"))  # noqa: E731  (NaN → null)
    with atomic_file(js) as tmp:
        tmp.write_text(json.dumps({"command": command, "threshold": search_threshold, "unit": unit,
                                   "summary": clean(summary), "per_class": clean(per_class), "rows": clean(rows)}, indent=1))
    return [md, js]
