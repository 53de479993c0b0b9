"""Pipeline throughput: synthetic Visium-size and whole slides per runtime side by side (issue 22), or
local engine vs Ray on real her2st sections.

**Synthetic slides** (``--slide visium|wsi``, built from her2st tissue by ``benchmarks/synthetic_slides.py``):
every variant runs ``spotwhisper -v index build`` on the same slide — tiles → features → inferred expression
→ proteins → embeddings → FAISS index — in its own process with an empty feature cache, one after the
other in this run, so ratios to the first variant stand on a busy machine. Per variant: wall time, CPU
time (user + system, all threads) and peak RSS of the process (``os.wait4``), and per stage the figures
the pipeline logs (:mod:`spotwhisper.timing`). Variants: ``today`` (another install's ``spotwhisper``,
``--today-python``: e.g. a venv of main before issue 22), ``torch`` / ``onnx`` / ``openvino`` (this
checkout, ``runtime.use``), ``onepass`` (the default runtime with the one-pass models of ``--onepass-models``).

    nice python benchmarks/pipeline_throughput.py --slide visium --spots 5000 --variants openvino onepass
    nice python benchmarks/pipeline_throughput.py --slide visium --spots 500 --variants today torch openvino onepass \
        --today-python /path/to/main-venv/bin/python --onepass-models DIR --out benchmarks/results/throughput_visium.md
    nice python benchmarks/pipeline_throughput.py --slide wsi --tissue-cm2 2 --variants onepass --onepass-models DIR

The whole-slide grid is 200 µm tiles at 100 µm stride (``grid.overlap: 0.5``): 2 cm² of tissue ≈ 20,000 tiles.

**her2st** (``--slide her2st``, the default; local engine vs Ray):

Each engine runs the whole pipeline (tiles → features → inferred expression → proteins →
embeddings) on the same sections twice: **cold** (an empty feature cache: image features are
computed) and **warm** (features read from that cache; everything after them is recomputed).
Local = one process, ``spotwhisper.collection.process_slides``; Ray = a local Ray instance
with ``--num-cpus`` CPUs and one actor per CPU (``spotwhisper.scale.run_slides_ray``), timed from
submitting the job until every slide is staged (actor start and model loading included; Ray's own
start-up is printed separately). The FAISS commit that follows is timed too.

    nice python benchmarks/pipeline_throughput.py                        # C2 C3, 60 spots each
    nice python benchmarks/pipeline_throughput.py --sections C2 C3 C4 C5 C6 --max-spots 0   # whole sections
    nice python benchmarks/pipeline_throughput.py --index                # then the FAISS figures (index_speed.py)

Query latency, recall and memory of IVF-PQ vs flat at 1M / 10M vectors are measured by
``benchmarks/index_speed.py`` (``--index`` runs it with its defaults; add ``--big`` there for 10M).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spotwhisper import keys
from spotwhisper.io import read_her2st, write_h5ad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_variants import add_synthetic_arguments, measure_synthetic  # noqa: E402


def write_specs(data_dir: str, sections: list[str], max_spots: int, folder: Path) -> list[str]:
    """Each section as an .h5ad; with ``max_spots`` the spots nearest the section's centre (a disc)."""
    out = []
    for section in sections:
        a = read_her2st(data_dir, section)
        if 0 < max_spots < a.n_obs:
            xy = a.obs[[keys.ARRAY_X, keys.ARRAY_Y]].to_numpy(float)
            a = a[np.sort(np.argsort(((xy - xy.mean(0)) ** 2).sum(1))[:max_spots])].copy()
        path = folder / f"{section}.h5ad"
        write_h5ad(a, path)
        out.append(str(path))
    return out


