"""Per-stage wall time, CPU time and peak memory of the pipeline, logged (``spotwhisper -v``).

:func:`stage` wraps one stage of one slide: on exit it logs ``stage <name> (<slide>): W s wall, C s CPU,
peak RSS M MB`` at INFO on the ``spotwhisper.timing`` logger and, when given a dict, adds the figures to it.
CPU time is the process's (every thread: tile readers, the runtime's threads), peak RSS the process's
high-water mark so far. ``benchmarks/pipeline_throughput.py`` reads these lines to break a run down by stage.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: the log line of one stage, as :func:`parse_stage_lines` reads it back
LINE = re.compile(r"stage (?P<stage>[\w-]+) \((?P<slide>[^)]*)\): (?P<wall>[\d.]+) s wall, (?P<cpu>[\d.]+) s CPU, "
                  r"peak RSS (?P<rss>[\d.]+|nan) MB")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ``ru_maxrss`` is KB on Linux, bytes on macOS);
    NaN where the POSIX ``resource`` module does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)


@contextmanager
def stage(name: str, slide: str = "", timings: dict[str, dict[str, float]] | None = None) -> Iterator[None]:
    """Time the ``with`` block as stage ``name`` of ``slide`` (see the module docstring)."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss = peak_rss_mb()
        log.info("stage %s (%s): %.2f s wall, %.2f s CPU, peak RSS %.0f MB", name, slide, wall, cpu, rss)
        if timings is not None:
            row = timings.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
            row["wall_s"] += wall
            row["cpu_s"] += cpu
            row["peak_rss_mb"] = max(row["peak_rss_mb"], rss)


def parse_stage_lines(text: str) -> dict[str, dict[str, float]]:
    """``{stage: {"wall_s", "cpu_s", "peak_rss_mb"}}`` summed over slides from log text of :func:`stage`."""
    out: dict[str, dict[str, float]] = {}
    for m in LINE.finditer(text):
        row = out.setdefault(m["stage"], {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
        row["wall_s"] += float(m["wall"])
        row["cpu_s"] += float(m["cpu"])
        row["peak_rss_mb"] = max(row["peak_rss_mb"], float(m["rss"]))
    return out
