"""Per-session state of the server: each browser session's uploaded slides and files, kept apart
from every other session, and deleted when the session ends.

One :class:`~spotwhisper.search.engine.SearchEngine` over the collection is shared, read-only, by
every session; a session searches through :meth:`Session.engine`, a view that adds its own
uploaded slides without changing the shared engine (so other sessions never see them). Files live
in the server's data folder (``configs/ui.yaml`` ``data_dir``, :meth:`UIConfig.data_root`)::

    sessions/<session>/uploads/<stamp>/<file>   what the user sent, copied before anything reads it
    sessions/<session>/processed/<slide>.h5ad   processed uploads
    sessions/<session>/exports/…                exports (CSV, .h5ad, GeoJSON)
    gradio/                                     GRADIO_TEMP_DIR: uploads in flight, Gradio's own files
    gradio/sw-<token>/<file>                    files handed to one session's browser (:meth:`SessionStore.serve`)

Nothing under the data folder is served unless :meth:`SessionStore.serve` registered it, and then
only to the browser (client cookie, :mod:`spotwhisper.ui.access`) that owns the session. A session
is closed — slides dropped, folders deleted — when its tab closes (Gradio's ``unload``) or after
``session_ttl_s`` without a request; the folder has a size cap (``data_max_mb``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
from PIL import Image

from spotwhisper.names import safe_name
from spotwhisper.search.engine import SearchEngine

from .config import UIConfig

log = logging.getLogger(__name__)

SESSIONS = "sessions"
GRADIO = "gradio"
SERVED_PREFIX = "sw-"
#: served pictures (overlays, tiles: photographs of tissue) are JPEG at this quality, without chroma
#: subsampling so thin region outlines keep their colour; ~10× faster to encode than PNG
JPEG_QUALITY = 90


class QuotaError(ValueError):
    """The server's data folder is full (``data_max_mb``): nothing more is stored until sessions end."""


class SessionAccessError(PermissionError):
    """A request names a session that belongs to another browser."""


@dataclass
class Session:
    """One browser session: its uploaded slides (name → AnnData), its folders and served files."""

    id: str
    owner: str  #: the browser (client cookie) the session belongs to
    folder: Path  #: sessions/<id>/ — uploads, processed slides, exports (never served as such)
    outbox: Path  #: gradio/sw-<token>/ — copies handed to this session's browser
    slides: dict[str, ad.AnnData] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)
    files: set[str] = field(default_factory=set)  #: served paths (absolute)
    slots: dict[str, list[str]] = field(default_factory=dict)  #: what each output shows now (older copies are deleted)

    def engine(self, shared: SearchEngine) -> SearchEngine:
        """The engine this session searches: ``shared`` plus the session's own slides."""
        return shared.overlay(self.slides) if self.slides else shared


