"""Shared by tests/test_security_*.py: the real app on 127.0.0.1, and a hostile client speaking raw HTTP.

:class:`RawClient` sends request lines exactly as written (``http.client``, no normalisation, so
``%3F`` and ``%253F`` reach the server as sent), carries a cookie of its choice (its own, another's
or none) and speaks the Gradio queue protocol (``POST /gradio_api/queue/join`` then the
``/gradio_api/queue/data`` event stream) with a session hash of its choice.
:func:`tiff_bomb` writes a tiled TIFF whose header claims a huge image while every tile points at
the same few bytes (what a hostile upload looks like: kilobytes on disk, gigapixels to decode).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import struct
import time
import zlib
from http.cookies import SimpleCookie
from pathlib import Path

from spotwhisper.ui.access import CLIENT_COOKIE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(engine, data: Path, **cfg):
    """The app (``spotwhisper.ui.app.launch``) on a free 127.0.0.1 port with its data folder in
    ``data`` and ``cfg`` overriding ``configs/ui.yaml`` → ``{"url", "port", "store", "app"}``."""
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import load_ui_config

    port = free_port()
    app = launch(engine, port=port, cfg=load_ui_config(data_dir=str(data), **cfg), block=False, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "port": port, "store": app.spotwhisper_sessions, "app": app}
    finally:
        app.close()


class RawClient:
    """One hostile (or honest) browser: a client cookie, a session hash, raw requests."""

    def __init__(self, port: int, cookie: str | None = "fetch", session: str | None = None):
        self.port = port
        self.cookie = None
        status, headers, body = self.request("GET", "/config", cookie=None)
        assert status == 200, body[:200]
        self.config = json.loads(body)
        if cookie == "fetch":  # the cookie the server hands out, as a browser keeps it
            jar = SimpleCookie()
            for key, value in headers:
                if key.lower() == "set-cookie":
                    jar.load(value)
            self.cookie = jar[CLIENT_COOKIE].value
        else:
            self.cookie = cookie
        self.session = session or secrets.token_hex(6)
        self.fn = {d.get("api_name"): d["id"] for d in self.config["dependencies"]}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                cookie: str | None = "own", timeout: float = 60) -> tuple[int, list, bytes]:
        """``(status, headers, body)`` of one request whose target is sent exactly as ``path``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.putrequest(method, path, skip_accept_encoding=True)
        use = self.cookie if cookie == "own" else cookie
        if use:
            conn.putheader("Cookie", f"{CLIENT_COOKIE}={use}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def fetch(self, path: str, cookie: str | None = "own") -> tuple[int, bytes]:
        """GET ``/gradio_api/file=<path>`` (``path`` sent raw)."""
        status, _, body = self.request("GET", f"/gradio_api/file={path}", cookie=cookie)
        return status, body

    def upload(self, name: str, content: bytes, cookie: str | None = "own") -> tuple[int, list | bytes]:
        """A raw ``POST /gradio_api/upload`` of one file → ``(status, server paths or the error body)``."""
        boundary = "----sw" + secrets.token_hex(8)
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        status, _, data = self.request("POST", "/gradio_api/upload", body,
                                       {"Content-Type": f"multipart/form-data; boundary={boundary}"}, cookie=cookie)
        return status, (json.loads(data) if status == 200 else data)

    def call(self, api: str, data: list, session: str | None = None, cookie: str | None = "own",
             timeout: float = 120) -> dict:
        """Run the event ``api`` through the queue → the last message of its stream
        (``{"msg": "process_completed", "success": …, "output": {"data": […]}}``), or
        ``{"status": …, "body": …}`` when a request is refused, or ``{"msg": "broken"}`` when the
        stream ends without an answer."""
        sid = session or self.session
        payload = json.dumps({"data": data, "event_data": None, "fn_index": self.fn[api], "trigger_id": None,
                              "session_hash": sid}).encode()
        status, _, body = self.request("POST", "/gradio_api/queue/join", payload,
                                       {"Content-Type": "application/json"}, cookie=cookie)
        if status != 200:
            return {"status": status, "body": body}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        use = self.cookie if cookie == "own" else cookie
        headers = {"Accept": "text/event-stream", **({"Cookie": f"{CLIENT_COOKIE}={use}"} if use else {})}
        conn.request("GET", f"/gradio_api/queue/data?session_hash={sid}", headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            return {"status": resp.status, "body": resp.read()}
        last = {"msg": "broken"}
        try:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    last = msg
                    break
        finally:
            conn.close()
        return last

    def heartbeat(self, session: str, cookie: str | None = "own", hold_s: float = 0.5) -> int:
        """Open ``/gradio_api/heartbeat/<session>``, hold it ``hold_s`` s, disconnect → the status
        line's code (a disconnect is what fires Gradio's unload for that session)."""
        use = self.cookie if cookie == "own" else cookie
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall((f"GET /gradio_api/heartbeat/{session} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       + (f"Cookie: {CLIENT_COOKIE}={use}\r\n" if use else "") + "\r\n").encode())
            head = s.recv(64).decode("latin-1")
            time.sleep(hold_s)
        time.sleep(1.0)  # the server notices the disconnect and runs unload (when it lets it)
        return int(head.split()[1])


def file_data(path: str) -> dict:
    """A Gradio ``FileData`` naming a server path (what a client sends for an uploaded file)."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


def outputs(msg: dict) -> list:
    """The output values of a completed event (``[]`` when it failed)."""
    return (msg.get("output") or {}).get("data") or []


def tiff_bomb(path: Path, side: int = 100_000, tile: int = 1024) -> Path:
    """A tiled RGB TIFF of ``side`` × ``side`` px, deflate-compressed, whose tiles all point at one
    compressed white tile: ~80 KB on disk for 10 Gpx (decoding it whole inflates ~30 GB)."""
    n = (-(-side // tile)) ** 2
    data = zlib.compress(b"\xff" * (tile * tile * 3), 9)
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
               (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile), (324, 4, n, None),
               (325, 4, n, None)]
    ifd_size = 2 + 12 * len(entries) + 4
    bps_at = 8 + ifd_size
    offsets_at = bps_at + 6
    counts_at = offsets_at + 4 * n
    data_at = counts_at + 4 * n
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        pointer = {258: bps_at, 324: offsets_at, 325: counts_at}.get(tag)
        if pointer is not None:
            out += struct.pack("<HHII", tag, kind, count, pointer)
        elif kind == 3:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8)
    out += struct.pack(f"<{n}I", *([data_at] * n)) + struct.pack(f"<{n}I", *([len(data)] * n)) + data
    path.write_bytes(bytes(out))
    return path
