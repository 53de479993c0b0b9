"""Markdown for the model card and the evaluation table of the expression model."""

from __future__ import annotations

from datetime import date

import pandas as pd

COLUMNS = [
    ("pearson_all", "Pearson, all genes"),
    ("pearson_top", "Pearson, top-50 variable"),
    ("morans_r", "Moran's I r (pred vs true)"),
    ("topk", "top-20 gene retrieval"),
    ("mse", "MSE"),
]


def results_markdown(table: pd.DataFrame, summary: pd.DataFrame, command: str) -> str:
    """Mean (SEM) over held-out sections per method, then the per-section figures."""
    head = "| method | " + " | ".join(name for _, name in COLUMNS) + " |\n"
    head += "|---|" + "---|" * len(COLUMNS) + "\n"
    rows = []
    for method, r in summary.iterrows():
        cells = [
            "n/a" if pd.isna(r[c]) else f"{r[c]:.3f} ({r[f'{c}_sem']:.3f})" for c, _ in COLUMNS
        ]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    per = table.pivot(index="section", columns="method", values="pearson_all")
    per_md = "| section | " + " | ".join(per.columns) + " |\n|---|" + "---|" * len(per.columns) + "\n"
    per_md += "\n".join(
        f"| {sec} | " + " | ".join("n/a" if pd.isna(v) else f"{v:.3f}" for v in row) + " |" for sec, row in per.iterrows()
    )
    unc = table.dropna(subset=["uncertainty_spearman"]) if "uncertainty_spearman" in table else table.iloc[:0]
    text = (
        f"Leave-one-section-out, mean (SEM) over {table['section'].nunique()} held-out sections. "
        f"Command: `{command}`\n\n" + head + "\n".join(rows) + "\n\n"
        "Per-section mean Pearson (all genes):\n\n" + per_md + "\n"
    )
    if len(unc):
        text += (
            f"\nUncertainty: Spearman of predicted variance (aleatoric + epistemic) with squared error, "
            f"mean over folds = {unc['uncertainty_spearman'].mean():.3f}\n"
        )
    return text


def model_card(model, table: pd.DataFrame | None, command: str, lead: str = "") -> str:
    """The model card written next to the weights; ``lead`` (markdown: the cross-patient figures of
    ``spotwhisper bench expression``) comes first, before the within-data evaluation."""
    cfg = model.cfg
    patients = sorted({s[0] for s in cfg.sections})
    n_params = sum(p.numel() for p in model.ensemble.members.parameters())
    lines = [
        "# SpotWhisper expression model (H&E → spot transcriptome)",
        "",
        *([lead, "", "## Model", ""] if lead else []),
        f"- Trained: {date.today().isoformat()} with `{command}`",
        f"- Data: her2st (Andersson et al. 2021) sections {', '.join(cfg.sections)} (patient(s) {', '.join(patients)}); "
        "leave-one-section-out below is mostly within one patient and optimistic for new patients.",
        f"- Augmentation: {cfg.augment.n_copies} extra cop(ies) of each training section "
        f"({cfg.augment.hed_copies} HED shift(s), µm/px {cfg.augment.mpp or 'none'}, Macenko onto {cfg.augment.macenko_targets or 'none'}).",
        f"- Inputs: `{cfg.encoder}` features of the spot tile ({model.tile_um:.0f} µm), its "
        "3×3 sub-tiles and its ring of neighbouring spots (DeepSpot layout).",
        f"- Output: log1p(counts per 10k) of {len(model.genes)} panel genes (`genes.txt`), "
        f"{cfg.net.head} head, ensemble of {len(model.ensemble.members)} → mean, aleatoric and epistemic variance.",
        f"- Size: {n_params:,} parameters over all members, stored in float16.",
        "",
        "## Evaluation",
        "",
    ]
    if table is not None:
        from .evaluate import summarize

        lines.append(results_markdown(table, summarize(table), command))
    else:
        lines.append("Not evaluated in this run (train with `--evaluate`).")
    lines += [
        "",
        "## Limits",
        "",
        f"- Trained on the spots of {len(cfg.sections)} HER2+ breast tumour sections of {len(patients)} patient(s); "
        "other tissues, stains and scanners are out of distribution — watch the epistemic variance.",
        "- Spot-level (100 µm ST spots, 200 µm tiles); not a single-cell model.",
    ]
    return "\n".join(lines) + "\n"
