"""``spotwhisper data info`` (what a data directory holds) and ``spotwhisper data fetch`` (download)."""

from __future__ import annotations

import argparse
import math

from rich.console import Console
from rich.table import Table

from .options import UserError, add_data_dir, command_group

#: Data sets ``data fetch`` knows: a manifest ``spotwhisper/resources/<name>_manifest.json`` each,
#: and the her2st Zenodo record (:mod:`spotwhisper.io.zenodo`).
DATASETS = ["her2st", "her2st-zenodo"]
ZENODO = "her2st-zenodo"
FETCH_EPILOG = """\
data sets:
  her2st         the files of github.com/almaan/her2st that SpotWhisper reads (counts, spot
                 tables, labels, the H&E images of C2-C6 ...) -> DEST/her2st/
  her2st-zenodo  Zenodo record 3957257: full-resolution H&E images of all sections, as 7z
                 archives encrypted with AES -> DEST/her2st/zenodo/, each archive unpacked into
                 DEST/her2st/zenodo/<archive name without .7z>/. Unpacking needs the password
                 published in the README of github.com/almaan/her2st: pass --password PW (several
                 times if the archives use different ones) or set $SPOTWHISPER_HER2ST_PASSWORD.

Every file is checked against its sha256 (her2st) or md5 (Zenodo) before it is moved into
place; an interrupted download resumes from DEST/.../<file>.part; files already correct are
skipped and archives already unpacked are not unpacked again, so rerunning is cheap.

examples:
  spotwhisper data fetch her2st --dest data --only C2 C3
  spotwhisper data fetch her2st-zenodo --list
  export SPOTWHISPER_HER2ST_PASSWORD='...'      # from the almaan/her2st README
  spotwhisper data fetch her2st-zenodo --dest data
  spotwhisper data fetch her2st-zenodo --dest data --only NAME --password '...'
"""
TABLE_WIDTH = 120  # wide enough for every column when output is not a terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = command_group(subparsers, "data", "inspect or download data", "Inspect or download data.", metavar="WHAT")

    info = sub.add_parser("info", help="what a data directory holds, per section")
    add_data_dir(info)
    info.add_argument("--sections", nargs="+", metavar="S", help="only these sections (e.g. C2 C3)")
    info.add_argument("--no-progress", action="store_true", help="no progress bar")
    info.set_defaults(func=cmd_info)

    fetch = sub.add_parser(
        "fetch",
        help="download a public data set (resumable, checksum-verified)",
        description="Download a public data set into a data directory (DEST), resumable and checksum-verified.",
        epilog=FETCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("dataset", choices=DATASETS, help="data set to download: %(choices)s (see below)")
    fetch.add_argument("--dest", help="data directory to fill (the one later given as --data-dir)")
    fetch.add_argument(
        "--only",
        nargs="+",
        metavar="SEL",
        help="her2st: sections (C2), patients (C), kinds (counts, image ...) or path globs; "
        "her2st-zenodo: file names as --list shows them (with or without .7z) or globs",
    )
    fetch.add_argument("--ref", help="her2st: git ref (branch, tag or commit) of almaan/her2st (default: master)")
    fetch.add_argument(
        "--password",
        action="append",
        metavar="PW",
        help="her2st-zenodo: password of the 7z archives (repeat to try several); "
        "default $SPOTWHISPER_HER2ST_PASSWORD, which keeps it out of the shell history",
    )
    fetch.add_argument("--record", metavar="ID", help="her2st-zenodo: Zenodo record id (default: 3957257)")
    fetch.add_argument("--list", action="store_true", help="her2st-zenodo: list the record's files, download nothing")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_fetch)


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


def _check_fetch_args(args: argparse.Namespace) -> None:
    zenodo_only = {"--password": args.password, "--record": args.record, "--list": args.list}
    wrong = [k for k, v in zenodo_only.items() if v] if args.dataset != ZENODO else (["--ref"] if args.ref else [])
    if wrong:
        raise UserError(f"{', '.join(wrong)} does not apply to {args.dataset} (see spotwhisper data fetch --help)")
    if not args.dest and not args.list:
        raise UserError("--dest DIR is required: the data directory to download into")


def cmd_fetch_zenodo(args: argparse.Namespace) -> int:
    from ..io.fetch import FetchError, load_fetch_config
    from ..io.zenodo import fetch_her2st_zenodo, summarize_files, zenodo_files

    cfg = load_fetch_config()
    record = args.record or cfg.zenodo.her2st_record
    try:
        if args.list:
            for f in zenodo_files(record, cfg):
                size = f"{f.size / 2**20:,.1f} MiB" if f.size is not None else "size unknown"
                print(f"{f.name}\t{size}\t{f.algorithm}:{f.checksum}")
            return 0
        passwords = args.password or ()
        report = fetch_her2st_zenodo(
            args.dest, only=args.only, passwords=passwords, record_id=record, cfg=cfg, progress=not args.no_progress
        )
    except FetchError as err:
        raise UserError(str(err)) from err
    print(
        f"{ZENODO} (Zenodo record {record}): {len(report.downloaded)} file(s) downloaded, "
        f"{len(report.skipped)} already present in {report.root}"
    )
    for folder, files in report.extracted.items():
        print(f"  unpacked into {folder}: {summarize_files(files, folder)}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..io.fetch import FetchError, fetch

    _check_fetch_args(args)
    if args.dataset == ZENODO:
        return cmd_fetch_zenodo(args)
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
