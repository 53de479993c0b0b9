"""The HTTP client of an OpenAI-compatible ``/chat/completions`` endpoint, careful with its key.

* Redirects are never followed: a ``3xx`` answer is an error (the request, and so the
  ``Authorization`` header, goes only to the configured address; set ``base_url`` to the final one).
* Credentials in the base URL (``https://user:key@host/v1``) are never used or shown: the request
  goes to the URL without them, and every address in a message is :func:`redact_url`-ed.
* What users see of a failure is a short, fixed sentence (:attr:`LLMError.public`); the details —
  status, endpoint body, cause — are logged on the server, with the key and bearer tokens masked.

Uses the standard library only (``urllib``).
"""

from __future__ import annotations

import json
import logging
import re
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
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _secrets(self) -> list[str | None]:
        parts = urllib.parse.urlsplit(self.cfg.base_url or "")
        return [self.cfg.api_key, parts.password, parts.username]

    def _fail(self, public: str, detail: str) -> LLMError:
        log.warning("language model endpoint %s: %s", self.url, redact(detail, self._secrets()))
        return LLMError(public)

    def complete(self, messages: list[dict], tools: list[dict]) -> dict:
        """One assistant message (``content`` and/or ``tool_calls``) for ``messages``."""
        body = {"model": self.cfg.model, "messages": messages, "tools": tools, "tool_choice": "auto",
                "temperature": self.cfg.temperature}
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
            return data["choices"][0]["message"]
        except urllib.error.HTTPError as err:
            detail = err.read(LOG_BODY_CHARS).decode("utf-8", "replace") if err.fp else ""
            if 300 <= err.code < 400:
                raise self._fail(f"the endpoint redirected (HTTP {err.code}); redirects are not followed, so set "
                                 "llm.base_url to the final address",
                                 f"HTTP {err.code} redirect to {redact_url(err.headers.get('Location'))}") from None
            raise self._fail(f"the endpoint answered HTTP {err.code}", f"HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise self._fail("the endpoint is unreachable", f"unreachable: {err}") from None
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise self._fail("the endpoint's answer is not an OpenAI chat completion",
                             f"unexpected answer: {type(err).__name__}: {err}") from None
