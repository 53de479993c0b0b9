"""The slide viewer's server side: per-session tile URLs, deep-zoom tiles, overlay pictures, static assets.

The browser runs OpenSeadragon (vendored from npm with its licence in ``ui/static/openseadragon``)
in a ``gr.HTML`` component (``ui/static/viewer.js``). It asks this module's routes for

* ``sw/v/<token>/slide.dzi`` and ``sw/v/<token>/slide_files/<level>/<col>_<row>.jpeg`` — the slide,
  tile by tile from its pyramid (:class:`~spotwhisper.ui.deepzoom.DeepZoom`);
* ``sw/v/<token>/layer/<n>.png`` — the heat map / comparison picture of the current answer;
* ``sw/static/…`` — OpenSeadragon and the viewer script.

A token is an unguessable name for *one slide in one session* (:meth:`ViewerRegistry.token`): a
session only ever learns its own tokens, so it cannot fetch tiles of another session's upload;
a token made for a browser's session also needs that browser's client cookie
(:data:`~spotwhisper.ui.access.CLIENT_COOKIE`), and :meth:`ViewerRegistry.drop_session` forgets the
tokens when the session ends. Opened slides are shared by image (at most ``max_open`` kept open).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from spotwhisper.io.slide import Slide

from .deepzoom import DeepZoom
from .layers import Layer

#: the viewer's markup (static: viewer.js fills it; a value change never re-renders it)
VIEWER_HTML = ('<div class="sw-viewer"><div class="sw-osd"></div><div class="sw-toolbar">heat map '
               '<input class="sw-opacity" type="range" min="0" max="100" value="60" title="heat-map opacity"></div>'
               '<div class="sw-colourbar"></div><div class="sw-scalebar"><div class="sw-scalebar-line"></div>'
               '<span></span></div><div class="sw-message"></div></div>')
#: URL prefix of every viewer route (relative to the app's root)
PREFIX = "sw"
OSD_SCRIPT = f"{PREFIX}/static/openseadragon/openseadragon.min.js"


@dataclass
class _Entry:
    session: str
    key: str  #: what the slide is (its source path): equal keys share one opened slide
    opener: Callable[[], tuple[Slide, float]]
    owner: str | None = None  #: the browser (client cookie) whose session it is; None = any
    layers: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    next_layer: int = 1


class ViewerRegistry:
    """Tokens → (session, slide); opened slides; overlay pictures. Thread-safe."""

    def __init__(self, max_open: int = 4, max_layers: int = 6, tile_size: int = 254, quality: int = 80):
        self.max_open = max_open
        self.max_layers = max_layers
        self.tile_size = tile_size
        self.quality = quality
        self._tokens: dict[str, _Entry] = {}
        self._by_session: dict[tuple[str, str], str] = {}
        self._open: OrderedDict[str, tuple[DeepZoom, float, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def token(self, session: str, key: str, opener: Callable[[], tuple[Slide, float]],
              owner: str | None = None) -> str:
        """The token of slide ``key`` for ``session`` (one per pair, made on first use). ``opener``
        returns ``(slide, scale)`` — the image and the factor from spot coordinates to its px.
        With ``owner`` (a client cookie) only requests carrying that cookie are answered."""
        with self._lock:
            tok = self._by_session.get((session, key))
            if tok is None:
                tok = secrets.token_urlsafe(18)
                self._tokens[tok] = _Entry(session, key, opener, owner)
                self._by_session[(session, key)] = tok
            return tok

    def url(self, token: str) -> str:
        """The ``.dzi`` URL of a token (relative to the app root)."""
        return f"{PREFIX}/v/{token}/slide.dzi"

    def add_layer(self, token: str, layer: Layer) -> str:
        """Keep ``layer``'s picture for ``token`` (the last ``max_layers``) → its URL; the same
        picture as the latest one keeps its URL (the browser does not reload it)."""
        with self._lock:
            entry = self._entry(token)
            if entry.layers:
                last = next(reversed(entry.layers))
                if entry.layers[last] == layer.png:
                    return f"{PREFIX}/v/{token}/layer/{last}.png"
            n = entry.next_layer
            entry.next_layer += 1
            entry.layers[n] = layer.png
            while len(entry.layers) > self.max_layers:
                entry.layers.popitem(last=False)
        return f"{PREFIX}/v/{token}/layer/{n}.png"

    def layer(self, token: str, n: int) -> bytes:
        with self._lock:
            data = self._entry(token).layers.get(n)
        if data is None:
            raise KeyError(f"no layer {n}")
        return data

    def opened(self, token: str) -> tuple[DeepZoom, float, threading.Lock]:
        """``(DeepZoom, scale, lock)`` of a token's slide, opening it on first use."""
        with self._lock:
            entry = self._entry(token)
            hit = self._open.get(entry.key)
            if hit is not None:
                self._open.move_to_end(entry.key)
                return hit
        slide, scale = entry.opener()
        made = (DeepZoom(slide, self.tile_size, quality=self.quality), float(scale), threading.Lock())
        with self._lock:
            hit = self._open.setdefault(entry.key, made)
            while len(self._open) > self.max_open:
                _, (dz, _, _) = self._open.popitem(last=False)
                dz.slide.close()
        if hit is not made:
            slide.close()
        return hit

    def sessions(self) -> set[str]:
        with self._lock:
            return {e.session for e in self._tokens.values()}

    def drop_session(self, session: str) -> int:
        """Forget every token of ``session`` → how many."""
        with self._lock:
            gone = [t for t, e in self._tokens.items() if e.session == session]
            for t in gone:
                e = self._tokens.pop(t)
                self._by_session.pop((e.session, e.key), None)
        return len(gone)

    def prune(self, live: set[str] | list[str]) -> int:
        """Forget the tokens of sessions not in ``live`` (ended without an unload, e.g. swept) → how many."""
        keep = set(live)
        return sum(self.drop_session(s) for s in self.sessions() - keep)

    def _entry(self, token: str) -> _Entry:
        entry = self._tokens.get(token)
        if entry is None:
            raise KeyError("unknown viewer token")
        return entry

    def allowed(self, token: str, cookie: str | None) -> bool:
        """True when ``token`` exists and the request's client cookie may use it."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None:
            return False
        if not entry.owner or entry.owner.startswith("anon:"):
            return True
        return cookie is not None and secrets.compare_digest(entry.owner, cookie)

    # -- HTTP -----------------------------------------------------------------------------
    def routes(self) -> list:
        """Starlette routes of the viewer (pass as ``app_kwargs={"routes": …}`` to ``Blocks.launch``)."""
        from starlette.responses import Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        from .access import CLIENT_COOKIE

        private = {"Cache-Control": "private, max-age=3600"}

        def ok(request) -> bool:
            return self.allowed(request.path_params["token"], request.cookies.get(CLIENT_COOKIE))

        def dzi(request):
            if not ok(request):
                return Response("not found", status_code=404)
            try:
                dz, _, _ = self.opened(request.path_params["token"])
            except KeyError:
                return Response("not found", status_code=404)
            return Response(dz.dzi_xml(), media_type="application/xml", headers=private)

        def tile(request):
            if not ok(request):
                return Response("not found", status_code=404)
            name = request.path_params["tile"]
            try:
                col, row = (int(v) for v in name.removesuffix(".jpeg").split("_"))
                dz, _, lock = self.opened(request.path_params["token"])
                with lock:  # file-backed readers are not thread-safe
                    data = dz.tile(int(request.path_params["level"]), col, row)
            except (KeyError, ValueError):
                return Response("not found", status_code=404)
            return Response(data, media_type="image/jpeg", headers=private)

        def layer(request):
            if not ok(request):
                return Response("not found", status_code=404)
            try:
                data = self.layer(request.path_params["token"], int(request.path_params["n"]))
            except (KeyError, ValueError):
                return Response("not found", status_code=404)
            return Response(data, media_type="image/png", headers=private)

        return [
            Route(f"/{PREFIX}/v/{{token}}/slide.dzi", dzi),
            Route(f"/{PREFIX}/v/{{token}}/slide_files/{{level:int}}/{{tile}}", tile),
            Route(f"/{PREFIX}/v/{{token}}/layer/{{n:int}}.png", layer),
            Mount(f"/{PREFIX}/static", StaticFiles(directory=str(static_dir())), name="sw-static"),
        ]


def static_dir() -> Path:
    """The folder of the viewer's browser assets (OpenSeadragon, ``viewer.js``)."""
    return Path(str(resources.files("spotwhisper.ui") / "static"))


def viewer_js() -> str:
    """The viewer's ``js_on_load`` code."""
    return (static_dir() / "viewer.js").read_text(encoding="utf-8")


def viewer_css() -> str:
    """The viewer's CSS (scale bar, colour bar, region labels)."""
    return (static_dir() / "viewer.css").read_text(encoding="utf-8")


def head_html() -> str:
    """``<script>`` tag loading OpenSeadragon (relative URL, so a root path behind a proxy works)."""
    return f'<script src="{OSD_SCRIPT}"></script>'


def viewer_component(key: str):
    """A ``gr.HTML`` slide viewer (elem_id ``viewer-<key>``) whose value is a :func:`~spotwhisper.ui.screen.viewer_payload`;
    it fires a ``region`` event (``{slide, region}`` or ``{slide, x, y}`` in image px) when clicked."""
    import gradio as gr

    return gr.HTML(value={"key": key, "dzi": None}, html_template=VIEWER_HTML, js_on_load=viewer_js(),
                   head=head_html(), elem_id=f"viewer-{key}", apply_default_css=False, container=False)