class SessionStore:
    """The sessions of one server, their files in the data folder, and who may fetch which file."""

    def __init__(self, cfg: UIConfig, root: str | Path | None = None):
        self.cfg = cfg
        self.root = Path(root or cfg.data_root()).expanduser().resolve()
        self.sessions_dir = self.root / SESSIONS
        self.gradio_dir = self.root / GRADIO
        for folder in (self.root, self.sessions_dir, self.gradio_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._sessions: dict[str, Session] = {}
        self._owners: dict[str, str] = {}  #: served path → owner
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- sessions --------------------------------------------------------------------------------
    def session(self, session_id: str, owner: str) -> Session:
        """The session ``session_id`` (created on first use) after checking that ``owner`` owns it."""
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None:
                safe = safe_name(session_id, 64, "local")
                sess = Session(session_id, owner, self.sessions_dir / safe,
                               self.gradio_dir / f"{SERVED_PREFIX}{secrets.token_hex(12)}")
                self._sessions[session_id] = sess
            elif not secrets.compare_digest(sess.owner, owner):
                raise SessionAccessError("this session belongs to another browser; reload the page")
            sess.seen = time.time()
            return sess

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def close(self, session_id: str) -> bool:
        """End a session: drop its slides, forget and delete its files. False when unknown."""
        with self._lock:
            sess = self._sessions.pop(session_id, None)
            if sess is None:
                return False
            for path in sess.files:
                self._owners.pop(path, None)
            sess.slides.clear()
        shutil.rmtree(sess.outbox, ignore_errors=True)
        shutil.rmtree(sess.folder, ignore_errors=True)
        log.info("session %s closed; its slides and files are deleted", session_id[:8])
        return True

    def sweep(self, now: float | None = None) -> int:
        """Close sessions idle for ``session_ttl_s`` and delete files in the data folder that no
        live session owns and that are older than that (left by a crash or an abandoned upload).
        Returns the number of sessions closed."""
        now = time.time() if now is None else now
        ttl = self.cfg.session_ttl_s
        with self._lock:
            idle = [s.id for s in self._sessions.values() if now - s.seen > ttl]
        for sid in idle:
            self.close(sid)
        with self._lock:
            live = {s.folder for s in self._sessions.values()} | {s.outbox for s in self._sessions.values()}
        for parent in (self.sessions_dir, self.gradio_dir):
            for path in list(parent.iterdir()) if parent.is_dir() else []:
                if path in live or now - _mtime(path) <= ttl:
                    continue
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return len(idle)

    def start_sweeper(self) -> None:
        """Sweep every ``cleanup_interval_s`` in a daemon thread (until :meth:`stop`)."""
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.cfg.cleanup_interval_s):
                try:
                    self.sweep()
                except OSError:
                    log.exception("sweeping the data folder failed")

        self._sweeper = threading.Thread(target=loop, name="spotwhisper-session-sweeper", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()

    # -- files -----------------------------------------------------------------------------------
    def usage_bytes(self) -> int:
        """Bytes held in the data folder."""
        total = 0
        for folder, _, files in os.walk(self.root):
            for f in files:
                try:
                    total += os.lstat(os.path.join(folder, f)).st_size
                except OSError:
                    pass
        return total

    def reserve(self, nbytes: int, what: str) -> None:
        """Raise :class:`QuotaError` unless ``nbytes`` more fit under ``data_max_mb`` (idle sessions
        are swept first)."""
        cap = self.cfg.data_max_mb * 2**20
        if self.usage_bytes() + nbytes <= cap:
            return
        self.sweep()
        used = self.usage_bytes()
        if used + nbytes > cap:
            raise QuotaError(f"the server's storage for uploads and exports is full ({used / 2**20:,.0f} of "
                             f"{self.cfg.data_max_mb:,} MB), so {what} cannot be kept; try again later")

    def serve(self, sess: Session, item: str | Path | Image.Image | np.ndarray, name: str,
              slot: str | None = None) -> str:
        """A copy of ``item`` (a file, a PIL image or an RGB array → JPEG) in the session's outbox,
        registered so that only the session's browser may fetch it; returns its path for a Gradio
        output. ``name`` is made file-name-safe (and unique). With ``slot`` (an output, e.g.
        ``"overlay"``), the file the slot showed before is deleted."""
        return self.serve_all(sess, [(item, name)], slot)[0]

    def serve_all(self, sess: Session, items: list[tuple[str | Path | Image.Image | np.ndarray, str]],
                  slot: str | None = None) -> list[str]:
        """:meth:`serve` for several items at once (a gallery); ``slot`` then holds all of them."""
        sess.outbox.mkdir(parents=True, exist_ok=True)
        paths = [str(self._write(sess.outbox, item, name)) for item, name in items]
        with self._lock:
            if self._sessions.get(sess.id) is not sess:  # closed meanwhile: leave nothing behind
                for p in paths:
                    self._delete(Path(p), sess.outbox)
                raise SessionAccessError("this session has ended; reload the page")
            for p in paths:
                sess.files.add(p)
                self._owners[p] = sess.owner
            old = sess.slots.get(slot, []) if slot else []
            if slot:
                sess.slots[slot] = paths
            for p in old:
                sess.files.discard(p)
                self._owners.pop(p, None)
                self._delete(Path(p), sess.outbox)
        return paths

    @staticmethod
    def _write(outbox: Path, item: str | Path | Image.Image | np.ndarray, name: str) -> Path:
        tag = secrets.token_hex(6)  # unique per call: concurrent events of one session never clash
        if isinstance(item, (str, Path)):  # a file to download keeps its name, in a folder of its own
            src = Path(item)
            dest = outbox / tag / f"{safe_name(Path(name or src.name).stem, 80, 'file')}{src.suffix}"
            dest.parent.mkdir(parents=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            return dest
        picture = item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item))
        dest = outbox / f"{safe_name(Path(name).stem, 80, 'image')}-{tag}.jpg"
        picture.convert("RGB").save(dest, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return dest

    @staticmethod
    def _delete(path: Path, outbox: Path) -> None:
        if path.parent == outbox:
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path.parent, ignore_errors=True)

    def guards(self, path: str | Path) -> bool:
        """True when ``path`` lies in the data folder (so only its owner may fetch it)."""
        raw = Path(os.path.abspath(str(path)))
        return _within(raw, self.root) or _within(raw.resolve(), self.root)

    def may_fetch(self, path: str | Path, owner: str | None) -> bool:
        """True when ``path`` was served to a session of ``owner`` (the requesting browser)."""
        if not owner:
            return False
        key = os.path.abspath(str(path))
        with self._lock:
            found = self._owners.get(key)
        return found is not None and secrets.compare_digest(found, owner)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
