"""Start-up time of ``spotwhisper --help`` and of every subcommand's ``--help``.

Each command line runs in a fresh interpreter (``from spotwhisper.cli import main; main([..., "--help"])``,
what the ``spotwhisper`` entry point runs), ``--repeat`` times; the median wall time is printed with the
heavy libraries it imported (none should be: torch, scanpy, anndata, faiss, gradio, transformers,
timm and ray load inside the command functions). Target: under 1 s each.

    python benchmarks/cli_startup.py [--repeat 5] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ["torch", "scanpy", "anndata", "faiss", "gradio", "transformers", "timm", "ray", "sklearn", "skimage"]

#: every command line whose --help is timed
COMMANDS = [
    [], ["demo"], ["data"], ["data", "info"], ["data", "fetch"], ["tiles"], ["tiles", "preview"],
    ["features"], ["features", "extract"], ["features", "models"],
    ["train"], ["train", "panel"], ["train", "expression"], ["train", "proteins"], ["train", "text"], ["train", "imagetext"],
    ["predict"], ["predict", "expression"], ["predict", "proteins"], ["predict", "text"],
    ["index"], ["index", "build"], ["index", "list"], ["index", "info"], ["index", "remove-slide"],
    ["search"], ["bench"], ["bench", "zero-shot"], ["serve"],
]

PROBE = """
import json, sys
from spotwhisper.cli import main
try:
    main([*{args!r}, "--help"])
except SystemExit:
    pass
print("@@" + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def run_once(args: list[str]) -> tuple[float, list[str]]:
    code = PROBE.format(args=args, heavy=HEAVY)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if "usage:" not in proc.stdout:
        raise RuntimeError(f"spotwhisper {' '.join(args)} --help printed no usage:\n{proc.stdout}\n{proc.stderr}")
    marker = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@")]
    return seconds, json.loads(marker[-1][2:]) if marker else ["?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command line (median reported)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    rows = []
    for cmd in COMMANDS:
        times, heavy = [], []
        for _ in range(args.repeat):
            t, heavy = run_once(cmd)
            times.append(t)
        rows.append((" ".join(["spotwhisper", *cmd, "--help"]), statistics.median(times), max(times), heavy))
    baseline = statistics.median([run_once_python() for _ in range(args.repeat)])
    if args.markdown:
        print("| command | median s | max s | heavy modules imported |\n| --- | --- | --- | --- |")
        for name, med, mx, heavy in rows:
            print(f"| `{name}` | {med:.2f} | {mx:.2f} | {', '.join(heavy) or 'none'} |")
    else:
        width = max(len(r[0]) for r in rows)
        for name, med, mx, heavy in rows:
            print(f"{name:<{width}}  median {med:5.2f} s  max {mx:5.2f} s  heavy: {', '.join(heavy) or 'none'}")
    print(f"\nbare `python -c pass`: {baseline:.2f} s (interpreter start-up, included above); "
          f"slowest median {max(r[1] for r in rows):.2f} s; target < 1 s")


def run_once_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
