"""``spotwhisper bench zero-shot`` — zero-shot annotation AUROC of every route, side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .bench_foreign import FOREIGN_EPILOG, add_foreign_options, foreign_relevance, wants_foreign
from .options import UserError, absolute_out, add_config, add_data_dir, command_group

ZERO_SHOT_EPILOG = """\
Protocol (SpotWhisperer, ICML 2025 workshop): for each sample and class, one-vs-rest AUROC of the
class query's score against the spot labels; tables show mean (SEM) over samples per class and an
overall figure (each sample's class AUROCs weighted by class size, then mean (SEM) over samples),
with a 95% bootstrap interval over spots. Within a table every route scores the same spots.

Reproduce the README results table (writes benchmarks/results/zero_shot_<task>.{md,json,png}; without
--out the files go to <user data folder>/results/zero_shot_<task>.*, printed):
  spotwhisper bench zero-shot --task all --data-dir ../shared/data --out benchmarks/results/zero_shot
    regions    pathologist labels of B1 C1 D1 E1 F1 G2 H1 (no H&E there: image routes are n/a)
    celltypes  dominant deconvolution cell-type group; all routes on C2-C6, measured on all 30
    clusters   written cluster annotations; all routes on C2-C6, measured on all 30
  One task:   spotwhisper bench zero-shot --task celltypes --data-dir ../shared/data
Columns "concept held out" score each class with a text model that never read a caption naming it
(configs/bench/concepts.yaml): zero-shot recognition, beside the transfer of a seen concept;
"paraphrase 1-3" ask for each class in wordings no training caption contains.
First run: trains five leave-one-patient-out text models, 42 held-out-concept models (7 concepts x
6 patient sets; 10-30 s each) and the out-of-fold H&E models (inferred expression, aligned head;
several minutes); all are cached under $SPOTWHISPER_CACHE_DIR (default ~/.cache/spotwhisper), so
reruns take a few minutes per task.

Leakage: a her2st section of patient X is scored by a text model that never saw patient X (the
shipped model, trained on D-H, for patients B and C; leave-one-patient-out models for D-H); every
H&E route on C2-C6 is out of fold (trained on the other four sections).

PLIP / CONCH columns need their weights (none can be downloaded here):
  spotwhisper bench zero-shot --task all --plip vinid/plip --conch /path/to/pytorch_model.bin

Your own labelled Space Ranger folder (labels.csv: barcode,label; classes = the label values,
each queried by its own name, unless --task-config gives the classes):
  spotwhisper bench zero-shot --visium outs/ --labels labels.csv [--label-column region] [--mpp 0.26]
  H&E-only folders (spatial/ without counts) are scored by their H&E routes; map label values onto queries:
  spotwhisper bench zero-shot --visium ../shared/data/ccrcc/b_1 --labels ../shared/data/ccrcc/b_1/labels.csv \
      --label-column TLS_2_cat --class "TLS=tertiary lymphoid structures"

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
    p.add_argument("--visium", type=Path, default=None, metavar="DIR",
                   help="a Space Ranger output folder (outs/) to benchmark, with spot labels from --labels")
    p.add_argument("--labels", type=Path, default=None, metavar="CSV",
                   help="with --visium: CSV of spot labels (a barcode column, then the label column)")
    p.add_argument("--label-column", default=None, metavar="COL",
                   help="with --labels: the label column (default: the only non-barcode column, else 'label')")
    p.add_argument("--mpp", type=float, default=None,
                   help="with --visium: µm per full-resolution pixel when the scale factors do not say")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="LABEL=QUERY",
                   help="with --labels: a label value and the query of its class (repeat; several values may share a "
                   "class; other values stay classes queried by their own text)")
    p.add_argument("--routes", nargs="+", default=None, help="only these routes (default: each scope's routes)")
    p.add_argument("--sections", nargs="+", default=None, help="only these her2st sections (quick checks)")
    p.add_argument("--out", default=None, help="output prefix, relative to the working directory (default: <user data folder>/results/zero_shot, printed)")
    p.add_argument("--plip", default=None, help="PLIP weights: hub id in the local cache or a save_pretrained folder")
    p.add_argument("--conch", type=Path, default=None, help="CONCH checkpoint (pytorch_model.bin)")
    p.add_argument("--conch-tokenizer", type=Path, default=None, help="CONCH tokenizer JSON (default: beside the checkpoint)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000; 0 = no intervals)")
    add_config(p, "bench/harness", "harness settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_dir(p)
    p.set_defaults(func=zero_shot)
    register_expression(sub)

    r = sub.add_parser(
        "relevance",
        help="does search say 'nothing here'? absent concepts, nonsense and present classes on every section",
        description="Run the search engine's own scoring on every her2st section by itself — the fused H&E search on "
        "the sections with H&E, the measured-expression route on all 30 — with queries for concepts absent from "
        "breast tissue and nonsense (share of (query, section) pairs with any region), the calibration queries the "
        "threshold was chosen on, and every labelled class present in a section (region recall and precision). "
        "Writes <out>.md and <out>.json (default <user data folder>/results/relevance; the README's figures: "
        "--out benchmarks/results/relevance).",
    )
    r.add_argument("--scope", choices=["all", "he", "measured"], default="all", help="H&E sections, measured expression or both")
    r.add_argument("--sections", nargs="+", default=None, help="only these sections (quick checks)")
    r.add_argument("--out", default=None, help="output prefix, relative to the working directory (default: <user data folder>/results/relevance, printed)")
    add_config(r, "bench/relevance", "relevance benchmark settings")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_foreign_options(r)
    r.epilog, r.formatter_class = FOREIGN_EPILOG, argparse.RawDescriptionHelpFormatter
    add_data_dir(r)
    r.set_defaults(func=relevance)


def _command(args: argparse.Namespace) -> str:
    """The canonical command line of this run (for the report)."""
    parts = ["spotwhisper", "bench", "zero-shot"]
    if args.task_config is not None:
        parts += ["--task-config", str(args.task_config)]
    else:
        parts += ["--task", args.task]
    for flag, value in (("--visium", args.visium), ("--labels", args.labels), ("--label-column", args.label_column),
                        ("--mpp", args.mpp)):
        if value is not None:
            parts += [flag, str(value)]
    parts += [x for c in getattr(args, "classes", []) for x in ("--class", c)]
    for flag, value in (("--h5ad", args.h5ad), ("--routes", args.routes), ("--sections", args.sections)):
        if value:
            parts += [flag, *map(str, value)]
    for flag, value in (("--label-key", args.label_key), ("--plip", args.plip), ("--conch", args.conch),
                        ("--bootstrap", args.bootstrap), ("--out", args.out)):
        if value is not None:
            parts += [flag, str(value)]
    if args.h5ad is None and args.visium is None:
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
    from ..routes import canonical_route

    cfg = load_config(BenchConfig, args.config, bootstrap=args.bootstrap, out=absolute_out(args.out))
    torch.set_num_threads(cfg.threads)
    if (args.visium is None) != (args.labels is None):
        raise UserError("--visium DIR and --labels CSV go together (a Space Ranger folder and its spot labels)")
    if args.visium is not None and args.h5ad:
        raise UserError("give either --visium or --h5ad, not both")
    if (args.label_column or args.mpp) and args.visium is None:
        raise UserError("--label-column and --mpp go with --visium DIR --labels CSV")
    samples = None
    if args.visium is not None:
        from ..bench.tasks import visium_sample

        try:
            queries = dict(c.partition("=")[::2] for c in args.classes)
            sample, task = visium_sample(args.visium, args.labels, load_task(args.task_config) if args.task_config else None,
                                         args.label_column, args.mpp, {k.strip(): v.strip() for k, v in queries.items()})
        except (FileNotFoundError, ValueError) as err:
            raise UserError(str(err)) from err
        samples, tasks = [sample], [task]
    elif args.task_config is not None:
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
    data_dir = resolve_data_dir(args.data_dir) if args.h5ad is None and args.visium is None else args.data_dir
    weights = ImageTextWeights(plip=args.plip, conch=args.conch, conch_tokenizer=args.conch_tokenizer)
    console = Console()
    for path in run_benchmark(tasks, cfg, data_dir=data_dir, h5ad=args.h5ad, sections=args.sections,
                              routes=[canonical_route(r) for r in args.routes] if args.routes else None,
                              weights=weights, command=_command(args),
                              progress=not args.no_progress, samples=samples):
        if path.suffix == ".md":
            sys.stdout.write(path.read_text())
        console.print(f"wrote {path}")
    return 0


def relevance(args: argparse.Namespace) -> int:
    if wants_foreign(args):
        return foreign_relevance(args)
    import torch
    from rich.console import Console

    from ..bench import BenchConfig, RouteContext, TextModels
    from ..bench.search_relevance import SCOPES, RelevanceBenchConfig, run_relevance, write_relevance_report
    from ..config import load_config
    from ..datadir import resolve_data_dir
    from ..language.config import TextConfig
    from ..prompts import load_vocabulary
    from ..search.config import SearchConfig
    from ..search.relevance import UNIT

    cfg = load_config(RelevanceBenchConfig, args.config, out=absolute_out(args.out))
    bench = load_config(BenchConfig, "bench/harness")
    torch.set_num_threads(bench.threads)
    if args.sections:
        cfg.he_sections = [s for s in cfg.he_sections if s in args.sections]
        cfg.measured_sections = list(args.sections)
    data_dir = resolve_data_dir(args.data_dir)
    ctx = RouteContext(cfg=bench, vocabulary=load_vocabulary(), data_dir=data_dir, progress=not args.no_progress,
                       text_models=TextModels(data_dir, load_config(TextConfig, bench.text_config), progress=not args.no_progress))
    scopes = {"all": SCOPES, "he": SCOPES[:1], "measured": SCOPES[1:]}[args.scope]
    rows = run_relevance(cfg, ctx, data_dir, scopes, progress=not args.no_progress)
    parts = ["spotwhisper", "bench", "relevance"] + (["--scope", args.scope] if args.scope != "all" else [])
    parts += (["--sections", *args.sections] if args.sections else []) + (["--out", args.out] if args.out else [])
    command = shlex.join(parts + ["--data-dir", str(args.data_dir) if args.data_dir else "$SPOTWHISPER_DATA_DIR"])
    threshold = load_config(SearchConfig, bench.search_config).threshold
    console = Console()
    for path in write_relevance_report(rows, cfg.out, threshold, command.replace("'$SPOTWHISPER_DATA_DIR'", "$SPOTWHISPER_DATA_DIR"), UNIT):
        if path.suffix == ".md":
            sys.stdout.write(path.read_text())
        console.print(f"wrote {path}")
    return 0


EXPRESSION_EPILOG = """\
Cross-patient: the expression model and the aligned head are trained with the project's recipe
(configs/expression.yaml, configs/aligned.yaml, augmentation included) on patient C (C2-C6) only and
tested on B4 (patient B) as scanned and resampled to 1, 2, 3.5 and 5 um/px, under HED stain shifts and
with another section's stain (Macenko). Ridge on the same features and the training mean sit beside
the model. Zero-shot AUROC of every H&E route comes from the bench harness with a text model that
never saw patient B. A second table holds leave-one-section-out over every H&E section.
As in the pipeline, conditions coarser than 2 um/px are read by the coarse model pair (stain
statistics: configs/expression_coarse.yaml, aligned_coarse.yaml); --config bench/expression_default_only
uses the CNN pair everywhere.

Reproduce the README tables (writes benchmarks/results/expression.{md,json} and *_{cross_patient,
zero_shot,loso}.csv; without --out under <user data folder>/results; about 17 minutes from a clean cache
on 2 CPU cores, seconds when cached):
  spotwhisper bench expression --data-dir ../shared/data --out benchmarks/results/expression
Trained models and the leave-one-section-out table are cached under $SPOTWHISPER_CACHE_DIR/bench.
"""


def register_expression(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expression",
        help="image models on a patient they never saw, across resolutions and stains (tables for the README)",
        description="Cross-patient benchmark of the H&E models: inferred expression (per-gene Pearson, Moran's I, "
        "top-k, interval coverage, variance-error Spearman within genes) and zero-shot AUROC of every H&E route, "
        "under a sweep of resolution and stain shifts; leave-one-section-out over all H&E sections.",
        epilog=EXPRESSION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(p, "bench/expression", "benchmark settings")
    p.add_argument("--out", default=None, help="output prefix, relative to the working directory (default: <user data folder>/results/expression, printed)")
    p.add_argument("--no-loso", action="store_true", help="skip the leave-one-section-out table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_dir(p)
    p.set_defaults(func=expression)


def expression(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..bench.expression_bench import ExpressionBenchConfig, run_expression_bench
    from ..bench.expression_report import write_expression_report
    from ..config import load_config
    from ..datadir import resolve_data_dir

    cfg = load_config(ExpressionBenchConfig, args.config, out=absolute_out(args.out))
    if not cfg.conditions:
        raise UserError(f"{args.config}: no conditions to measure")
    data_dir = resolve_data_dir(args.data_dir)
    res = run_expression_bench(data_dir, cfg, loso=not args.no_loso, progress=not args.no_progress)
    command = "spotwhisper bench expression" + (f" --config {args.config}" if args.config != "bench/expression" else "")
    command += (f" --out {args.out}" if args.out else "") + (" --no-loso" if args.no_loso else "")
    command += " --data-dir " + (str(args.data_dir) if args.data_dir else "$SPOTWHISPER_DATA_DIR")
    coarse = next((c.name for c in cfg.conditions if c.mpp == 3.5 and not c.hed_sigma and c.macenko_target is None), None)
    paths = write_expression_report(res, cfg.out, command, cfg.conditions[0].name, coarse)
    sys.stdout.write(paths["md"].read_text())
    console = Console()
    for p in paths.values():
        console.print(f"wrote {p}")
    return 0
