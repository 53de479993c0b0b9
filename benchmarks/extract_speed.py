"""`spotwhisper features extract` (no cache) on her2st sections, today's install against this checkout's
runtimes, side by side in one run: spots per second of the whole command (start-up, slide decoding,
tissue mask, tile reading and the encoder), CPU time and peak RSS.

Variants run in round robin (each repeat runs every variant once, in turn), so load that comes and goes
falls on all of them:

    nice python benchmarks/extract_speed.py --data-dir ../shared/data --today-python /path/to/main-venv/bin/python \\
        --variants today torch openvino onepass [--sections C2 B4] [--repeats 2] [--out benchmarks/results/extract_speed.md]

``today`` is another install's ``spotwhisper`` (e.g. main before issue 22; only its defaults); ``torch``,
``onnx``, ``openvino`` are this checkout with ``--runtime``; ``onepass`` is the one-pass encoder
(``--model efficientnet_lite0_onepass``, one backbone pass per spot) on the default runtime. Spots/s is the
sections' spots over the sum of their wall times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANT_ARGS = {"torch": ["--runtime", "torch"], "onnx": ["--runtime", "onnx"], "openvino": ["--runtime", "openvino"],
                "onepass": ["--model", "efficientnet_lite0_onepass"], "today": []}


def run(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """Wall s, CPU s (user + system) and peak RSS MB of one command."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return time.perf_counter() - t, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR", "../shared/data"))
    ap.add_argument("--sections", nargs="+", default=["C2", "B4"])
    ap.add_argument("--variants", nargs="+", default=["torch", "openvino"], choices=list(VARIANT_ARGS))
    ap.add_argument("--today-python", default=None, help="python of today's install (variant today)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS and the runtimes' threads")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sw-extract-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "SPOTWHISPER_CACHE_DIR": str(work / "cache")}
    spots = {}
    totals = {v: np.zeros(3) for v in args.variants}
    loads = []
    for rep in range(args.repeats):
        for v in args.variants:
            python = args.today_python if v == "today" else sys.executable
            if python is None:
                raise SystemExit("variant today needs --today-python")
            for s in args.sections:
                out = work / f"{v}_{s}.h5ad"
                cmd = [str(Path(python).with_name("spotwhisper")), "features", "extract", s, "--data-dir", args.data_dir,
                       "--no-cache", "--out", str(out), *VARIANT_ARGS[v]]
                loads.append(os.getloadavg()[0])
                wall, cpu, rss = run(cmd, env)
                totals[v] += (wall, cpu, 0)
                totals[v][2] = max(totals[v][2], rss)
                if s not in spots:
                    import anndata as ad

                    spots[s] = ad.read_h5ad(out, backed="r").n_obs
                print(f"[{rep}] {v} {s}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {rss:.0f} MB", flush=True)
    n = sum(spots.values()) * args.repeats
    ref = args.variants[0]
    lines = [f"`spotwhisper features extract SECTION --no-cache` on {' + '.join(f'{s} ({k} spots)' for s, k in spots.items())}, "
             f"{args.repeats} round(s), variants in round robin; OMP_NUM_THREADS={args.threads}; load average "
             f"{np.mean(loads):.1f} (min {min(loads):.1f}, max {max(loads):.1f}) on {os.cpu_count()} CPUs. Command: "
             f"`python benchmarks/extract_speed.py {' '.join(sys.argv[1:])}`", "",
             f"| variant | spots/s (wall) | × {ref} | CPU s per spot | × {ref} (CPU) | peak RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v, (wall, cpu, rss) in totals.items():
        lines.append(f"| {v} | {n / wall:.2f} | {totals[ref][0] / wall:.2f} | {cpu / n:.3f} | {totals[ref][1] / cpu:.2f} | {rss:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")
        print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
