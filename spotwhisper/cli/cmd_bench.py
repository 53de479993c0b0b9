"""``spotwhisper bench zero-shot`` — zero-shot annotation AUROC of every route, side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .options import UserError, add_config, add_data_dir, command_group

ZERO_SHOT_EPILOG = """\
Protocol (SpotWhisperer, ICML 2025 workshop): for each sample and class, one-vs-rest AUROC of the
class query's score against the spot labels; tables show mean (SEM) over samples per class and an
overall figure (each sample's class AUROCs weighted by class size, then mean (SEM) over samples),
with a 95% bootstrap interval over spots. Within a table every route scores the same spots.

Reproduce the README results table (writes benchmarks/results/zero_shot_<task>.{md,json,png}):
  spotwhisper bench zero-shot --task all --data-dir ../shared/data
    regions    pathologist labels of C1 D1 E1 F1 G2 H1 (no H&E there: image routes are n/a)
    celltypes  dominant deconvolution cell-type group; all routes on C2-C6, measured on all 24
    clusters   written cluster annotations; all routes on C2-C6, measured on all 24
  One task:   spotwhisper bench zero-shot --task celltypes --data-dir ../shared/data
First run: trains five leave-one-patient-out text models (about 2 minutes in all) and the
out-of-fold H&E models (inferred expression, aligned head; several minutes); all are cached under
$SPOTWHISPER_CACHE_DIR (default ~/.cache/spotwhisper), so reruns take about a minute per task.

Leakage: a her2st section of patient X is scored by a text model that never saw patient X (the
shipped model for patient C, leave-one-patient-out models for D-H); every H&E route on C2-C6 is
out of fold (trained on the other four sections).

PLIP / CONCH columns need their weights (none can be downloaded here):
  spotwhisper bench zero-shot --task all --plip vinid/plip --conch /path/to/pytorch_model.bin

Your own labelled data (e.g. SpotWhisperer's lung samples as .h5ad; the YAML format is documented
in spotwhisper/bench/tasks.py, and configs/bench/*.yaml are examples):
  spotwhisper bench zero-shot --h5ad s1.h5ad s2.h5ad --task-config my_task.yaml --label-key region
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(subparsers, "bench", "benchmarks: zero-shot annotation AUROC of every route",
                        "Benchmarks that measure SpotWhisper against baselines.", metavar="WHAT")
    p = sub.add_parser(
        "zero-shot",
        help="zero-shot annotation AUROC of every route side by side (markdown, JSON, bar plot)",
        description="Score every spot of labelled samples with each route's class queries and report one-vs-rest "
        "AUROC per class: measured expression → text (upper bound), H&E → inferred expression → text, H&E → "
        "image–text (aligned head; PLIP / CONCH with weights), virtual proteins, the fused H&E search, marker genes "
        "and chance.",
        epilog=ZERO_SHOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", default="all", help="regions | celltypes | clusters | all (default all; her2st)")
    p.add_argument("--task-config", type=Path, default=None, help="task YAML of your own (overrides --task)")
    p.add_argument("--h5ad", nargs="+", type=Path, default=None, help="labelled .h5ad file(s) instead of her2st")
    p.add_argument("--label-key", default=None, help="obs column with the labels (overrides the task's labels.key)")
    p.add_argument("--routes", nargs="+", default=None, help="only these routes (default: each scope's routes)")
    p.add_argument("--sections", nargs="+", default=None, help="only these her2st sections (quick checks)")
    p.add_argument("--out", default=None, help="output prefix (default from configs/bench/harness.yaml: benchmarks/results/zero_shot)")
    p.add_argument("--plip", default=None, help="PLIP weights: hub id in the local cache or a save_pretrained folder")
    p.add_argument("--conch", type=Path, default=None, help="CONCH checkpoint (pytorch_model.bin)")
    p.add_argument("--conch-tokenizer", type=Path, default=None, help="CONCH tokenizer JSON (default: beside the checkpoint)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000; 0 = no intervals)")
    add_config(p, "bench/harness", "harness settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_dir(p)
    p.set_defaults(func=zero_shot)


def _command(args: argparse.Namespace) -> str:
    """The canonical command line of this run (for the report)."""
    parts = ["spotwhisper", "bench", "zero-shot"]
    if args.task_config is not None:
        parts += ["--task-config", str(args.task_config)]
    else:
        parts += ["--task", args.task]
    for flag, value in (("--h5ad", args.h5ad), ("--routes", args.routes), ("--sections", args.sections)):
        if value:
            parts += [flag, *map(str, value)]
    for flag, value in (("--label-key", args.label_key), ("--plip", args.plip), ("--conch", args.conch),
                        ("--bootstrap", args.bootstrap), ("--out", args.out)):
        if value is not None:
            parts += [flag, str(value)]
    if args.h5ad is None:
        parts += ["--data-dir", str(args.data_dir) if args.data_dir else "$SPOTWHISPER_DATA_DIR"]
    return shlex.join(parts).replace("'$SPOTWHISPER_DATA_DIR'", "$SPOTWHISPER_DATA_DIR")


def zero_shot(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from ..bench import run_benchmark
    from ..bench.config import BenchConfig
    from ..bench.context import ImageTextWeights
    from ..bench.tasks import BUILTIN_TASKS, load_task
    from ..config import load_config
    from ..datadir import resolve_data_dir

    cfg = load_config(BenchConfig, args.config, bootstrap=args.bootstrap, out=args.out)
    torch.set_num_threads(cfg.threads)
    if args.task_config is not None:
        tasks = [load_task(args.task_config)]
    elif args.task == "all":
        tasks = [load_task(t) for t in BUILTIN_TASKS]
    elif args.task in BUILTIN_TASKS:
        tasks = [load_task(args.task)]
    else:
        raise UserError(f"--task {args.task!r}: choose {', '.join(BUILTIN_TASKS)} or all, or pass --task-config YAML")
    if args.label_key:
        for t in tasks:
            t.labels.source, t.labels.key = "obs", args.label_key
    data_dir = resolve_data_dir(args.data_dir) if args.h5ad is None else args.data_dir
    weights = ImageTextWeights(plip=args.plip, conch=args.conch, conch_tokenizer=args.conch_tokenizer)
    console = Console()
    for path in run_benchmark(tasks, cfg, data_dir=data_dir, h5ad=args.h5ad, sections=args.sections,
                              routes=args.routes, weights=weights, command=_command(args),
                              progress=not args.no_progress):
        if path.suffix == ".md":
            sys.stdout.write(path.read_text())
        console.print(f"wrote {path}")
    return 0
