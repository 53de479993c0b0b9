"""Seconds from starting a cold ``spotwhisper demo`` to its first answer, in the terminal and in the UI.

Starts the demo as a subprocess on an empty feature cache (``SPOTWHISPER_CACHE_DIR``), an empty
index folder (``--index-dir``) and upload folder, then records

* **UI served** — when the page answers HTTP 200 (the demo serves before its first answer);
* **terminal** — when the demo prints the example's answer (its ``Example query:`` line), and the
  CPU time the demo process had used by then (load-independent: on a shared machine the wall time
  depends on what else runs);
* **UI** — when a headless Chromium, which opened the page as soon as it was served, sees the
  answer in the chat (needs Playwright and Chromium);
* with ``--all``, when the last section is added in the background (``ready:`` lines).

The demo is stopped (SIGINT, then SIGTERM) at the end. Also printed: the machine's load average
before and after, since the two cores may be shared. Not a test: a figure for the README.

    python benchmarks/demo_first_answer.py --data-dir ../shared/data [--all] [--threads 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ANSWER_MARK = "Example query:"
READY_MARK = "ready:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reader(stream, lines: queue.Queue, echo: bool) -> None:
    for raw in iter(stream.readline, ""):
        lines.put((time.monotonic(), raw.rstrip("\n")))
        if echo:
            print("  | " + raw.rstrip("\n"), flush=True)
    lines.put((time.monotonic(), None))


def _wait_http(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), or None."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _ui_watch(url: str, chromium: str, deadline: float, out: dict) -> None:
    """Wait until the page is served, open it, record when the chat shows the answer (monotonic)."""
    if not _wait_http(url, deadline):
        return
    out["served"] = time.monotonic()
    try:
        out["ui"] = _ui_answer(url, chromium, deadline)
    except Exception as err:  # noqa: BLE001 - a benchmark reports, it does not crash
        out["error"] = str(err)


def _ui_answer(url: str, chromium: str, deadline: float) -> float | None:
    """Time (monotonic) when the served page shows the example's answer in the chat, or None."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url, timeout=max(1, deadline - time.monotonic()) * 1000)
        page.wait_for_function("document.querySelector('#chat')?.innerText.includes('Searched')",
                               timeout=max(1, deadline - time.monotonic()) * 1000)
        seen = time.monotonic()
        browser.close()
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("SPOTWHISPER_DATA_DIR"))
    ap.add_argument("--all", action="store_true", help="also wait until every section is in the collection")
    ap.add_argument("--threads", type=int, default=None, help="passed to the demo (default: every core)")
    ap.add_argument("--sections", nargs="+", default=None, help="passed to the demo")
    ap.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    ap.add_argument("--keep", type=Path, default=None, help="keep cache/index/uploads here (default: a temp folder, deleted)")
    ap.add_argument("--chromium", default=os.environ.get("SPOTWHISPER_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--quiet", action="store_true", help="do not echo the demo's output")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="spotwhisper-demo-bench-"))
    cold = True
    for sub in ("cache", "indexes", "ui-data", "out"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        if any((work / sub).iterdir()) and sub in ("cache", "indexes"):
            print(f"note: {work / sub} is not empty: this is a warm start", file=sys.stderr)
            cold = False
    port = _free_port()
    env = {**os.environ, "SPOTWHISPER_CACHE_DIR": str(work / "cache"), "SPOTWHISPER_UI_DATA_DIR": str(work / "ui-data"),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    cmd = [sys.executable, "-c", "import sys; from spotwhisper.cli import main; sys.exit(main())", "demo",
           "--index-dir", str(work / "indexes"), "--out-dir", str(work / "out"), "--port", str(port), "--no-progress"]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.sections:
        cmd += ["--sections", *args.sections]
    load_before = os.getloadavg()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines, not args.quiet), daemon=True).start()
    deadline = start + args.timeout
    terminal = cpu = everything = None
    n_ready, total = 0, None
    watch: dict = {}
    watcher = threading.Thread(target=_ui_watch, args=(f"http://127.0.0.1:{port}/", args.chromium, deadline, watch),
                               daemon=True)
    watcher.start()
    try:
        while time.monotonic() < deadline:
            try:
                t, line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if terminal is None and ANSWER_MARK in line:
                terminal, cpu = t - start, _cpu_seconds(proc.pid)
                if not args.all:
                    watcher.join(timeout=max(1.0, min(120.0, deadline - time.monotonic())))
                    break
            if READY_MARK in line:
                n_ready += 1
                if " of " in line:
                    try:
                        total = int(line.split(" of ")[1].split()[0])
                        done = int(line.split("—")[1].split(" of ")[0])
                    except (IndexError, ValueError):
                        done = None
                    if done is not None and total is not None and done >= total:
                        everything = t - start
                        break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=15)
    load_after = os.getloadavg()
    served = watch["served"] - start if "served" in watch else None
    ui = watch["ui"] - start if watch.get("ui") else None
    print()
    print(f"{'cold' if cold else 'warm'} demo, {os.cpu_count()} CPU cores, load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if served is not None:
        print(f"UI served (HTTP 200):         {served:.1f} s")
    print(f"first answer in the terminal: {terminal:.1f} s" if terminal is not None else "no answer printed")
    if cpu is not None:
        print(f"CPU time of the demo by then: {cpu:.1f} s (user + system, all threads)")
    print(f"first answer in the UI chat:  {ui:.1f} s" if ui is not None
          else f"UI chat: no answer seen ({watch.get('error', 'no Playwright/Chromium, or timed out')})")
    if args.all:
        print(f"whole collection ready:       {everything:.1f} s" if everything is not None else "collection not finished")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if terminal is not None else 1


if __name__ == "__main__":
    sys.exit(main())
