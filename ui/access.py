"""Who may fetch which file: a client cookie per browser, and a guard on Gradio's file route.

Gradio serves any file in its temporary folder to whoever knows the URL. The server's data folder
(Gradio's temporary folder included, :mod:`spotwhisper.ui.sessions`) is guarded here instead:

* every browser gets a random ``spotwhisper_client`` cookie (HttpOnly, SameSite=Lax) on its first
  response; the sessions it opens belong to that cookie (:func:`request_ids`);
* a request for ``…/file=<path>`` with ``<path>`` inside the data folder is answered only when
  :meth:`SessionStore.may_fetch` says the path was served to a session of the requesting cookie;
  anything else there — another browser's files, uploads in flight, leftovers — is ``403``.

:class:`FileAccessMiddleware` is plain ASGI (no response buffering), installed through
``launch(app_kwargs={"middleware": [...]})``.
"""

from __future__ import annotations

import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import unquote

from .sessions import SessionStore

CLIENT_COOKIE = "spotwhisper_client"
#: Gradio's file routes: /gradio_api/file=<path> and the older /file=<path>, /gradio_api/file/<path>
_FILE_ROUTE = re.compile(r"/file[=/](?P<path>.+)$")


def request_ids(request) -> tuple[str, str]:
    """``(session id, owner)`` of a Gradio request: the session hash and the browser's client
    cookie (``anon:<session>`` when the client sent none). ``("local", "local")`` without a request."""
    session = getattr(request, "session_hash", None) or "local"
    if request is None:
        return session, "local"
    try:
        cookies = request.cookies or {}
    except AttributeError:
        cookies = {}
    owner = cookies.get(CLIENT_COOKIE)
    return session, owner if owner else f"anon:{session}"


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        jar = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
            jar = SimpleCookie()
        if CLIENT_COOKIE in jar:
            return jar[CLIENT_COOKIE].value
    return None


class FileAccessMiddleware:
    """ASGI middleware: issue the client cookie; serve data-folder files only to their owner."""

    def __init__(self, app, store: SessionStore):
        self.app = app
        self.store = store

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = _cookie(scope.get("headers", []))
        match = _FILE_ROUTE.search(unquote(scope.get("path", "")))
        if match and scope.get("method") in ("GET", "HEAD"):
            path = match.group("path").split("?", 1)[0]
            if self.store.guards(path) and not self.store.may_fetch(path, client):
                return await _forbidden(send)
        if client is not None:
            return await self.app(scope, receive, send)
        token = secrets.token_urlsafe(24)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                cookie = f"{CLIENT_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


async def _forbidden(send) -> None:
    body = b"File not allowed: it belongs to another session, or it is not served."
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
