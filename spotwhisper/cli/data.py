"""``spotwhisper data info`` (what a data directory holds) and ``spotwhisper data fetch`` (download)."""

from __future__ import annotations

import argparse
import math

from rich.console import Console
from rich.table import Table

from . import UserError, add_data_dir

#: Data sets ``data fetch`` knows (a manifest ``spotwhisper/resources/<name>_manifest.json`` each).
DATASETS = ["her2st"]
TABLE_WIDTH = 120  # wide enough for every column when output is not a terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect or download data", description="Inspect or download data.")
    sub = parser.add_subparsers(dest="data_what", metavar="WHAT")

    info = sub.add_parser("info", help="what a data directory holds, per section")
    add_data_dir(info)
    info.add_argument("--sections", nargs="+", metavar="S", help="only these sections (e.g. C2 C3)")
    info.add_argument("--no-progress", action="store_true", help="no progress bar")
    info.set_defaults(func=cmd_info)

    fetch = sub.add_parser(
        "fetch",
        help="download a public data set (resumable, checksum-verified)",
        description="Download a public data set into DEST/<name>/ (resumable, sha256-verified). "
        "her2st: the files of github.com/almaan/her2st that SpotWhisper reads; its encrypted "
        "Zenodo record 3957257 (full-resolution images of all sections) is not fetched.",
    )
    fetch.add_argument("dataset", choices=DATASETS, help="data set to download")
    fetch.add_argument("--dest", required=True, help="data directory to fill (files go to DEST/<dataset>/)")
    fetch.add_argument(
        "--only", nargs="+", metavar="SEL", help="sections (C2), patients (C), kinds (counts, image …) or path globs"
    )
    fetch.add_argument("--ref", default=None, help="git ref (branch, tag or commit) of the source repository (default: master)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_fetch)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _yes(flag: bool) -> str:
    return "yes" if flag else "–"


def cmd_info(args: argparse.Namespace) -> int:
    from ..io.describe import describe_sections, shared_files

    table_df = describe_sections(args.data_dir, args.sections, progress=not args.no_progress)
    table = Table(title="her2st sections", title_justify="left")
    for name, justify in [
        ("section", "left"), ("spots", "right"), ("genes", "right"), ("H&E image", "left"),
        ("size (px)", "right"), ("µm/px", "right"), ("labels", "center"), ("clusters", "center"),
        ("cell types", "center"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)
    for r in table_df.itertuples(index=False):
        has_image = r.image is not None
        table.add_row(
            r.section,
            str(r.spots),
            str(r.genes),
            r.image if has_image else "–",
            f"{r.width_px}×{r.height_px}" if has_image else "–",
            f"{r.mpp:.3f}" if has_image and not math.isnan(r.mpp) else "–",
            _yes(r.labels),
            _yes(r.clusters),
            _yes(r.deconvolution),
        )
    console = Console(width=max(TABLE_WIDTH, Console().width))
    console.print(table)
    n_img = int(table_df["image"].notna().sum())
    console.print(
        f"{len(table_df)} section(s), {int(table_df['spots'].sum()):,} spots, {n_img} with an H&E image, "
        f"{int(table_df['labels'].sum())} with pathologist labels"
    )
    for name, path in shared_files(args.data_dir).items():
        console.print(f"  {name}: {path if path else 'missing'}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..io.fetch import FetchError, fetch

    try:
        report = fetch(args.dataset, args.dest, only=args.only, ref=args.ref, progress=not args.no_progress)
    except FetchError as err:
        raise UserError(str(err)) from err
    print(
        f"{args.dataset}: {len(report.downloaded)} file(s) downloaded, {len(report.skipped)} already present"
        + (f", {len(report.unpacked)} unpacked" if report.unpacked else "")
        + f" in {report.root}"
    )
    print(f"use it with: --data-dir {args.dest}   (or export SPOTWHISPER_DATA_DIR={args.dest})")
    return 0
