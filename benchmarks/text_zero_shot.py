"""Zero-shot AUROC of the transcriptome–text route against the marker-gene baseline and chance.

    # the shipped model on its held-out patient(s) (about a minute)
    python benchmarks/text_zero_shot.py --data-dir ../shared/data
    # leave-one-patient-out: trains 6 models with configs/text.yaml (about 10 minutes on 1 core)
    python benchmarks/text_zero_shot.py --data-dir ../shared/data --cv
    # robustness to smoother, inferred-like input (a proxy, see --help of --proxy)
    python benchmarks/text_zero_shot.py --data-dir ../shared/data --proxy

Protocol: one-vs-rest AUROC per pathologist class on held-out sections (C1 D1 E1 F1 G2 H1), over
spots labelled with one of the six classes; overall = mean over classes weighted by class size;
mean (SEM) over sections. ``model`` = softmax probability over the six class prompts (prompt
ensembling over templates × synonyms); ``model_similarity`` = raw cosine; ``marker_log1p`` /
``marker_zscore`` = mean log1p / mean per-section z-score of the class's vocabulary marker genes;
``random`` = uniform random scores (empirical chance; the expected value is 0.5).
"""

from __future__ import annotations

import argparse
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch

from spotwhisper import keys
from spotwhisper.config import load_config
from spotwhisper.genes import load_panel
from spotwhisper.io import tls_signature
from spotwhisper.language.config import InputConfig, TextConfig
from spotwhisper.language.evaluate import evaluate_section, summarize, weighted_overall
from spotwhisper.language.expression_encoder import log1p_panel
from spotwhisper.language.model import TextExpressionModel
from spotwhisper.language.text_encoder import TextEncoder
from spotwhisper.language.train import cross_validate, evaluate_held_out, load_sections

LABELLED = ["C1", "D1", "E1", "F1", "G2", "H1"]


def per_section(table: pd.DataFrame) -> pd.DataFrame:
    """Overall weighted AUROC per section × method."""
    return table.groupby(["section", "method"]).apply(weighted_overall, include_groups=False).unstack("method")


def smooth_proxy(adata: ad.AnnData, genes: list[str], rank: int, shrink: float) -> ad.AnnData:
    """A smoother, inferred-like version of a section: log1p of the panel genes projected on the
    section's top ``rank`` principal components, then pulled towards the gene means by ``shrink``
    (1 = unchanged). A proxy for regression to the mean, not a real H&E prediction."""
    x, _ = log1p_panel(adata, genes, InputConfig())
    mean = x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    low = (u[:, :rank] * s[:rank]) @ vt[:rank]
    out = ad.AnnData(X=(mean + shrink * low).astype(np.float32), obs=adata.obs.copy())
    out.var_names = genes
    return out


def print_table(title: str, table: pd.DataFrame) -> None:
    print(f"\n## {title}\n")
    print(summarize(table).to_string())
    print("\nper section, overall weighted AUROC:\n")
    print(per_section(table).round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=None, help="model folder (default: shipped text-default)")
    parser.add_argument("--config", default="text", help="config for --cv (default configs/text.yaml)")
    parser.add_argument("--cv", action="store_true", help="leave-one-patient-out: train and evaluate 6 models")
    parser.add_argument("--proxy", action="store_true",
                        help="also score a smoothed proxy of each held-out section (rank-10 PCA, shrink 0.3)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()

    if args.cv:
        cfg = load_config(TextConfig, args.config)
        adata = load_sections(args.data_dir)
        folds = cross_validate(adata, cfg, TextEncoder(cfg.model.text), load_panel(cfg.panel), tls_signature(args.data_dir))
        table = pd.concat([f.auroc for f in folds if f.auroc is not None], ignore_index=True)
        print_table("Leave-one-patient-out zero-shot AUROC (each section scored by the model that never saw its patient)", table)
        recall = pd.DataFrame({",".join(f.test_patients): f.recall for f in folds}).T
        cols = [c for c in recall.columns if "@" in c and not c.endswith("_chance")]
        print("\n## Held-out text↔expression recall@k (mean over folds; chance in brackets)\n")
        for c in cols:
            print(f"- {c}: {recall[c].mean():.3f} ({recall[c + '_chance'].mean():.3f})")
        print(f"\n({time.perf_counter() - t0:.0f} s)")
        return

    model = TextExpressionModel.from_pretrained(args.model)
    held = [s for s in LABELLED if s[0] in set(model.meta.get("test_patients", []))]
    if not held:
        raise SystemExit(f"model {args.model or 'text-default'} has no held-out labelled section; use --cv")
    adata = load_sections(args.data_dir, held)
    cfg = TextConfig()
    table = evaluate_held_out(adata, model, cfg)
    print_table(f"Shipped model on held-out sections {held} (patients {model.meta['test_patients']})", table)
    if args.proxy:
        frames = []
        for s in held:
            sec = adata[adata.obs[keys.SECTION].astype(str) == s]
            frames.append(evaluate_section(sec, model, cfg.eval.classes).assign(input="measured"))
            proxy = smooth_proxy(sec, model.genes, rank=10, shrink=0.3)
            frames.append(evaluate_section(proxy, model, cfg.eval.classes).assign(input="smoothed proxy"))
        both = pd.concat(frames)
        both = both[both.method.isin(["model", "marker_zscore"])]
        res = both.groupby(["input", "method", "section"]).apply(weighted_overall, include_groups=False)
        print("\n## Measured vs smoothed proxy of inferred expression (rank-10 PCA, shrink 0.3), overall AUROC\n")
        print(res.unstack("section").round(3).to_string())
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
