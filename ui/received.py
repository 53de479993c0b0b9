"""Files Gradio received from each browser (``POST /gradio_api/upload``), until an upload event uses them.

Gradio's upload route stores what a browser sends in its temporary folder and answers with the
server paths; :class:`~spotwhisper.ui.access.FileAccessMiddleware` records those paths here under
the browser's client cookie. An upload event may only use a path its own browser received
(:meth:`ReceivedUploads.claim`): a ``FileData`` naming any other file — another session's
picture, another browser's upload — is refused and nothing is copied or deleted. What a browser
received and never used counts against its quota (:meth:`pending_bytes`) and is deleted after
``upload_unused_ttl_s`` (:meth:`expire`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class UploadClaimError(PermissionError):
    """An upload event names a file that its browser did not upload (or that is gone)."""


def canonical(path: str | Path) -> Path:
    """``path`` as the server opens it: made absolute (``..`` removed, as Gradio does) and then
    with symbolic links resolved."""
    return Path(os.path.abspath(str(path))).resolve()


@dataclass
class _Batch:
    owner: str
    paths: set[str]
    nbytes: int
    at: float = field(default_factory=time.time)


class ReceivedUploads:
    """Raw uploads per browser, not yet used by an upload event. Thread-safe."""

    def __init__(self):
        self._batches: list[_Batch] = []
        self._lock = threading.Lock()

    def add(self, owner: str, paths: list[str | Path], nbytes: int) -> None:
        """Record that ``owner``'s request of ``nbytes`` bytes stored ``paths``."""
        with self._lock:
            self._batches.append(_Batch(owner, {str(canonical(p)) for p in paths}, int(nbytes)))

    def pending_bytes(self, owner: str) -> int:
        """Bytes of ``owner``'s uploads no upload event used yet."""
        with self._lock:
            return sum(b.nbytes for b in self._batches if b.owner == owner)

    def claim(self, owner: str, paths: list[str | Path]) -> list[Path]:
        """``paths`` (canonical) if ``owner`` uploaded every one of them and they are still there; they
        stop counting as pending. :class:`UploadClaimError` otherwise — nothing is claimed, no file touched."""
        keys = [str(canonical(p)) for p in paths]
        with self._lock:
            found = []
            for key in keys:
                batch = next((b for b in self._batches if key in b.paths and secrets.compare_digest(b.owner, owner)),
                             None)
                if batch is None or not Path(key).is_file():
                    raise UploadClaimError(f"{Path(key).name}: this file was not uploaded by this browser (or it "
                                           "was deleted unused); upload it again")
                found.append((batch, key))
            for batch, key in found:
                batch.paths.discard(key)
                if not batch.paths and batch in self._batches:
                    self._batches.remove(batch)
        return [Path(k) for k in keys]

    def pending(self, path: str | Path) -> bool:
        """True when some browser's unused upload is ``path`` (Gradio stores equal uploads once)."""
        key = str(canonical(path))
        with self._lock:
            return any(key in b.paths for b in self._batches)

    def expire(self, ttl_s: float, now: float | None = None) -> list[Path]:
        """Forget uploads older than ``ttl_s`` → the files that no other pending upload shares (to delete)."""
        now = time.time() if now is None else now
        with self._lock:
            old = [b for b in self._batches if now - b.at > ttl_s]
            self._batches = [b for b in self._batches if b not in old]
            kept = {p for b in self._batches for p in b.paths}
        return [Path(p) for b in old for p in b.paths if p not in kept]


def delete_received(path: Path, root: Path) -> None:
    """Delete a received file and its folder (Gradio's ``<sha>/``) when that is left empty."""
    path.unlink(missing_ok=True)
    parent = path.parent
    if parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            pass
