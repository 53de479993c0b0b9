"""Who may do what on the server: a client cookie per browser, and one guard in front of Gradio's routes.

Gradio serves any file in its temporary folder to whoever knows the URL, and acts on any session
whose hash a request names. :class:`FileAccessMiddleware` (plain ASGI, no response buffering except
the upload route's short JSON answer) stands in front of every route:

* every browser gets a random ``spotwhisper_client`` cookie (HttpOnly, SameSite=Lax) on its first
  response; the sessions it opens belong to that cookie (:func:`request_ids`);
* **files** — ``…/file=<path>`` (and ``/file/<path>``): the path is taken exactly as the router
  hands it to Gradio (the request target decoded once, never again, nothing cut off), resolved as
  the server opens it, and if it lies in the data folder it is answered only when it is a file
  served to a session of the requesting cookie (:meth:`SessionStore.may_fetch`); anything else
  there — another browser's files, uploads, session folders — is ``403``;
* **sessions** — a request naming a session hash (the heartbeat, whose disconnect fires unload;
  the event stream; a JSON body's ``session_hash``: joining the queue, cancelling) is answered
  only for the browser that owns that session (:meth:`SessionStore.bind`), else ``403``;
* **uploads** — ``POST /gradio_api/upload`` needs the cookie and a ``Content-Length`` within the
  browser's and the server's quota (:meth:`SessionStore.admit_upload`, else ``413``); the paths
  Gradio answers with are recorded as that browser's (:meth:`SessionStore.record_upload`), the only
  files an upload event may use.

Installed through ``launch(app_kwargs={"middleware": [...]})``.
"""

from __future__ import annotations

import json
import re
import secrets
from http.cookies import SimpleCookie

from .sessions import SessionStore

CLIENT_COOKIE = "spotwhisper_client"
#: Gradio's file routes: /gradio_api/file=<path>, and the older /file=<path>, /gradio_api/file/<path>
_FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/file[=/](?P<path>.*)$", re.DOTALL)
#: GET routes whose path names a session: the heartbeat (its disconnect fires unload), media streams
_SESSION_PATH = re.compile(r"^(?:/gradio_api)?/(?:heartbeat|stream)/(?P<sid>[^/]+)")
#: GET routes naming a session in the query string (the event stream)
_SESSION_QUERY = re.compile(r"^(?:/gradio_api)?/queue/data/?$")
_UPLOAD = re.compile(r"^(?:/gradio_api)?/upload/?$")


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


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


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


def route_path(scope) -> str:
    """The path the router matches (``scope["path"]`` without the app's ``root_path``), decoded once
    by the server — the same string Gradio's route parameters are cut from."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) and path != root else path


def _query_session(scope) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
    return values[0] if values else None


class FileAccessMiddleware:
    """ASGI middleware: issue the client cookie; serve data-folder files, sessions and uploads only to their owner."""

    def __init__(self, app, store: SessionStore):
        self.app = app
        self.store = store

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        client = _cookie(headers)
        if client is None:
            send = _issuing_cookie(send)
        path, method = route_path(scope), scope.get("method")
        if method in ("GET", "HEAD"):
            if (m := _FILE_ROUTE.match(path)) and self.store.guards(m["path"]) \
                    and not self.store.may_fetch(m["path"], client):
                return await _refuse(send, 403, "File not allowed: it belongs to another session, or it is not served.")
            sid = (m["sid"] if (m := _SESSION_PATH.match(path)) else
                   _query_session(scope) if _SESSION_QUERY.match(path) else None)
            if sid is not None and not self.store.bind(sid, client):
                return await _refuse(send, 403, "This session belongs to another browser; reload the page.")
        elif method == "POST" and _UPLOAD.match(path):
            length = _header(headers, b"content-length")
            if length is None or not length.isdigit():
                return await _refuse(send, 411, "An upload needs a Content-Length.")
            refused = self.store.admit_upload(client, int(length))
            if refused is not None:
                return await _refuse(send, *refused)
            return await self.app(scope, receive, self._recording(send, client, int(length)))
        elif method == "POST" and (_header(headers, b"content-type") or "").startswith("application/json"):
            body = await _read_body(receive, self.store.cfg.max_request_kb * 1024)
            if body is None:
                return await _refuse(send, 413, f"Request larger than {self.store.cfg.max_request_kb} KB "
                                                "(configs/ui.yaml max_request_kb).")
            sid = _body_session(body)
            if sid is not None and not self.store.bind(sid, client):
                return await _refuse(send, 403, "This session belongs to another browser; reload the page.")
            receive = _replaying(body, receive)
        return await self.app(scope, receive, send)

    def _recording(self, send, client: str, nbytes: int):
        """``send`` that also records the paths of a successful upload answer as ``client``'s."""
        state = {"status": 0, "body": b""}

        async def wrapped(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and state["status"] == 200:
                state["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    try:
                        paths = json.loads(state["body"])
                    except ValueError:
                        paths = []
                    if isinstance(paths, list):
                        self.store.record_upload(client, [str(p) for p in paths], nbytes)
            await send(message)

        return wrapped


def _issuing_cookie(send):
    token = secrets.token_urlsafe(24)

    async def send_with_cookie(message):
        if message["type"] == "http.response.start":
            cookie = f"{CLIENT_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
        await send(message)

    return send_with_cookie


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then whatever comes next (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _body_session(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    sid = data.get("session_hash") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
