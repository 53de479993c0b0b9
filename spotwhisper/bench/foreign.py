"""Foreign-slide benchmark: labelled H&E-only Space Ranger folders from another lab, tissue and
technology (``configs/bench/foreign.yaml``: two clear-cell renal cell carcinoma Visium sections with the
authors' tertiary lymphoid structure labels), run through the whole pipeline and the search engine as
a user's slide would be.

Per section and present class (a label value mapped to a query): the fused and per-route AUROC of
the relevance against the label, the regions found, their precision (share of region spots that carry
the class) against its prevalence, recall (share of the class's spots inside a region), and the
low-confidence candidates shown when no region is found; per section the share of absent-concept and
nonsense queries that get a region. Every slide's familiarity (:mod:`spotwhisper.expression.familiarity`)
is in the table, since that is what the answer says about how sure it is.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .. import keys
from .tasks import read_spot_labels

log = logging.getLogger(__name__)


@dataclass
class ForeignSection:
    """One labelled H&E-only Space Ranger folder (paths relative to the data folder, or absolute)."""

    folder: str
    labels: str
    label_column: str | None = None  #: None: the CSV's only non-barcode column
    mpp: float | None = None  #: µm per full-resolution pixel when the scale factors do not say
    absent: list[str] = field(default_factory=list)  #: concepts absent from this section, besides the shared list


@dataclass
class ForeignBenchConfig:
    """``configs/bench/foreign.yaml``."""

    sections: list[ForeignSection] = field(default_factory=list)
    classes: dict[str, str] = field(default_factory=dict)  #: label value → query of the class it belongs to
    absent: list[str] = field(default_factory=list)  #: concepts absent from every section (other organs)
    #: concepts the models learned (vocabulary terms) that are absent here, e.g. breast-only ones on kidney: the
    #: cost of candidates on an unfamiliar slide
    absent_learned: list[str] = field(default_factory=list)
    nonsense: list[str] = field(default_factory=list)
    min_class_spots: int = 5
    out: str = "foreign"  #: output prefix, under the user results folder unless absolute


def resolve(path: str, data_dir: str | Path | None) -> Path:
    """``path`` itself when absolute or existing, else inside the data folder."""
    p = Path(path)
    if p.is_absolute() or p.exists() or data_dir is None:
        return p
    return Path(data_dir) / p


def section_labels(adata: ad.AnnData, spec: ForeignSection, classes: dict[str, str], data_dir) -> pd.Series:
    """The class (query) of every spot of ``adata`` ("" = none of the mapped classes)."""
    labels = read_spot_labels(resolve(spec.labels, data_dir), spec.label_column)
    raw = labels.reindex(adata.obs[keys.BARCODE].astype(str).to_numpy()).fillna("").astype(str)
    unknown = sorted(set(raw) - set(classes) - {""})
    if unknown:
        log.info("%s: label values %s map to no class (negatives)", spec.folder, unknown)
    return pd.Series([classes.get(v, "") for v in raw], index=adata.obs_names)


def _search(engine, query: str, name: str):
    from ..language import UnreadableQueryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableQueryWarning)
        return engine.search(query, slides=[name], explain=False)


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    ok = np.isfinite(score)
    return float(roc_auc_score(y[ok], score[ok])) if 0 < y[ok].sum() < ok.sum() else float("nan")


def _specificity_columns(hits) -> dict:
    """The candidates' test against the other learned concepts (``search.candidates.specificity``)."""
    spec = getattr(hits, "specificity", None)
    if spec is None:
        return {"standout": np.nan, "best_rival": "", "rival_standout": np.nan, "rivals": ""}
    rival, z = spec.best_rival or ("", np.nan)
    return {"standout": spec.query, "best_rival": rival, "rival_standout": z, "rivals": ", ".join(n for n, _ in spec.rivals)}


def present_row(res, name: str, query: str, y: np.ndarray, familiarity: dict) -> dict:
    """Figures of one present class on one section (see the module docstring)."""
    hits = res.slides[0]
    inside = np.zeros(len(y), dtype=bool)
    for r in hits.regions:
        inside[np.asarray(r.spots)] = True
    cand = np.zeros(len(y), dtype=bool)
    for r in getattr(hits, "candidates", []) or []:
        cand[np.asarray(r.spots)] = True
    row = {"section": name, "kind": "present", "query": query, "spots": int(len(y)), "positives": int(y.sum()),
           "prevalence": float(y.mean()), "familiarity": familiarity.get("level", ""),
           "distance_ratio": familiarity.get("distance_ratio", np.nan), "auroc_fused": _auroc(y, hits.fused),
           "found": hits.found, "regions": len(hits.regions), "region_spots": int(inside.sum()),
           "precision": float(y[inside].mean()) if inside.any() else np.nan,
           "recall": float(y[inside].sum() / max(y.sum(), 1)),
           "candidate_spots": int(cand.sum()), "candidate_precision": float(y[cand].mean()) if cand.any() else np.nan,
           "candidate_recall": float(y[cand].sum() / max(y.sum(), 1)),
           "best_spot": hits.best_spot, **_specificity_columns(hits)}
    for route, rel in hits.calibrated.items():
        row[f"auroc_{route}"] = _auroc(y, np.asarray(rel, dtype=float))
    return row


