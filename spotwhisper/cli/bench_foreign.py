"""``spotwhisper bench relevance --foreign`` / ``--visium DIR --labels CSV``: the foreign-slide benchmark
(:mod:`spotwhisper.bench.foreign`) on labelled H&E-only Space Ranger folders."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..userdata import output_path
from .options import UserError, absolute_out

FOREIGN_EPILOG = """\
Foreign slides (another lab, tissue and technology; H&E only: no counts needed):
  spotwhisper bench relevance --foreign --data-dir ../shared/data
    the sections of configs/bench/foreign.yaml (ccrcc/a_1, ccrcc/b_1: kidney cancer Visium, TLS labels)
  spotwhisper bench relevance --visium outs/ --labels labels.csv --label-column TLS \\
      --class "TLS=tertiary lymphoid structures" --class "T_agg=tertiary lymphoid structures" --absent "hepatocytes"
    your own labelled folder: LABEL=QUERY maps label values onto queried classes (other values are
    negatives); --absent adds concepts that are not in your tissue to the shared absent list.
"""


def add_foreign_options(p: argparse.ArgumentParser) -> None:
    """The foreign-slide options of ``bench relevance``."""
    g = p.add_argument_group("foreign slides (H&E-only Space Ranger folders with spot labels)")
    g.add_argument("--foreign", nargs="?", const="bench/foreign", default=None, metavar="CONFIG",
                   help="run the foreign-slide benchmark of CONFIG (default configs/bench/foreign.yaml)")
    g.add_argument("--visium", default=None, metavar="DIR", help="one labelled Space Ranger folder (counts not needed)")
    g.add_argument("--labels", default=None, metavar="CSV", help="with --visium: spot labels (barcode, label columns)")
    g.add_argument("--label-column", default=None, metavar="COL", help="with --labels: the label column")
    g.add_argument("--class", dest="classes", action="append", default=[], metavar="LABEL=QUERY",
                   help="with --visium: a label value and the query of its class (repeat; bare LABEL = its own text)")
    g.add_argument("--absent", action="append", default=[], metavar="QUERY",
                   help="with --visium: a concept absent from this tissue (repeat; added to the shared list)")
    g.add_argument("--mpp", type=float, default=None, help="with --visium: µm per full-resolution pixel if unknown")


def wants_foreign(args: argparse.Namespace) -> bool:
    return args.foreign is not None or args.visium is not None


def foreign_relevance(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..bench.foreign import ForeignBenchConfig, one_section_config, run_foreign, write_foreign_report
    from ..config import load_config
    from ..datadir import resolve_data_dir
    from ..search.config import SearchConfig

    if args.visium is not None:
        if not args.labels or not args.classes:
            raise UserError("--visium DIR needs --labels CSV and at least one --class LABEL=QUERY")
        base = load_config(ForeignBenchConfig, "bench/foreign")
        try:
            cfg = one_section_config(args.visium, args.labels, args.label_column, args.classes, args.absent, args.mpp, base)
        except ValueError as err:
            raise UserError(str(err)) from err
    else:
        cfg = load_config(ForeignBenchConfig, args.foreign)
    if args.out:
        cfg.out = absolute_out(args.out)
    try:
        data_dir = resolve_data_dir(args.data_dir) if args.visium is None else args.data_dir
        rows = run_foreign(cfg, data_dir, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err
    parts = ["spotwhisper", "bench", "relevance"]
    if args.visium is not None:
        parts += ["--visium", args.visium, "--labels", args.labels] + (["--label-column", args.label_column] if args.label_column else [])
        parts += [x for c in args.classes for x in ("--class", c)] + [x for a in args.absent for x in ("--absent", a)]
    else:
        parts += ["--foreign"] + ([args.foreign] if args.foreign != "bench/foreign" else [])
    parts += (["--out", args.out] if args.out else []) + ["--data-dir", str(args.data_dir) if args.data_dir else "$SPOTWHISPER_DATA_DIR"]
    threshold = load_config(SearchConfig, "search").threshold
    console = Console()
    for path in write_foreign_report(rows, output_path(cfg.out), shlex.join(parts).replace("'$SPOTWHISPER_DATA_DIR'", "$SPOTWHISPER_DATA_DIR"), threshold):
        if path.suffix == ".md":
            sys.stdout.write(path.read_text())
        console.print(f"wrote {path}")
    return 0
