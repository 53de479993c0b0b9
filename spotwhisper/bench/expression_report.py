"""Markdown, JSON and CSV of ``spotwhisper bench expression``; the issue-13 targets checked in words."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..routes import FUSED, IMAGE, PROTEIN, TRANSCRIPTOME, canonical_route
from ..userdata import output_path
from .expression_bench import ExpressionBenchResult
from .registry import ROUTES


@dataclass(frozen=True)
class Target:
    """A figure the benchmark should reach: ``value(result) >= low`` (and ``<= high`` when given)."""

    what: str
    low: float
    high: float | None = None


TARGETS = (
    Target("Pearson, top-50 variable genes", 0.30),
    Target("Pearson, all panel genes", 0.15),
    Target("cell types, H&E → inferred expr → text", 0.75),
    Target("cell types, fused H&E search", 0.75),
    Target("90 % interval coverage", 0.85, 0.95),
)


def _f(v: float, nd: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows]


def expression_markdown(res: ExpressionBenchResult, section: str) -> list[str]:
    """One row per condition: the model's figures, ridge and the training mean beside them."""
    t = res.expression[res.expression["section"] == section]
    mpp = {c["condition"]: c["mpp"] for c in res.conditions if c["section"] == section}
    which = _models_of(res, section)
    header = ["condition", "µm/px", "models", "Pearson all", "Pearson top-50", "Moran's I r", "top-20 retrieval", "MSE",
              "50 % interval", "90 % interval", "var–err ρ (within gene)", "ridge: all / top-50 / MSE", "mean: MSE"]
    rows = []
    for cond in dict.fromkeys(t["condition"]):
        d = t[(t["condition"] == cond) & (t["method"] == "deepspot")].iloc[0]
        r = t[(t["condition"] == cond) & (t["method"] == "ridge")].iloc[0]
        m = t[(t["condition"] == cond) & (t["method"] == "mean")].iloc[0]
        rows.append([cond, _f(mpp.get(cond), 2), which[cond], _f(d.pearson_all), _f(d.pearson_top), _f(d.morans_r), _f(d.topk),
                     _f(d.mse), _f(d.cov50), _f(d.cov90), _f(d.unc_spearman_within),
                     f"{_f(r.pearson_all)} / {_f(r.pearson_top)} / {_f(r.mse)}", _f(m.mse)])
    return _table(header, rows)


def _models_of(res: ExpressionBenchResult, section: str) -> dict[str, str]:
    """Which model pair read each condition (``default`` / ``coarse``, by the slide's µm/px, as the pipeline does)."""
    return {c["condition"]: c["models"] for c in res.conditions if c["section"] == section}


def zero_shot_markdown(res: ExpressionBenchResult, section: str, task: str) -> list[str]:
    """Rows = conditions, columns = H&E routes; measured-expression references in the first row's notes."""
    z = res.zero_shot[(res.zero_shot["section"] == section) & (res.zero_shot["task"] == task)]
    if z.empty:
        return []
    he = [r for r in (TRANSCRIPTOME, IMAGE, PROTEIN, FUSED, "marker_inferred") if r in set(z["route"])]
    header = ["condition", "models"] + [ROUTES[r].title for r in he]
    which = _models_of(res, section)
    rows = []
    for cond in dict.fromkeys(z["condition"]):
        zc = z[z["condition"] == cond].set_index("route")["auroc"]
        rows.append([cond, which[cond]] + [_f(zc.get(r, float("nan"))) for r in he])
    ref = z[z["route"].isin(["measured", "marker", "chance"])].set_index("route")["auroc"]
    lines = _table(header, rows)
    spots = int(z["spots"].iloc[0])
    lines += ["", f"{spots} labelled spots. Not image-based (same under every condition): "
              + ", ".join(f"{ROUTES[r].title} {_f(ref.get(r, float('nan')))}" for r in ("measured", "marker", "chance")) + "."]
    return lines