def run_foreign(cfg: ForeignBenchConfig, data_dir: str | Path | None, models=None, progress: bool = True,
                slides: dict[str, ad.AnnData] | None = None) -> pd.DataFrame:
    """Every row of the benchmark: per section, each present class and every absent / nonsense query.
    ``slides`` (name → processed AnnData) skips the pipeline for sections already processed."""
    from ..io.inputs import load_input
    from ..pipeline import Models, process_slide
    from ..search.engine import SearchEngine

    if not cfg.sections:
        raise ValueError("no foreign sections configured (configs/bench/foreign.yaml: sections)")
    models = models or Models.load()
    rows: list[dict] = []
    for spec in tqdm(cfg.sections, desc="foreign slides", disable=not progress):
        inp = load_input(resolve(spec.folder, data_dir), mpp=spec.mpp)
        adata = (slides or {}).get(inp.name)
        if adata is None:
            adata = process_slide(inp, models, progress=progress)
        classes = section_labels(adata, spec, cfg.classes, data_dir)
        engine = SearchEngine({inp.name: adata}, text_model=models.text)
        familiarity = dict(adata.uns.get(keys.FAMILIARITY, {}))
        for query in dict.fromkeys(cfg.classes.values()):
            y = (classes == query).to_numpy()
            if y.sum() >= cfg.min_class_spots:
                rows.append(present_row(_search(engine, query, inp.name), inp.name, query, y, familiarity))
        for kind, queries in (("absent", [*cfg.absent, *spec.absent]), ("absent, learned concept", cfg.absent_learned),
                              ("nonsense", cfg.nonsense)):
            for query in queries:
                hits = _search(engine, query, inp.name).slides[0]
                rows.append({"section": inp.name, "kind": kind, "query": query, "found": hits.found,
                             "regions": len(hits.regions), "best_spot": hits.best_spot,
                             "candidate_spots": int(sum(len(r.spots) for r in getattr(hits, "candidates", []) or [])),
                             "familiarity": familiarity.get("level", ""), **_specificity_columns(hits)})
    return pd.DataFrame(rows)


