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
only to the browser (client cookie, :mod:`spotwhisper.ui.access`) that owns the session; the path a
request names is resolved as the server opens it before it is compared (:meth:`SessionStore.may_fetch`).
A session belongs to the first browser that names it (:meth:`SessionStore.bind`); only that browser's
requests reach it, and only its own tab closing (Gradio's ``unload``, :meth:`SessionStore.close` with
the owner) or ``session_ttl_s`` without a request closes it — slides dropped, folders deleted.
Raw uploads are recorded per browser (:mod:`spotwhisper.ui.received`): an upload event takes only
its own browser's files (:meth:`SessionStore.take_uploads`), unused ones are deleted after
``upload_unused_ttl_s``, and a browser holds at most ``client_upload_mb``; the folder has a size cap
(``data_max_mb``).
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
from .files import keep_upload
from .received import ReceivedUploads, canonical, delete_received

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
    taken: dict[str, Path] = field(default_factory=dict)  #: upload path Gradio gave → the session's copy of it

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
        #: session id → (owner, last seen) of sessions named by a request but not open (yet, or any more)
        self._bound: dict[str, tuple[str, float]] = {}
        self.received = ReceivedUploads()  #: raw uploads not used yet, per browser
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- sessions --------------------------------------------------------------------------------
    def bind(self, session_id: str, owner: str | None) -> bool:
        """Whether the browser ``owner`` may act on ``session_id`` (its events, event stream, heartbeat):
        the first browser to name a session owns it, for as long as the server remembers the
        session (``session_ttl_s`` after it was last seen). No cookie, no session."""
        if not owner or not session_id:
            return False
        with self._lock:
            sess = self._sessions.get(session_id)
            bound = sess.owner if sess is not None else self._bound.get(session_id, (None, 0.0))[0]
            if bound is not None and not secrets.compare_digest(bound, owner):
                return False
            if sess is None:
                self._bound[session_id] = (owner, time.time())
            return True

    def session(self, session_id: str, owner: str) -> Session:
        """The session ``session_id`` (created on first use) after checking that ``owner`` owns it."""
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None:
                bound = self._bound.get(session_id)
                if bound is not None and not secrets.compare_digest(bound[0], owner):
                    raise SessionAccessError("this session belongs to another browser; reload the page")
                self._bound.pop(session_id, None)
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

    def close(self, session_id: str, owner: str | None = None) -> bool:
        """End a session: drop its slides, forget and delete its files. With ``owner`` (a request's
        client cookie) only the session's own browser may end it. False when unknown or refused."""
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None:
                return False
            if owner is not None and not secrets.compare_digest(sess.owner, owner):
                log.warning("refused: a request of another browser tried to close session %s", session_id[:8])
                return False
            del self._sessions[session_id]
            self._bound[session_id] = (sess.owner, time.time())  # the id stays its browser's
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
        self.expire_uploads(now)
        with self._lock:
            self._bound = {sid: b for sid, b in self._bound.items() if now - b[1] <= ttl}
            live = {s.folder for s in self._sessions.values()} | {s.outbox for s in self._sessions.values()}
        for parent in (self.sessions_dir, self.gradio_dir):
            for path in list(parent.iterdir()) if parent.is_dir() else []:
                if path in live or now - _mtime(path) <= ttl:
                    continue
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return len(idle)

    def start_sweeper(self) -> None:
        """Sweep every ``cleanup_interval_s`` (or half ``upload_unused_ttl_s``, if shorter) in a daemon
        thread (until :meth:`stop`)."""
        if self._sweeper is not None:
            return

        every = min(self.cfg.cleanup_interval_s, self.cfg.upload_unused_ttl_s / 2)  # unused uploads go promptly

        def loop() -> None:
            while not self._stop.wait(every):
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
        return _folder_bytes(self.root)

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

    # -- raw uploads (what Gradio received before an upload event uses it) --------------------
    def client_bytes(self, owner: str) -> int:
        """Bytes ``owner`` holds on the server: raw uploads not used yet and its sessions' folders."""
        with self._lock:
            folders = [s.folder for s in self._sessions.values() if s.owner == owner]
        return self.received.pending_bytes(owner) + sum(_folder_bytes(f) for f in folders)

    def admit_upload(self, owner: str | None, nbytes: int) -> tuple[int, str] | None:
        """``(HTTP status, reason)`` when a raw upload of ``nbytes`` by browser ``owner`` is refused: no
        client cookie (403), beyond ``client_upload_mb`` for this browser or ``data_max_mb`` for the
        server (413); None when it may go ahead. Expired unused uploads are deleted first."""
        if not owner:
            return 403, "Uploads need the client cookie this server sets: reload the page."
        self.expire_uploads()
        held, cap = self.client_bytes(owner), self.cfg.client_upload_mb * 2**20
        if held + nbytes > cap:
            return 413, (f"This browser already holds {held / 2**20:,.1f} MB of uploads on the server; "
                         f"{nbytes / 2**20:,.1f} MB more is beyond its share (client_upload_mb = "
                         f"{self.cfg.client_upload_mb:,} MB). Uploads not used within "
                         f"{self.cfg.upload_unused_ttl_s:g} s are deleted; a closed tab frees its files.")
        try:
            self.reserve(nbytes, "the upload")
        except QuotaError as err:
            return 413, str(err)
        return None

    def record_upload(self, owner: str, paths: list[str], nbytes: int) -> None:
        """Gradio stored ``paths`` for ``owner``'s upload request of ``nbytes`` bytes."""
        self.received.add(owner, [p for p in paths if self.guards(p)], nbytes)

    def claim_uploads(self, owner: str, paths: list[str | Path]) -> list[Path]:
        """The files ``owner``'s browser uploaded at ``paths``; :class:`~spotwhisper.ui.received.UploadClaimError`
        when any is not one of them (nothing is claimed, no file touched)."""
        return self.received.claim(owner, paths)

    def take_uploads(self, sess: Session, paths: list[str | Path]) -> list[Path]:
        """Copy the files ``sess``'s browser uploaded at ``paths`` into the session folder
        (``uploads/<stamp>/``, :func:`~spotwhisper.ui.files.keep_upload`) → the copies; Gradio's copies
        are deleted. :class:`~spotwhisper.ui.received.UploadClaimError` for a file the browser did not
        upload (nothing touched), :class:`QuotaError` beyond ``data_max_mb``. A path this session took
        before gives its copy again (the same files sent once more, e.g. with the µm/px asked for)."""
        keys = [str(canonical(p)) for p in paths]
        new = [k for k in dict.fromkeys(keys) if not (k in sess.taken and sess.taken[k].is_file())]
        sent = self.claim_uploads(sess.owner, new)
        try:
            self.reserve(sum(p.stat().st_size for p in sent), "the upload")
            sess.taken.update({str(p): keep_upload(p, sess.folder) for p in sent})
        finally:
            for p in sent:
                self.release_upload(p)
        return [sess.taken[k] for k in keys]

    def release_upload(self, path: Path) -> None:
        """Delete Gradio's copy of a claimed upload (unless another browser's unused upload is the same file)."""
        if self.guards(path) and not self.received.pending(path):
            delete_received(path, self.gradio_dir)

    def expire_uploads(self, now: float | None = None) -> int:
        """Delete raw uploads no upload event used within ``upload_unused_ttl_s`` → how many."""
        gone = [p for p in self.received.expire(self.cfg.upload_unused_ttl_s, now) if self.guards(p)]
        for p in gone:
            delete_received(p, self.gradio_dir)
        return len(gone)

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
        """True when ``path`` — written as given or as the server opens it (:func:`canonical`) — lies
        in the data folder (so only its owner may fetch it). A path that cannot be resolved counts as ours."""
        try:
            raw = Path(os.path.abspath(str(path)))
            return _within(raw, self.root) or _within(canonical(raw), self.root)
        except (OSError, ValueError, RuntimeError):
            return True

    def may_fetch(self, path: str | Path, owner: str | None) -> bool:
        """True when ``path``, resolved as the server opens it, is a file served to a session of the
        browser ``owner`` and lies in that session's outbox (a path reaching it through a link is refused)."""
        if not owner:
            return False
        try:
            raw = Path(os.path.abspath(str(path)))
            real = canonical(raw)
        except (OSError, ValueError, RuntimeError):
            return False
        if raw != real:
            return False
        with self._lock:
            found = self._owners.get(str(real))
            if found is None or not secrets.compare_digest(found, owner):
                return False
            return any(s.outbox in real.parents for s in self._sessions.values() if s.owner == found)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _folder_bytes(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(parent, f)).st_size
            except OSError:
                pass
    return total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
