"""The HTTP client of an OpenAI-compatible ``/chat/completions`` endpoint, careful with its key.

* Redirects are never followed: a ``3xx`` answer is an error (the request, and so the
  ``Authorization`` header, goes only to the configured address; set ``base_url`` to the final one).
* Credentials in the base URL (``https://user:key@host/v1``) are never used or shown: the request
  goes to the URL without them, and every address in a message is :func:`redact_url`-ed.
* What users see of a failure is a short, fixed sentence (:attr:`LLMError.public`); the details —
  status, endpoint body, cause — are logged on the server, with the key and bearer tokens masked.
* Bounded (``configs/ui.yaml`` ``llm``): the answer is read in chunks and refused beyond
  ``max_reply_kb`` (a declared larger ``Content-Length`` is refused unread); ``timeout_s`` bounds
  each silence (connect, any read) and a watchdog hangs up when the whole request passes its
  deadline (``total_timeout_s``, or the chat answer's deadline), so a reply dripped a byte at a
  time cannot hold a worker; a ``message`` that is not an object (``null``), or ``tool_calls`` that
  are not a list of objects, is "not an OpenAI chat completion".

Uses the standard library only (``urllib``; proxies from the environment are used as urllib does).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .config import LLMConfig

log = logging.getLogger(__name__)
#: characters of an endpoint's error body kept in the server log
LOG_BODY_CHARS = 500


class LLMError(RuntimeError):
    """The language-model endpoint failed or answered in an unexpected shape. ``str(err)`` is the
    user-safe :attr:`public` sentence; details went to the server log."""

    def __init__(self, public: str):
        super().__init__(public)
        self.public = public


def redact_url(url: str | None) -> str:
    """``url`` without user name, password, query or fragment (``https://host:port/path``)."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: list[str | None]) -> str:
    """``text`` with each of ``secrets``, ``Bearer <token>`` values and URL credentials masked."""
    out = str(text)
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    out = re.sub(r"(?i)(bearer\s+)[^\s\"',]+", r"\1***", out)
    return re.sub(r"(?<=://)[^/\s@]+@", "***@", out)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib then raises ``HTTPError`` with the 3xx status."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Watched:
    """The HTTP(S) connection of one request, and a watchdog that hangs it up at a deadline."""

    def __init__(self, seconds: float):
        self.sock: socket.socket | None = None  #: kept from connect (http.client drops its own reference early)
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._hang_up)
        self._timer.daemon = True

    def _hang_up(self) -> None:
        self.fired = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
            except OSError:
                pass

    def handlers(self) -> list[urllib.request.BaseHandler]:
        """urllib handlers that build their connections through this watch."""
        watch = self

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(watch.factory(http.client.HTTPConnection), req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(watch.factory(http.client.HTTPSConnection), req, context=self._context)

        return [Http(), Https()]

    def factory(self, cls):
        """A connection class like ``cls`` whose socket this watch can shut."""
        watch = self

        class Watched(cls):
            def connect(self):
                super().connect()
                watch.sock = self.sock

        return Watched

    def __enter__(self) -> _Watched:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _read_capped(resp, limit: int) -> bytes:
    """The body of ``resp``, refused (``OverflowError``) once it passes ``limit`` bytes — never read whole."""
    declared = resp.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise OverflowError(f"declared {int(declared):,} bytes")
    chunks, size = [], 0
    while True:
        chunk = resp.read(min(1 << 16, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise OverflowError(f"more than {limit:,} bytes")


def _message(data) -> dict:
    """The assistant message of a chat completion, checked for shape (``TypeError`` when it is not one)."""
    message = data["choices"][0]["message"]
    if not isinstance(message, dict):
        raise TypeError(f"message is {type(message).__name__}, not an object")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function") or {}, dict)
                                              for c in calls):
        raise TypeError("tool_calls is not a list of objects")
    return message


class ChatClient:
    """Minimal OpenAI-compatible ``/chat/completions`` client (no redirects, no leaked key)."""

    def __init__(self, cfg: LLMConfig):
        if not cfg.enabled:
            raise ValueError("no language model configured (set llm.base_url and llm.model, or SPOTWHISPER_LLM_*)")
        self.cfg = cfg
        parts = urllib.parse.urlsplit(cfg.base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"llm.base_url is not an http(s) URL ({redact_url(cfg.base_url) or 'empty'})")
        if parts.username or parts.password:
            log.warning("llm.base_url holds credentials; they are not used (set SPOTWHISPER_LLM_API_KEY)")
        self.url = redact_url(cfg.base_url.strip()).rstrip("/") + "/chat/completions"

    def _secrets(self) -> list[str | None]:
        parts = urllib.parse.urlsplit(self.cfg.base_url or "")
        return [self.cfg.api_key, parts.password, parts.username]

    def _fail(self, public: str, detail: str) -> LLMError:
        log.warning("language model endpoint %s: %s", self.url, redact(detail, self._secrets()))
        return LLMError(public)

    def complete(self, messages: list[dict], tools: list[dict], deadline: float | None = None) -> dict:
        """One assistant message (``content`` and/or ``tool_calls``) for ``messages``, within
        ``total_timeout_s`` and, when given, before ``deadline`` (``time.monotonic()`` seconds)."""
        body = {"model": self.cfg.model, "messages": messages, "tools": tools, "tool_choice": "auto",
                "temperature": self.cfg.temperature}
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        late = f"it took longer than {self.cfg.total_timeout_s:g} s (llm.total_timeout_s)"
        left = min(self.cfg.total_timeout_s, (deadline if deadline is not None else math.inf) - time.monotonic())
        if left <= 0:
            raise LLMError(late)
        watch = _Watched(left)
        try:
            with watch, urllib.request.build_opener(_NoRedirect, *watch.handlers()).open(
                    req, timeout=min(self.cfg.timeout_s, left)) as resp:
                raw = _read_capped(resp, self.cfg.max_reply_kb * 1024)
            if watch.fired:
                raise TimeoutError(late)
            return _message(json.loads(raw.decode("utf-8")))
        except OverflowError as err:
            raise self._fail(f"the endpoint's answer is larger than {self.cfg.max_reply_kb:,} KB (llm.max_reply_kb); "
                             "it was not read", f"answer too large: {err}") from None
        except urllib.error.HTTPError as err:
            detail = err.read(LOG_BODY_CHARS).decode("utf-8", "replace") if err.fp else ""
            if 300 <= err.code < 400:
                raise self._fail(f"the endpoint redirected (HTTP {err.code}); redirects are not followed, so set "
                                 "llm.base_url to the final address",
                                 f"HTTP {err.code} redirect to {redact_url(err.headers.get('Location'))}") from None
            raise self._fail(f"the endpoint answered HTTP {err.code}", f"HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as err:
            if watch.fired:
                raise self._fail(late, f"past the deadline: {err}") from None
            raise self._fail("the endpoint is unreachable", f"unreachable: {err}") from None
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise self._fail("the endpoint's answer is not an OpenAI chat completion",
                             f"unexpected answer: {type(err).__name__}: {err}") from None