def foreign_markdown(rows: pd.DataFrame, command: str, threshold: float) -> str:
    """Results page: one row per (section, present class), then the absent / nonsense summary."""
    num = lambda v: "–" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    pct = lambda v: "–" if not np.isfinite(v) else f"{100 * v:.0f} %"  # noqa: E731
    lines = ["# Foreign slides — another lab, tissue and technology", "", f"Command: `{command}`", "",
             f"Each section goes through the whole pipeline (`process_slide`) and the search engine as a user's slide "
             f"would; a region = adjacent spots at relevance ≥ {threshold:g}. Precision = share of region spots carrying "
             "the class (target ≥ 2 × prevalence); recall = share of the class's spots inside a region; candidates = the "
             "low-confidence areas shown when no region is found.", "",
             "| section | familiarity | query | spots / positives | fused AUROC | routes AUROC | regions | precision "
             "| prevalence | recall | candidate spots (precision, recall) | candidates stand out (best other concept) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    present = rows[rows["kind"] == "present"]
    for _, r in present.iterrows():
        routes = " / ".join(f"{c[6:]} {num(r[c])}" for c in present.columns
                            if c.startswith("auroc_") and c != "auroc_fused" and np.isfinite(r.get(c, np.nan)))
        lines.append(f"| {r['section']} | {r['familiarity']} ({r['distance_ratio']:.1f}×) | {r['query']} | "
                     f"{int(r['spots'])} / {int(r['positives'])} | {num(r['auroc_fused'])} | {routes} | {r['regions']} | "
                     f"{num(r['precision'])} | {num(r['prevalence'])} | {pct(r['recall'])} | "
                     f"{int(r['candidate_spots'])} ({num(r['candidate_precision'])}, {pct(r['candidate_recall'])}) | "
                     f"{_standout_cell(r)} |")
    lines += ["", "| queries | (query, section) pairs | with a region | with candidates |", "|---|---|---|---|"]
    for kind in ("absent", "absent, learned concept", "nonsense"):
        g = rows[rows["kind"] == kind]
        if len(g):
            lines.append(f"| {kind} | {len(g)} | {pct(float(g['found'].mean()))} | {pct(float((g['candidate_spots'] > 0).mean()))} |")
    learned = rows[(rows["kind"] == "absent, learned concept") & rows["best_rival"].astype(bool)] if "best_rival" in rows else rows[:0]
    if len(learned):
        lines += ["", "Absent learned concepts, candidates tested against the other learned concepts (stand-out of the "
                  "query; best other concept): " + "; ".join(
                      f"'{r['query']}' on {r['section']}: {r['standout']:.2f} ({r['best_rival']} {r['rival_standout']:.2f}) "
                      f"→ {'shown' if r['candidate_spots'] else 'not shown'}" for _, r in learned.iterrows()) + "."]
    found = rows[rows["kind"].isin(["absent", "absent, learned concept", "nonsense"]) & rows["found"].astype(bool)]
    if len(found):
        lines += ["", "Absent or nonsense queries with a region: "
                  + ", ".join(f"'{q}' on {s}" for q, s in found[["query", "section"]].itertuples(index=False)) + "."]
    return "\n".join(lines + [""])


def _standout_cell(r) -> str:
    z = r.get("standout", np.nan)
    if not np.isfinite(z):
        return "–"
    rival = f" ({r['best_rival']} {r['rival_standout']:.2f})" if r.get("best_rival") else ""
    return f"{z:.2f}{rival}"


def write_foreign_report(rows: pd.DataFrame, out: str | Path, command: str, threshold: float) -> list[Path]:
    """``<out>.md`` and ``<out>.json``."""
    import json

    from ..atomic import atomic_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    with atomic_file(md) as tmp:
        tmp.write_text(foreign_markdown(rows, command, threshold))
    with atomic_file(js) as tmp:
        tmp.write_text(json.dumps({"command": command, "threshold": threshold,
                                   "rows": json.loads(rows.to_json(orient="records"))}, indent=1))
    return [md, js]


def one_section_config(folder: str, labels: str, label_column: str | None, classes: Sequence[str],
                       absent: Sequence[str] = (), mpp: float | None = None, base: ForeignBenchConfig | None = None
                       ) -> ForeignBenchConfig:
    """A benchmark of one user folder: ``classes`` as ``LABEL=QUERY`` strings (a bare ``LABEL`` is queried by
    its own text); absent / nonsense queries from ``base`` (``configs/bench/foreign.yaml``) plus ``absent``."""
    mapping = {}
    for c in classes:
        label, _, query = c.partition("=")
        if not label.strip():
            raise ValueError(f"--class {c!r}: expected LABEL=QUERY, e.g. 'TLS=tertiary lymphoid structures'")
        mapping[label.strip()] = (query or label).strip()
    base = base or ForeignBenchConfig()
    return ForeignBenchConfig([ForeignSection(folder, labels, label_column, mpp, list(absent))], mapping,
                              list(base.absent), [], list(base.nonsense), base.min_class_spots, base.out)


def foreign_lead(path: str | Path) -> str:
    """Markdown that opens a model card: the foreign-slide figures of a ``bench relevance --foreign``
    result file (``foreign.json``), per section and present class, and the absent-concept rows."""
    import json

    data = json.loads(Path(path).read_text())
    rows = pd.DataFrame(data["rows"])
    num = lambda v: "–" if v is None or not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    lines = ["## Foreign slides (another lab, tissue and technology)", "",
             f"Slides from another lab, tissue and technology, read through the whole pipeline as a user's would "
             f"(`{data['command']}`): fused AUROC of the relevance against the labels, confident regions at the "
             f"threshold ({data['threshold']:g}) and the low-confidence candidates shown instead on an unfamiliar slide.", "",
             "| section | familiarity | query | positives / spots | fused AUROC | regions | candidate spots | candidate precision (prevalence) | candidate recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows[rows["kind"] == "present"].iterrows():
        lines.append(f"| {r['section']} | {r['familiarity']} | {r['query']} | {int(r['positives'])} / {int(r['spots'])} | "
                     f"{num(r['auroc_fused'])} | {int(r['regions'])} | {int(r['candidate_spots'])} | "
                     f"{num(r['candidate_precision'])} ({num(r['prevalence'])}) | {100 * r['candidate_recall']:.0f} % |")
    absent = rows[rows["kind"].isin(["absent", "nonsense"])]
    if len(absent):
        lines += ["", f"Absent concepts and nonsense: a region on {int(absent['found'].sum())} of {len(absent)} "
                      f"(query, section) pairs, candidates on {int((absent['candidate_spots'] > 0).sum())}."]
    return "\n".join(lines)
