"""Cross-patient figures (C → B4) of `spotwhisper bench expression` under each encoder runtime, side by side.

Each variant runs the bench in a subprocess with its own empty cache (so no variant reads another's
features or models) and its own `configs/encoders.yaml` (the shipped one with `runtime.use` set):

    nice python benchmarks/bench_expression_compare.py --data-dir ../shared/data \
        --runtimes torch openvino [--extra "one pass=bench/expression_onepass"] [--out benchmarks/results/bench_runtimes.md]

`--extra LABEL=CONFIG` adds a variant on the default runtime with another bench config (e.g. a recipe whose
encoder reads sub-tiles from one pass). The default bench config is `bench/expression_runtimes` (the CNN
pair, as scanned / 2 µm/px / HED jitter 10 %). Prints per-condition Pearson (all genes, top-50) of the
expression model and zero-shot AUROC of every H&E route, each variant's difference to the first, and
the largest absolute difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from spotwhisper.config import resolve_config_path

METRICS = ("pearson_all", "pearson_top")


def run_variant(label: str, runtime: str, bench_config: str, data_dir: str, work: Path) -> dict:
    """Run the bench for one variant → its JSON, with the wall time under ``"wall_s"``."""
    folder = work / label.replace(" ", "_")
    (folder / "configs").mkdir(parents=True)
    enc = yaml.safe_load(resolve_config_path("encoders").read_text())
    enc["runtime"]["use"] = runtime
    (folder / "configs" / "encoders.yaml").write_text(yaml.safe_dump(enc, sort_keys=False))
    env = {**os.environ, "SPOTWHISPER_CONFIG_DIR": str(folder / "configs"), "SPOTWHISPER_CACHE_DIR": str(folder / "cache")}
    exe = Path(sys.executable).with_name("spotwhisper")
    cmd = [str(exe) if exe.exists() else "spotwhisper", "bench", "expression", "--data-dir", data_dir, "--config", bench_config,
           "--no-loso", "--no-progress", "--out", str(folder / "expression")]
    print(f"[{label}] runtime {runtime}: {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    out = json.loads((folder / "expression.json").read_text())
    out["wall_s"] = time.perf_counter() - t
    return out


def figures(result: dict) -> dict[tuple[str, str], float]:
    """``{(condition, metric): value}``: the model's Pearson figures and each route's AUROC per task."""
    out = {}
    for row in result["cross_patient"]:
        if row["method"] == "deepspot":
            for m in METRICS:
                out[(row["condition"], m)] = row[m]
    for row in result["zero_shot"]:
        out[(row["condition"], f"AUROC {row['task']} {row['route']}")] = row["auroc"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR", "../shared/data"))
    ap.add_argument("--runtimes", nargs="+", default=["torch", "openvino"])
    ap.add_argument("--config", default="bench/expression_runtimes", help="bench config of the runtime variants")
    ap.add_argument("--extra", action="append", default=[], metavar="LABEL=CONFIG", help="a variant with another bench config")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sw-bench-compare-"))
    variants = [(rt, rt, args.config) for rt in args.runtimes]
    variants += [(e.split("=", 1)[0], "auto", e.split("=", 1)[1]) for e in args.extra]
    try:
        results = {label: run_variant(label, rt, cfg, args.data_dir, work) for label, rt, cfg in variants}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    labels = list(results)
    table = {label: figures(r) for label, r in results.items()}
    ref = table[labels[0]]
    lines = [f"`spotwhisper bench expression --config {args.config} --no-loso` per variant (cross-patient: trained on "
             f"C2–C6, tested on B4), each in a fresh cache; Δ = variant − {labels[0]}.", "",
             "| condition | figure | " + " | ".join(labels) + " | " + " | ".join(f"Δ {v}" for v in labels[1:]) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in labels) + " | " + " | ".join("---:" for _ in labels[1:]) + " |"]
    worst = dict.fromkeys(labels[1:], 0.0)
    for key in ref:
        vals = [table[v].get(key, float("nan")) for v in labels]
        deltas = [table[v].get(key, float("nan")) - ref[key] for v in labels[1:]]
        for v, d in zip(labels[1:], deltas):
            worst[v] = max(worst[v], abs(d)) if d == d else worst[v]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(f"{x:.3f}" for x in vals) + " | "
                     + " | ".join(f"{d:+.3f}" for d in deltas) + " |")
    lines += ["", "largest |Δ|: " + ", ".join(f"{v} {w:.3f}" for v, w in worst.items()),
              "bench wall time: " + ", ".join(f"{v} {r['wall_s']:.0f} s" for v, r in results.items())]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
