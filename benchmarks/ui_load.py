"""Many chat users at once against the running UI: latency per chat message (p50/p95) for 1 and N
concurrent sessions, answer checks (no errors, no mix-ups) and the server's memory.

    python benchmarks/ui_load.py --collection demo [--index-dir DIR] [--users 20] [--queries 200]
    python benchmarks/ui_load.py --url http://127.0.0.1:7860/ --server-pid PID   # an app already running

Without ``--url`` it starts ``spotwhisper serve`` in a subprocess (its own data folder in a temp
dir) and stops it at the end. Each user is one Gradio session (``gradio_client``; its own client
cookie) that sends chat messages one after the other through the ``/chat`` endpoint — the same
event a browser's chat box fires, so every answer also renders the overlay and top tiles and
serves them to that session. Users start together and never pause ("closed loop, no think time":
the hardest case). Queries are drawn from :data:`QUERIES` so that, across users, the same query
comes back (query embeddings are cached, as in real use); each user's sequence is its own.

With ``--think S`` users arrive over the first S seconds and pause 0.5–1.5 × S seconds (uniform)
between messages, as people reading the answer do; the default 0 is the worst case: every user
sends at the same instant and again as soon as the answer arrives.

Checks: every answer names the query that was sent (no answer goes to the wrong session), no
errors. Memory: the server's RSS (with its children) after a warm-up that opens every slide of
the collection once, then sampled every second during the N-user phase (after 25/50/75/100 % of
its messages). Prints one line per phase; ``--out FILE`` also writes them as Markdown.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: chat messages users send, and the query text the answer must quote
QUERIES = [
    ("show me tertiary lymphoid structures", "tertiary lymphoid structures"),
    ("where is PD-L1 high?", "PD-L1 high"),
    ("show me immune infiltrate", "immune infiltrate"),
    ("where is invasive cancer?", "invasive cancer"),
    ("show me fibrous stroma", "fibrous stroma"),
    ("find adipose tissue", "adipose tissue"),
    ("where are the B cells?", "B cells"),
    ("show me ductal carcinoma in situ", "ductal carcinoma in situ"),
    ("compare tumour and stroma", "tumour"),
    ("find slides with immune infiltrate", "immune infiltrate"),
    ("where is HER2 high?", "HER2 high"),
    ("show me necrosis", "necrosis"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (MB)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def start_server(collection: str, index_dir: str | None, data: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "SPOTWHISPER_UI_DATA_DIR": str(data), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-c", "import sys; from spotwhisper.cli import main; sys.exit(main(sys.argv[1:]))",
           "serve", "--collection", collection, "--port", str(port), *extra]
    if index_dir:
        cmd += ["--index-dir", index_dir]
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    import httpx

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); see {data / 'server.log'}")
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not come up within 300 s")


def _answer_text(history) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return str(content)


class User:
    """One browser session: its own gradio_client (cookie, session hash) and chat history."""

    def __init__(self, url: str, seed: int, think: float = 0.0):
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)
        self.rng = random.Random(seed)
        self.think = think
        self.history: list = []
        self.times: list[float] = []
        self.errors: list[str] = []

    def ask(self) -> None:
        if self.think:
            time.sleep(self.rng.uniform(0.5, 1.5) * self.think)
        message, expect = self.rng.choice(QUERIES)
        t = time.perf_counter()
        try:
            out = self.client.predict(message, self.history[-6:], api_name="/chat")
        except Exception as err:  # noqa: BLE001 - counted and reported
            self.errors.append(f"{message!r}: {type(err).__name__}: {err}"[:300])
            return
        self.times.append(time.perf_counter() - t)
        text = _answer_text(out[0])
        if f"'{expect}'" not in text or "Something went wrong" in text:
            self.errors.append(f"{message!r} answered with: {text[:200]!r}")
        image = out[3]
        if not image:
            self.errors.append(f"{message!r}: no overlay in the answer")
        self.history = out[0]


def run_users(url: str, n_users: int, per_user: int, seed: int, think: float = 0.0,
              pid: int | None = None) -> tuple[list[float], list[str], float, list[tuple[int, float]]]:
    """``n_users`` sessions, each sending ``per_user`` messages, started together →
    (latencies, errors, wall seconds, [(messages answered, server RSS MB)] sampled every second)."""
    users = [User(url, seed + i, think) for i in range(n_users)]
    barrier = threading.Barrier(n_users)
    done = threading.Event()
    samples: list[tuple[int, float]] = []

    def work(u: User) -> None:
        barrier.wait()
        if think:  # users arrive over one think time, not all in the same instant
            time.sleep(u.rng.uniform(0, think))
        for _ in range(per_user):
            u.ask()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append((sum(len(u.times) + len(u.errors) for u in users), rss_mb(pid)))

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    sampler = threading.Thread(target=sample, daemon=True) if pid else None
    t = time.perf_counter()
    if sampler:
        sampler.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    done.set()
    for u in users:
        u.client.close()
    return [x for u in users for x in u.times], [e for u in users for e in u.errors], wall, samples


def warm_up(url: str, slides: list[str], seed: int) -> None:
    """One session searches every slide and shows each (models warm, every source image opened)."""
    u = User(url, seed)
    u.client.predict("find slides with immune infiltrate", [], api_name="/chat")
    for name in slides:
        u.client.predict(name, api_name="/slide")
    u.client.close()


def pct(values: list[float], q: float) -> float:
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]) if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default="demo")
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--url", default=None, help="an app already running (default: start one)")
    ap.add_argument("--server-pid", type=int, default=None, help="its process id, for the memory figures")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--queries", type=int, default=200, help="chat messages in the N-user phase (all users together)")
    ap.add_argument("--single", type=int, default=20, help="chat messages of the one-user phase")
    ap.add_argument("--think", type=float, default=0.0, help="mean pause between a user's messages (s; default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the summary as Markdown here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ui-load-"))
    proc = None
    url, pid = args.url, args.server_pid
    if url is None:
        proc, url = start_server(args.collection, args.index_dir, tmp, [])
        pid = proc.pid
    lines = [f"server {url} (pid {pid}); {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"]
    print(lines[0], flush=True)
    try:
        slides = []
        if args.url is None:
            from spotwhisper.index import CollectionIndex

            slides = CollectionIndex.open(args.collection, index_dir=args.index_dir).slides()
        warm_up(url, slides, args.seed + 1000)
        rss0 = rss_mb(pid) if pid else float("nan")
        one, err1, _, _ = run_users(url, 1, args.single, args.seed)
        line = (f"1 user, {len(one)} messages: p50 {pct(one, 50):.2f} s, p95 {pct(one, 95):.2f} s, "
                f"mean {statistics.mean(one):.2f} s, errors {len(err1)}")
        print(line, flush=True)
        lines.append(line)
        per_user = max(1, args.queries // args.users)
        many, errn, walln, samples = run_users(url, args.users, per_user, args.seed + 1, args.think, pid)
        rss1 = rss_mb(pid) if pid else float("nan")
        pause = f"think time {args.think:g} s" if args.think else "no think time"
        line = (f"{args.users} users, {len(many)} messages ({per_user} each, {pause}): p50 {pct(many, 50):.2f} s, "
                f"p95 {pct(many, 95):.2f} s, max {max(many):.2f} s, errors {len(errn)}, "
                f"throughput {len(many) / walln:.2f} messages/s")
        print(line, flush=True)
        lines.append(line)
        ratio = pct(many, 95) / pct(one, 95)
        total = len(many) + len(errn)
        marks = []
        for frac in (0.25, 0.5, 0.75):
            hit = next((mb for n, mb in samples if n >= frac * total), None)
            if hit is not None:
                marks.append(f"{int(frac * 100)}% {hit:,.0f}")
        line = (f"p95 ratio {args.users} users / 1 user: {ratio:.2f} (target <= 3); server RSS after warm-up "
                f"{rss0:,.0f} MB; during the {args.users}-user phase {', '.join(marks)} MB; after all "
                f"{len(one) + len(many)} messages {rss1:,.0f} MB ({rss1 - rss0:+,.0f} MB)")
        print(line, flush=True)
        lines.append(line)
        if args.url is None:
            used = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file() and f.name != "server.log")
            line = f"server data folder (sessions, Gradio temp files) after the run: {used / 2**20:.1f} MB"
            print(line, flush=True)
            lines.append(line)
        for e in (err1 + errn)[:10]:
            print("  error:", e)
            lines.append(f"  error: {e}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(["python benchmarks/ui_load.py", *sys.argv[1:]])
        args.out.write_text("# UI load (benchmarks/ui_load.py)\n\n`" + re.sub(r"\s+", " ", cmd) + "`\n\n"
                            + "\n".join(f"- {x}" for x in lines) + "\n")


if __name__ == "__main__":
    main()