def loso_markdown(table: pd.DataFrame) -> list[str]:
    """Per held-out section and method; mean (SEM) over sections last."""
    header = ["held-out section", "method", "Pearson all", "Pearson top-50", "Moran's I r", "top-20", "MSE",
              "50 % / 90 % interval", "var–err ρ within gene"]
    rows = []
    for (sec, method), d in table.groupby(["section", "method"], sort=False):
        d = d.iloc[0]
        cov = f"{_f(d.get('cov50', np.nan))} / {_f(d.get('cov90', np.nan))}" if method == "deepspot" else "–"
        rows.append([sec, method, _f(d.pearson_all), _f(d.pearson_top), _f(d.morans_r), _f(d.topk), _f(d.mse), cov,
                     _f(d.get("unc_spearman_within", np.nan)) if method == "deepspot" else "–"])
    for method, d in table.groupby("method", sort=False):
        cell = lambda c: "–" if c not in d or d[c].isna().all() else f"{d[c].mean():.3f} ({d[c].sem():.3f})"  # noqa: E731
        rows.append([f"**mean (SEM)**", method, cell("pearson_all"), cell("pearson_top"), cell("morans_r"), cell("topk"),
                     cell("mse"), f"{cell('cov50')} / {cell('cov90')}" if method == "deepspot" else "–",
                     cell("unc_spearman_within") if method == "deepspot" else "–"])
    return _table(header, rows)


def target_lines(res: ExpressionBenchResult, section: str, native: str, coarse: str | None) -> list[str]:
    """Each target with the figure reached and, when missed, by how much."""
    e = res.expression
    d = e[(e["section"] == section) & (e["method"] == "deepspot") & (e["condition"] == native)]
    z = res.zero_shot[(res.zero_shot["section"] == section) & (res.zero_shot["task"] == "celltypes")]
    zn = z[z["condition"] == native].set_index("route")["auroc"]
    values = {
        "Pearson, top-50 variable genes": d["pearson_top"].iloc[0] if len(d) else np.nan,
        "Pearson, all panel genes": d["pearson_all"].iloc[0] if len(d) else np.nan,
        "cell types, H&E → inferred expr → text": zn.get(TRANSCRIPTOME, np.nan),
        "cell types, fused H&E search": zn.get(FUSED, np.nan),
        "90 % interval coverage": d["cov90"].iloc[0] if len(d) else np.nan,
    }
    out = []
    for t in TARGETS:
        v = values[t.what]
        if not np.isfinite(v):
            out.append(f"- {t.what}: not measured")
            continue
        ok = v >= t.low and (t.high is None or v <= t.high)
        goal = f"≥ {t.low:g}" if t.high is None else f"{t.low:g}–{t.high:g}"
        miss = t.low - v if v < t.low else (v - t.high if t.high is not None and v > t.high else 0.0)
        out.append(f"- {t.what}: {v:.3f} (target {goal}) — " + ("met" if ok else f"missed by {miss:.3f}"))
    if coarse is not None and not z.empty:
        zc = z[z["condition"] == coarse].set_index("route")["auroc"]
        for r in (TRANSCRIPTOME, IMAGE, PROTEIN, FUSED):
            if r in zn and r in zc:
                gap = zn[r] - zc[r]
                out.append(f"- {ROUTES[r].title} at {coarse} within 0.03 of as scanned: {zc[r]:.3f} vs {zn[r]:.3f} "
                           f"(gap {gap:+.3f}) — " + ("met" if abs(gap) <= 0.03 else f"missed by {abs(gap) - 0.03:.3f}"))
    return out


