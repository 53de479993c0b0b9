"""A hostile language-model endpoint behind the real server (issue 25, rows 5 and 7).

The app on 127.0.0.1 is configured with a fake OpenAI-compatible endpoint (also on 127.0.0.1)
whose behaviour each test sets: a 300 MB answer, an answer dripped a byte at a time, 30 tool calls
per round for ever, ``"message": null``. A raw client chats; every answer must arrive within the
configured limits (``configs/ui.yaml`` ``llm.max_reply_kb``, ``llm.total_timeout_s``,
``llm.max_tool_calls``) as the built-in router's answer plus one fixed sentence, with the
server's memory flat and no Python error text.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spotwhisper.ui.chat import message_text
from tests.security_support import RawClient, outputs, running_app

LIMITS = {"timeout_s": 2.0, "total_timeout_s": 4.0, "max_reply_kb": 256, "max_tool_calls": 3}
MB = 2**20


class HostileEndpoint:
    """``POST /v1/chat/completions`` answered as ``self.mode`` says; counts what it managed to send."""

    def __init__(self):
        self.mode, self.sent, self.requests = "null", 0, 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests += 1
                try:
                    getattr(fake, f"_{fake.mode}")(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _head(self, h, length: int | None) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if length is not None:
            h.send_header("Content-Length", str(length))
        h.end_headers()

    def _json(self, h, message) -> None:
        body = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
        self._head(h, len(body))
        h.wfile.write(body)

    def _huge(self, h, declared: bool = True) -> None:  # 300 MB of JSON string
        size = 300 * MB
        self._head(h, size if declared else None)
        h.wfile.write(b'{"choices": [{"message": {"content": "')
        chunk = b"x" * MB
        for _ in range(300):
            h.wfile.write(chunk)
            self.sent += len(chunk)

    def _huge_undeclared(self, h) -> None:
        h.close_connection = True
        self._huge(h, declared=False)

    def _drip(self, h) -> None:  # a valid answer, one byte every 0.5 s (each read well inside timeout_s)
        body = json.dumps({"choices": [{"message": {"content": "slow " * 20}}]}).encode()
        self._head(h, len(body))
        for b in body:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            time.sleep(0.5)

    def _tools(self, h) -> None:  # 30 tool calls in every round, never an answer
        calls = [{"id": f"c{i}", "type": "function",
                  "function": {"name": "search", "arguments": json.dumps({"query": f"tumour {i}"})}} for i in range(30)]
        self._json(h, {"role": "assistant", "content": None, "tool_calls": calls})

    def _null(self, h) -> None:
        self._json(h, None)

    def _bad_calls(self, h) -> None:
        self._json(h, {"role": "assistant", "content": None, "tool_calls": "call them all"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(mini_collection, tmp_path_factory):
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    engine = open_engine(name, index_dir=index_dir)
    searches = []
    search = engine.search

    def counted(*args, **kwargs):
        searches.append(args[0] if args else kwargs.get("query"))
        return search(*args, **kwargs)

    engine.search = counted
    fake = HostileEndpoint()
    try:
        with running_app(engine, tmp_path_factory.mktemp("llm-data"),
                         llm={"base_url": fake.url, "model": "fake", **LIMITS}) as srv:
            fake.mode = "null"  # warm up: the router answers once (models, slide, source image opened)
            assert RawClient(srv["port"]).call("chat", ["show me tumour", [], None]).get("success")
            yield {**srv, "fake": fake, "searches": searches}
    finally:
        fake.close()


def _chat(served, mode: str, message: str = "show me tumour") -> tuple[str, float]:
    served["fake"].mode, served["fake"].sent = mode, 0
    a = RawClient(served["port"])
    t = time.monotonic()
    done = a.call("chat", [message, [], None], timeout=120)
    took = time.monotonic() - t
    assert done.get("success"), done
    text = message_text(outputs(done)[0][-1]["content"])
    assert "NoneType" not in text and "Traceback" not in text and "Something went wrong" not in text, text[:300]
    return text, took


@pytest.mark.parametrize("mode", ["huge", "huge_undeclared"])
def test_a_huge_reply_is_cut_at_max_reply_kb(served, mode):
    import psutil

    proc = psutil.Process()
    rss0, peak, stop = proc.memory_info().rss, [0], threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        text, took = _chat(served, mode)
    finally:
        stop.set()
        watcher.join()
    assert "larger than 256 KB" in text and "Searched 'tumour'" in text, text[:300]  # the router answered
    assert took < 30
    assert (peak[0] - rss0) / MB < 150, f"RSS grew {(peak[0] - rss0) / MB:.0f} MB"
    assert served["fake"].sent < 64 * MB  # the client hung up early (the rest is socket buffers)


def test_a_dripping_reply_is_cut_at_total_timeout_s(served):
    text, took = _chat(served, "drip")
    assert "took longer than 4 s" in text and "Searched 'tumour'" in text, text[:300]
    assert took < LIMITS["total_timeout_s"] + 10


def test_tool_calls_are_capped_at_max_tool_calls(served):
    before = len(served["searches"])
    text, took = _chat(served, "tools")
    ran = len(served["searches"]) - before
    assert ran <= LIMITS["max_tool_calls"], f"{ran} searches for one message"
    assert f"{LIMITS['max_tool_calls']} tool calls" in text, text[:300]
    assert took < 60


@pytest.mark.parametrize("mode", ["null", "bad_calls"])
def test_a_malformed_message_falls_back_to_the_router(served, mode):
    text, _ = _chat(served, mode)
    assert "not an OpenAI chat completion" in text and "Searched 'tumour'" in text, text[:300]
