"""The chat with an OpenAI-compatible endpoint: a tiny fake server on 127.0.0.1 (never the
internet) scripts tool calls; the model gets the hit statistics as context, its tool calls run
the real search/explain on the mini slide, and a broken endpoint falls back to the router.
The key never leaves: a redirecting endpoint (to a second local server) is not followed, and
neither endpoint bodies nor credentials in the base URL reach the user (the log has them masked)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spotwhisper.ui import handlers as h
from spotwhisper.ui.chat import ChatClient, LLMError, respond
from spotwhisper.ui.config import ENV_BASE_URL, ENV_MODEL, load_ui_config


class FakeOpenAI:
    """Serves ``POST /v1/chat/completions`` from a list of scripted assistant messages; with
    ``redirect`` it answers every request with that status and ``Location: <redirect_to>``."""

    def __init__(self, script: list[dict], status: int = 200, redirect_to: str | None = None,
                 error_body: str = "model overloaded"):
        self.script, self.status, self.requests = list(script), status, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append({"method": method, "path": self.path, "auth": self.headers.get("Authorization"),
                                      "body": json.loads(raw) if raw else None})

            def do_GET(self):
                self._record("GET")
                self.send_response(404)
                self.end_headers()

            def do_POST(self):
                self._record("POST")
                if redirect_to is not None:
                    self.send_response(fake.status)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fake.status != 200:
                    payload = json.dumps({"error": {"message": error_body}}).encode()
                else:
                    msg = fake.script.pop(0)
                    payload = json.dumps({"id": "x", "object": "chat.completion",
                                          "choices": [{"index": 0, "message": {"role": "assistant", **msg}}]}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _call(i: int, name: str, args: dict) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


@pytest.fixture(scope="module")
def engine(mini_slide):
    from spotwhisper.search.engine import SearchEngine

    return SearchEngine(slides={"C2": mini_slide})


def test_model_calls_search_and_explain(engine, monkeypatch):
    fake = FakeOpenAI([
        {"content": None, "tool_calls": [_call(1, "search", {"query": "immune infiltrate"})]},
        {"content": "", "tool_calls": [_call(2, "explain", {"region": 1})]},
        {"content": "Two TLS-like regions; region 1 is led by immune genes."},
    ])
    try:
        monkeypatch.setenv(ENV_BASE_URL, fake.url)
        monkeypatch.setenv(ENV_MODEL, "fake-model")
        monkeypatch.setenv("SPOTWHISPER_LLM_API_KEY", "sk-test")
        cfg = load_ui_config()
        assert cfg.llm.enabled and cfg.llm.model == "fake-model"
        history = [{"role": "user", "content": [{"type": "text", "text": "hello"}]},
                   {"role": "assistant", "content": "hi"}]
        text, view = respond(engine, h.new_view(engine, cfg), "where are the TLS?", history, cfg)
    finally:
        fake.close()
    assert text == "Two TLS-like regions; region 1 is led by immune genes."
    assert len(fake.requests) == 3 and fake.requests[0]["path"] == "/v1/chat/completions"
    first = fake.requests[0]["body"]
    assert fake.requests[0]["auth"] == "Bearer sk-test" and first["model"] == "fake-model"
    assert {t["function"]["name"] for t in first["tools"]} == {"search", "explain"}
    assert "Slides: C2" in first["messages"][0]["content"]
    assert [m["content"] for m in first["messages"][1:]] == ["hello", "hi", "where are the TLS?"]
    # the tool really ran: the view holds the search, and the model saw its numbers
    hits = view.hits()
    assert view.shown.query.text == "immune infiltrate" and hits.regions
    tool_msg = fake.requests[1]["body"]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_1"
    payload = json.loads(tool_msg["content"])
    assert [r["spots"] for r in payload["regions"]] == [r.n_spots for r in hits.regions]
    assert f"region 1: {hits.regions[0].n_spots} spots" in payload["answer"]
    explain = json.loads(fake.requests[2]["body"]["messages"][-1]["content"])
    assert explain["answer"].startswith("Region 1 on C2") and explain["evidence"]
    # the third request carries the whole exchange: assistant tool calls + tool results
    roles = [m["role"] for m in fake.requests[2]["body"]["messages"]]
    assert roles[-4:] == ["assistant", "tool", "assistant", "tool"]


def test_tool_errors_go_back_to_the_model(engine, monkeypatch):
    fake = FakeOpenAI([
        {"content": None, "tool_calls": [_call(1, "search", {"query": ""}), _call(2, "teleport", {})]},
        {"content": "Please type what to look for."},
    ])
    try:
        cfg = load_ui_config()
        cfg.llm.base_url, cfg.llm.model = fake.url, "fake"
        text, view = respond(engine, h.new_view(engine, cfg), "search nothing", [], cfg)
    finally:
        fake.close()
    results = [json.loads(m["content"]) for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert "empty query" in results[0]["error"] and "unknown tool 'teleport'" in results[1]["error"]
    assert text == "Please type what to look for." and view.shown is None


def test_broken_endpoint_falls_back_to_router(engine, caplog):
    fake = FakeOpenAI([], status=503)
    try:
        cfg = load_ui_config()
        cfg.llm.base_url, cfg.llm.model = fake.url, "fake"
        text, view = respond(engine, h.new_view(engine, cfg), "show me immune infiltrate", [], cfg)
        with pytest.raises(LLMError, match="HTTP 503$"):
            ChatClient(cfg.llm).complete([{"role": "user", "content": "x"}], [])
    finally:
        fake.close()
    assert text.startswith("Searched 'immune infiltrate'") and "HTTP 503" in text
    assert "model overloaded" not in text and "model overloaded" in caplog.text  # the body: server log only
    assert "built-in router" in text and view.hits().regions
    cfg.llm.base_url = "http://127.0.0.1:9/v1"  # nothing listens there
    with pytest.raises(LLMError, match="unreachable"):
        ChatClient(cfg.llm).complete([{"role": "user", "content": "x"}], [])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_host_never_gets_the_key(engine, status, caplog):
    """The configured endpoint redirects to a second local server (another host:port): the client
    does not follow, so the second server receives nothing — least of all the Authorization header."""
    elsewhere = FakeOpenAI([{"content": "stolen"}])
    endpoint = FakeOpenAI([], status=status, redirect_to=elsewhere.url + "/chat/completions")
    try:
        cfg = load_ui_config()
        cfg.llm.base_url, cfg.llm.model, cfg.llm.api_key = endpoint.url, "fake", "sk-secret-123"
        with pytest.raises(LLMError, match=f"redirected \\(HTTP {status}\\)"):
            ChatClient(cfg.llm).complete([{"role": "user", "content": "x"}], [])
        text, _ = respond(engine, h.new_view(engine, cfg), "show me tumour", [], cfg)
    finally:
        endpoint.close()
        elsewhere.close()
    assert elsewhere.requests == []
    assert [r["auth"] for r in endpoint.requests] == ["Bearer sk-secret-123"] * 2  # only the configured endpoint
    assert "redirects are not followed" in text and "built-in router" in text
    assert "sk-secret" not in text and "sk-secret" not in caplog.text


def test_credentials_and_bodies_never_reach_the_user(engine, caplog):
    """A base URL with user:key@ and an error body echoing the key: the chat answer shows neither,
    and the server log masks them."""
    fake = FakeOpenAI([], status=401, error_body="invalid key sk-live-999 for user bob; Bearer sk-live-999")
    host = fake.url.split("://")[1]
    try:
        cfg = load_ui_config()
        cfg.llm.base_url, cfg.llm.model, cfg.llm.api_key = f"http://bob:hunter2@{host}", "fake", "sk-live-999"
        text, _ = respond(engine, h.new_view(engine, cfg), "show me tumour", [], cfg)
    finally:
        fake.close()
    assert fake.requests and fake.requests[0]["path"] == "/v1/chat/completions"  # credentials stripped from the URL
    assert fake.requests[0]["auth"] == "Bearer sk-live-999"
    for secret in ("hunter2", "sk-live-999", "bob:", "invalid key"):
        assert secret not in text
    assert "HTTP 401" in text
    assert "hunter2" not in caplog.text and "sk-live-999" not in caplog.text and "invalid key ***" in caplog.text
    from spotwhisper.ui.llm_client import redact_url

    assert redact_url("https://u:p@example.org:8443/v1?key=abc#x") == "https://example.org:8443/v1"