def write_expression_report(res: ExpressionBenchResult, out: str | Path, command: str, native: str,
                            coarse: str | None) -> dict[str, Path]:
    """``<out>.md``, ``<out>.json`` and ``<out>_{cross_patient,zero_shot,loso}.csv`` (atomically; a relative
    ``out`` under the results folder, :func:`spotwhisper.userdata.output_path`)."""
    prefix = output_path(out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Image models across patients, resolutions and stains (`spotwhisper bench expression`)", "",
             f"Command: `{command}`", "",
             f"Models trained on her2st {', '.join(res.info['train_sections'])} only with the project's recipes "
             f"(encoders {res.info['expression_encoder']}"
             + (f"; as in the pipeline, a slide coarser than {res.info['coarse_above_mpp']:g} µm/px is read by the coarse pair"
                if res.info.get("coarse_above_mpp") else "; the default pair reads every condition")
             + f"); text model "
             f"{res.info['text_model']} trained on patients {', '.join(res.info['text_model_train_patients']) or '?'}. "
             f"Run time {res.info['seconds']['total']:.0f} s ({res.info['seconds']})."]
    for section in res.info["test_sections"]:
        lines += ["", f"## Cross-patient: {section}", "", "### Inferred expression (2,067-gene panel)", ""]
        lines += expression_markdown(res, section)
        for task in dict.fromkeys(res.zero_shot["task"]) if len(res.zero_shot) else []:
            zl = zero_shot_markdown(res, section, task)
            if zl:
                lines += ["", f"### Zero-shot AUROC, {task} (overall, weighted by class size)", ""] + zl
        lines += ["", "### Targets (issue 13)", ""] + target_lines(res, section, native, coarse)
        lines += ["", "Conditions:"] + [f"- {c['condition']}: {c['what']}; {c['resampling']}" for c in res.conditions
                                        if c["section"] == section]
    if res.loso is not None:
        lines += ["", "## Leave-one-section-out over every H&E section (as scanned)", "",
                  "Each section predicted by a model trained on the other sections (B4's model is the cross-patient "
                  "one; a C section's model saw patient B and the other C sections).", ""] + loso_markdown(res.loso)
    paths = {"md": prefix.with_suffix(".md"), "json": prefix.with_suffix(".json")}
    with atomic_file(paths["md"], suffix=".part.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    tables = {"cross_patient": res.expression, "zero_shot": res.zero_shot, "loso": res.loso}
    for name, table in tables.items():
        if table is None:
            continue
        paths[name] = prefix.parent / f"{prefix.name}_{name}.csv"
        with atomic_file(paths[name], suffix=".part.csv") as tmp:
            table.to_csv(tmp, index=False)
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    blob = {"command": command, "info": res.info, "conditions": res.conditions,
            **{k: [{c: clean(v) for c, v in r.items()} for r in t.to_dict(orient="records")]
               for k, t in tables.items() if t is not None}}
    with atomic_file(paths["json"], suffix=".part.json") as tmp:
        Path(tmp).write_text(json.dumps(blob, indent=1, default=str))
    return paths


def cross_patient_lead(path: str | Path, encoder: str, kind: str = "expression") -> str:
    """Markdown that opens a model card: the cross-patient figures, from a ``spotwhisper bench
    expression`` JSON (``<out>.json``), of the model pair whose image encoder is ``encoder``, on the
    conditions that pair reads. ``kind``: ``expression`` (expression figures + zero-shot) or ``aligned``."""
    blob = json.loads(Path(path).read_text())
    encoders = blob["info"]["expression_encoder"]  # {"default": encoder, "coarse": encoder}
    pair = next((k for k, v in encoders.items() if v == encoder), None)
    if pair is None:
        raise ValueError(f"{path}: no benchmarked model reads `{encoder}` features (benchmarked: {encoders})")
    info, conds = blob["info"], [c for c in blob["conditions"] if c["models"] == pair]
    if not conds:
        raise ValueError(f"{path}: no condition read by the {pair} models")
    expr = pd.DataFrame(blob["cross_patient"])
    zs = pd.DataFrame(blob["zero_shot"])
    zs["route"] = zs["route"].map(canonical_route)  # result files written with the older bench names read alike
    route = IMAGE if kind == "aligned" else TRANSCRIPTOME
    header = ["test section", "condition", "µm/px"] + (["Pearson all", "Pearson top-50", "90 % interval"] if kind != "aligned" else []) \
        + [f"{task}: {ROUTES[route].title}" for task in dict.fromkeys(zs["task"])] + [f"{task}: {ROUTES[FUSED].title}" for task in dict.fromkeys(zs["task"])]
    rows = []
    for c in conds:
        row = [c["section"], c["condition"], _f(c["mpp"], 2)]
        if kind != "aligned":
            d = expr[(expr["section"] == c["section"]) & (expr["condition"] == c["condition"]) & (expr["method"] == "deepspot")]
            row += [_f(d["pearson_all"].iloc[0]), _f(d["pearson_top"].iloc[0]), _f(d["cov90"].iloc[0])] if len(d) else ["–"] * 3
        z = zs[(zs["section"] == c["section"]) & (zs["condition"] == c["condition"])]
        for r in (route, FUSED):
            for task in dict.fromkeys(zs["task"]):
                v = z[(z["task"] == task) & (z["route"] == r)]["auroc"]
                row.append(_f(v.iloc[0]) if len(v) else "–")
        rows.append(row)
    text = [f"## Cross-patient figures (read these first)", "",
            f"The same recipe trained on her2st {', '.join(info['train_sections'])} only and tested on "
            f"{', '.join(info['test_sections'])}, a patient it never saw, under every condition that this model reads "
            f"(`{blob['command']}`; zero-shot AUROC weighted over classes, text model trained on patients "
            f"{', '.join(info['text_model_train_patients'])}). The shipped model also saw "
            f"{', '.join(info['test_sections'])}, so it has no honest figure on it.", ""]
    return "\n".join(text + _table(header, rows))
