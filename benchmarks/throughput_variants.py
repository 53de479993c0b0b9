"""The synthetic-slide part of ``benchmarks/pipeline_throughput.py``: one ``spotwhisper -v index build`` per
variant, each in its own process, cold cache and config folder; wall, CPU and peak RSS from ``os.wait4``,
per-stage figures from the pipeline's ``stage …`` log lines (:mod:`spotwhisper.timing`)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from spotwhisper.timing import parse_stage_lines
from synthetic_slides import visium_slide, wsi_slide

VARIANTS = ("today", "torch", "onnx", "openvino", "onepass")
STAGES = ("features", "expression", "proteins", "embeddings", "index")


def add_synthetic_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--variants", nargs="+", default=["torch", "openvino"], choices=VARIANTS)
    ap.add_argument("--spots", type=int, default=5000, help="visium: spots of the 100 µm hexagonal lattice")
    ap.add_argument("--wsi-side", type=int, default=100_000, help="wsi: side of the slide (px at 0.25 µm/px)")
    ap.add_argument("--tissue-cm2", type=float, default=2.0, help="wsi: tissue area (cm²); 2 cm² ≈ 20,000 grid tiles")
    ap.add_argument("--today-python", default=None, help="python of the install that is today's code (variant today)")
    ap.add_argument("--onepass-models", type=Path, default=None,
                    help="folder with expression-onepass/ and aligned-onepass/ (variant onepass)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the encoder runtime (torch and the others)")
    ap.add_argument("--slides-dir", type=Path, default=None, help="reuse/keep the synthetic slides here (they take minutes)")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write the tables to")


def _shipped(python: str, name: str) -> dict:
    """``configs/<name>.yaml`` as shipped with the install of ``python``."""
    code = f"from spotwhisper.config import resolve_config_path; print(resolve_config_path({name!r}))"
    path = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return yaml.safe_load(Path(path).read_text())


def variant_env(variant: str, args: argparse.Namespace, folder: Path, python: str) -> dict[str, str]:
    """Environment of one variant: its own cache and config folder (runtime, one-pass models, grid stride)."""
    cfg = folder / "configs"
    cfg.mkdir(parents=True, exist_ok=True)
    if args.slide == "wsi":
        tiles = _shipped(python, "tiles")
        tiles["grid"]["overlap"] = 0.5  # 200 µm tiles at 100 µm stride
        (cfg / "tiles.yaml").write_text(yaml.safe_dump(tiles))
    if variant != "today":
        enc = _shipped(python, "encoders")
        enc["runtime"]["use"] = "openvino" if variant == "onepass" else variant
        enc["runtime"]["threads"] = args.threads
        (cfg / "encoders.yaml").write_text(yaml.safe_dump(enc))
    if variant == "onepass":
        if args.onepass_models is None:
            raise SystemExit("variant onepass needs --onepass-models")
        pipe = _shipped(python, "pipeline")
        pipe["expression_model"] = str(args.onepass_models / "expression-onepass")
        pipe["aligned_model"] = str(args.onepass_models / "aligned-onepass")
        (cfg / "pipeline.yaml").write_text(yaml.safe_dump(pipe))
    return {**os.environ, "SPOTWHISPER_CONFIG_DIR": str(cfg), "SPOTWHISPER_CACHE_DIR": str(folder / "cache"),
            "OMP_NUM_THREADS": str(args.threads)}


def run_variant(variant: str, spec: str, args: argparse.Namespace, work: Path) -> dict:
    """One ``index build`` → wall/CPU/peak RSS, stages, spots, load before and after."""
    python = args.today_python if variant == "today" else sys.executable
    if python is None:
        raise SystemExit("variant today needs --today-python")
    folder = work / variant
    env = variant_env(variant, args, folder, python)
    exe = Path(python).with_name("spotwhisper")
    cmd = [str(exe), "-v", "index", "build", "--collection", "bench", spec, "--index-dir", str(folder / "indexes")]
    log_path = folder / "log.txt"
    load0 = os.getloadavg()[0]
    print(f"[{variant}] {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    text = log_path.read_text(errors="replace")
    if status != 0:
        raise RuntimeError(f"variant {variant} failed ({status}); last lines:\n" + "\n".join(text.splitlines()[-20:]))
    info = subprocess.run([str(exe), "index", "info", "--collection", "bench", "--json", "--index-dir", str(folder / "indexes")],
                          env=env, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(folder / "cache", ignore_errors=True)  # features of 20,000 tiles are GBs
    return {"variant": variant, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "stages": parse_stage_lines(text), "load": (load0, os.getloadavg()[0]), "tiles": _spots(info)}


def measure_synthetic(args: argparse.Namespace, work: Path) -> None:
    """Build (or reuse) the synthetic slide, run every variant, print and write the tables."""
    slides = args.slides_dir or work
    slides.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if args.slide == "visium":
        spec = slides / f"visium{args.spots}.h5ad"
        if not spec.exists():
            visium_slide(slides, args.data_dir, n_spots=args.spots, name=f"visium{args.spots}")
        what = f"synthetic Visium-size slide: {args.spots} spots on a 100 µm hexagonal lattice, 0.5 µm/px pyramidal TIFF"
    else:
        spec = slides / f"wsi{args.wsi_side}_{args.tissue_cm2:g}cm2.tif"
        if not spec.exists():
            wsi_slide(slides, args.data_dir, side=args.wsi_side, tissue_cm2=args.tissue_cm2, name=spec.stem)
        what = (f"synthetic whole slide: {args.wsi_side:,} × {args.wsi_side:,} px pyramidal TIFF at 0.25 µm/px, "
                f"{args.tissue_cm2:g} cm² of tissue, 200 µm grid tiles at 100 µm stride")
    print(f"{what} ({spec}, made or found in {time.perf_counter() - t:.0f} s)", flush=True)
    rows = [run_variant(v, str(spec), args, work) for v in args.variants]
    report(rows, what, args)


def report(rows: list[dict], what: str, args: argparse.Namespace) -> None:
    ref = rows[0]
    n_tiles = _tiles(ref)
    lines = [f"{what}; {os.cpu_count()} CPUs, encoder runtimes at {args.threads} threads. Command: "
             f"`python benchmarks/pipeline_throughput.py {' '.join(sys.argv[1:])}`", "",
             f"| variant | wall s | CPU s | peak RSS MB | tiles/s (wall) | × {ref['variant']} (wall) | load before → after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        n = _tiles(r) or n_tiles
        lines.append(f"| {r['variant']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{(n or float('nan')) / r['wall_s']:.2f} | {ref['wall_s'] / r['wall_s']:.2f} | "
                     f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")
    staged = [r for r in rows if r["stages"]]
    if staged:
        lines += ["", "Per stage (wall s / CPU s; peak RSS MB of the process at the stage's end):", "",
                  "| variant | " + " | ".join(STAGES) + " |", "| --- | " + " | ".join("---" for _ in STAGES) + " |"]
        for r in staged:
            cells = [f"{r['stages'][s]['wall_s']:.1f} / {r['stages'][s]['cpu_s']:.1f} / {r['stages'][s]['peak_rss_mb']:.0f}"
                     if s in r["stages"] else "–" for s in STAGES]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")
        print(f"appended to {args.out}")


def _tiles(row: dict) -> int | None:
    return row.get("tiles")


def _spots(info_json: str) -> int | None:
    """Spots (tiles) indexed in the collection, from ``index info --json``."""
    import json

    try:
        return int(json.loads(info_json)["n_vectors"])
    except (ValueError, KeyError, TypeError):
        return None
