"""Rebuild spotwhisper/resources/protein_reference.npz: the reference distribution of every virtual
protein marker (route B raw levels) that the search engine's protein route is calibrated against.

The levels come from slides processed the way search sees them — H&E → the shipped expression
model → route B — on the her2st sections with H&E: out of fold for the sections the expression
model was trained on (C2–C6), the shipped model for the others (B4). Rerun after retraining the
expression model.

    python benchmarks/protein_reference.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from spotwhisper import keys
from spotwhisper.bench import BenchConfig, RouteContext, TextModels, load_task
from spotwhisper.bench.tasks import her2st_samples, task_vocabulary
from spotwhisper.config import load_config
from spotwhisper.datadir import resolve_data_dir
from spotwhisper.language.config import TextConfig
from spotwhisper.proteins import proteins_from_expression
from spotwhisper.search.protein_reference import DEFAULT_PATH, build_protein_reference

SECTIONS = ["B4", "C2", "C3", "C4", "C5", "C6"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sections", nargs="+", default=SECTIONS)
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_dir = resolve_data_dir(args.data_dir)
    task = load_task("clusters")
    cfg = load_config(BenchConfig, "bench/harness")
    ctx = RouteContext(cfg=cfg, vocabulary=task_vocabulary(task), text_models=TextModels(data_dir, load_config(TextConfig, "text")),
                       data_dir=data_dir)
    levels, markers, made = [], None, {}
    for sample in her2st_samples(data_dir, task, args.sections):
        inf = ctx.inferred(sample).copy()
        proteins_from_expression(inf)
        levels.append(np.asarray(inf.obsm[keys.PROTEINS_RAW], dtype=np.float64))
        markers = [str(m) for m in inf.uns[keys.PROTEIN_MARKERS]]
        made[sample.name] = "out of fold" if sample.name in ctx._shipped("expression_model").cfg.sections else "shipped model"
        print(f"{sample.name}: {inf.n_obs} spots ({made[sample.name]})")
    ref = build_protein_reference(levels, markers, {"source": "H&E → inferred expression → route B (raw, log1p units)",
                                                     "sections": made, "command": "python benchmarks/protein_reference.py"})
    print(f"wrote {ref.save(args.out)}: {ref.n_spots} spots, {len(markers)} markers")


if __name__ == "__main__":
    main()
