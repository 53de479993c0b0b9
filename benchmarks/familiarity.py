"""Does the familiarity figure separate the slides the models know from those they do not?

For each image-model recipe (the default CNN pair and the coarse pair), a familiarity reference is
fitted on patient C only (C2–C6) with the recipe's encoder and tile geometry, then measured on: each
C section held out (leave-one-section-out, what a new slide like the training slides looks like),
B4 (patient B) as scanned and under the shift sweep of ``spotwhisper bench expression`` (resampled,
HED-jittered, restained), and the two kidney cancer Visium sections of ``ccrcc/``. A condition is
read by the pair the pipeline would choose (coarse above ``coarse_above_mpp`` µm/px). Prints and
writes benchmarks/results/familiarity.md.

    python benchmarks/familiarity.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from spotwhisper.bench.expression_bench import ExpressionBenchConfig
from spotwhisper.bench.shift import condition_view
from spotwhisper.config import load_config
from spotwhisper.datadir import resolve_data_dir
from spotwhisper.encoders import create_encoder, extract_features
from spotwhisper.encoders.features import feature_key
from spotwhisper.expression.familiarity import FamiliarityConfig, slide_familiarity
from spotwhisper.expression.pretrained import COARSE_MODEL_DIR, DEFAULT_MODEL_DIR, ExpressionModel
from spotwhisper.expression.workflow import fit_familiarity
from spotwhisper.io import read_her2st
from spotwhisper.io.inputs import load_input
from spotwhisper.io.spatial import open_source_slide
from spotwhisper.pipeline import PipelineConfig, needs_coarse

OUT = Path(__file__).resolve().parent / "results" / "familiarity.md"
TRAIN = ["C2", "C3", "C4", "C5", "C6"]
FOREIGN = ["ccrcc/a_1", "ccrcc/b_1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    data_dir = resolve_data_dir(args.data_dir)
    fam_cfg = load_config(FamiliarityConfig, "familiarity")
    limit = load_config(PipelineConfig, "pipeline").coarse_above_mpp
    bench = load_config(ExpressionBenchConfig, "bench/expression")
    pairs = {"default": ExpressionModel.from_pretrained(DEFAULT_MODEL_DIR),
             "coarse": ExpressionModel.from_pretrained(COARSE_MODEL_DIR)}
    refs = {k: fit_familiarity(data_dir, m, TRAIN, fam_cfg, progress=False) for k, m in pairs.items()}
    rows = []
    for which, ref in refs.items():
        for section, med in ref.heldout_median.items():
            rows.append({"slide": section, "condition": "held out (leave one section out)", "models": which,
                         "distance_ratio": med / ref.reference_median, "level": "", "share": ref.heldout_share[section]})

    def measure(adata, slide, scale, name, condition, mpp):
        which = "coarse" if needs_coarse(mpp, limit) else "default"
        model = pairs[which]
        feats = extract_features(adata.copy(), create_encoder(model.encoder), slide=slide, scale=scale,
                                 layout_cfg=model.tile_config(), progress=False)
        r = slide_familiarity(np.asarray(feats.obsm[feature_key(model.encoder)]), refs[which], fam_cfg)
        rows.append({"slide": name, "condition": condition, "models": which, "distance_ratio": r["distance_ratio"],
                     "level": r["level"], "share": r["share"]})
        print(f"{name:10s} {condition:40s} {which:8s} ratio {r['distance_ratio']:.2f} {r['level']}", flush=True)

    b4 = read_her2st(data_dir, "B4")
    slide, scale = open_source_slide(b4)
    for cond in bench.conditions:
        view, vscale, _ = condition_view(slide, scale, cond, "B4", data_dir, bench.stain_donors)
        measure(b4, view, vscale, "B4", cond.name, view.mpp)
    for folder in FOREIGN:
        inp = load_input(data_dir / folder)
        measure(inp.adata, inp.slide, inp.scale, inp.name, f"kidney cancer Visium hires ({inp.slide.mpp:.2f} µm/px)",
                inp.slide.mpp)
    table = pd.DataFrame(rows)
    lines = ["# Familiarity: does it separate known slides from unknown ones?", "",
             "Command: `python benchmarks/familiarity.py --data-dir ../shared/data`", "",
             f"References fitted on C2–C6 only; distance_ratio = a slide's median feature distance over the held-out C "
             f"sections' median; familiar ≤ {fam_cfg.familiar_ratio:g} < unusual ≤ {fam_cfg.foreign_ratio:g} < foreign "
             "(configs/familiarity.yaml). share = share of spots within the 99th percentile of held-out training spots.", "",
             "| slide | condition | models | distance_ratio | level | share |", "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.slide} | {r.condition} | {r.models} | {r.distance_ratio:.2f} | {r.level} | {r.share:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