def run_local(specs: list[str], threads: int) -> dict:
    import torch

    from spotwhisper.collection import process_slides
    from spotwhisper.timing import peak_rss_mb
    from spotwhisper.pipeline import Models

    torch.set_num_threads(threads)
    start = time.perf_counter()
    adatas = process_slides(specs, models=Models.load(), progress=False)
    seconds = time.perf_counter() - start
    return {"spots": sum(a.n_obs for a in adatas), "seconds": seconds, "busy": seconds, "peak_mb": peak_rss_mb()}


def run_ray(specs: list[str], work: Path, name: str, cfg) -> dict:
    from spotwhisper.collection import publish
    from spotwhisper.scale import run_slides_ray

    start = time.perf_counter()
    items = run_slides_ray(specs, collection=name, index_dir=work, cfg=cfg, progress=False)
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    publish(items, name, work, progress=False)
    return {"spots": sum(i.n_spots for i in items), "seconds": seconds, "busy": sum(i.seconds for i in items),
            "peak_mb": max(i.peak_rss_mb for i in items), "commit": time.perf_counter() - t,
            "actors": len({i.worker for i in items})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR", "../shared/data"))
    ap.add_argument("--slide", choices=["her2st", "visium", "wsi"], default="her2st")
    add_synthetic_arguments(ap)
    ap.add_argument("--sections", nargs="+", default=["C2", "C3"], help="her2st sections with H&E (C2–C6)")
    ap.add_argument("--max-spots", type=int, default=60, help="spots per section (0 = all)")
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance (= actors)")
    ap.add_argument("--local-threads", type=int, default=1, help="torch threads of the local engine")
    ap.add_argument("--index", action="store_true", help="also run benchmarks/index_speed.py (FAISS figures)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (inputs, caches, collections)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sw-throughput-"))
    try:
        if args.slide == "her2st":
            measure(args, work)
        else:
            measure_synthetic(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.index:
        script = Path(__file__).resolve().parent / "index_speed.py"
        print(f"\n$ {sys.executable} {script}", flush=True)
        subprocess.run([sys.executable, str(script)], check=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Run every engine cold and warm on the sections and print the table."""
    from spotwhisper.scale import load_scale_config, ray_session

    specs = write_specs(args.data_dir, args.sections, args.max_spots, work)
    cfg = load_scale_config(actors=args.num_cpus, num_cpus=args.num_cpus)
    print(f"sections {' '.join(args.sections)}, {'all' if args.max_spots <= 0 else args.max_spots} spots each; "
          f"{os.cpu_count()} CPUs on this machine, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for engine in args.engines:
        cache = work / f"cache-{engine}"
        os.environ["SPOTWHISPER_CACHE_DIR"] = str(cache)  # the actors get it through forward_env
        if engine == "local":
            for state in ("cold", "warm"):
                rows.append({"engine": f"local ({args.local_threads} thread)", "cache": state,
                             **run_local(specs, args.local_threads)})
            continue
        t = time.perf_counter()
        with ray_session(cfg, args.num_cpus):
            print(f"Ray start-up: {time.perf_counter() - t:.1f} s")
            for state in ("cold", "warm"):
                rows.append({"engine": f"ray ({args.num_cpus} actors)", "cache": state,
                             **run_ray(specs, work / "indexes", f"bench-{state}", cfg)})
    print(f"\n{'engine':<20} {'cache':<5} {'spots':>6} {'wall s':>8} {'spots/s':>8} {'busy s/spot':>11} "
          f"{'peak MB/proc':>12} {'commit s':>8}")
    for r in rows:
        print(f"{r['engine']:<20} {r['cache']:<5} {r['spots']:>6} {r['seconds']:>8.1f} {r['spots'] / r['seconds']:>8.2f} "
              f"{r['busy'] / r['spots']:>11.3f} {r['peak_mb']:>12.0f} {r.get('commit', float('nan')):>8.2f}")
    print("busy s/spot: pipeline time per spot inside the worker(s), without start-up; "
          "peak MB/proc: largest resident memory of one worker process")


if __name__ == "__main__":
    main()
