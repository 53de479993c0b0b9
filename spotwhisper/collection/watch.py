"""A collection that follows its manifest: what ``spotwhisper serve`` reads while builds change it.

Every commit replaces ``manifest.json`` atomically (a new file renamed over the old one, written
last), and a replaced collection (``--overwrite``) is a new folder moved into place in one step. So
the manifest file's identity — inode, size, modification time — changes exactly when a committed
state changes, and a new manifest always describes files that are already complete.

:class:`LiveCollection` checks that identity (one ``stat``, at most every ``watch_interval_s``
seconds, ``configs/collection.yaml``) when a reader asks for :meth:`LiveCollection.current`. On a
change it opens the collection anew — indexes, slide files, model check — and only when that
succeeds hands out the new :class:`~.opened.OpenedCollection`; until then (or if the new state cannot
be read) readers keep the previous one. A request never sees half of a commit: it holds one opened
collection from start to end. A collection that does not exist yet is ``None`` until it is built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..index import IndexFormatError, UnknownCollectionError, load_index_config, resolve_index_dir
from ..index.manifest import MANIFEST
from ..language import TextExpressionModel
from .reader import OpenedCollection, open_collection

log = logging.getLogger(__name__)


def manifest_stamp(folder: Path) -> tuple | None:
    """``(folder inode, manifest inode, size, mtime ns)`` of ``folder/manifest.json``, or None when absent."""
    try:
        st = os.stat(folder / MANIFEST)
        return os.stat(folder).st_ino, st.st_ino, st.st_size, st.st_mtime_ns
    except OSError:
        return None


class LiveCollection:
    """Collection ``name`` in ``index_dir``, reopened whenever a commit changed it (see the module docstring).

    ``text_model``: the model the text route is checked against (default: the shipped one, loaded once).
    ``interval_s``: at most one ``stat`` per interval (None: ``watch_interval_s`` of ``configs/collection.yaml``).
    """

    def __init__(self, name: str, index_dir: str | Path | None = None, text_model: TextExpressionModel | None = None,
                 interval_s: float | None = None, opened: OpenedCollection | None = None):
        from .config import load_collection_config

        self.name = name
        self.root = resolve_index_dir(index_dir, load_index_config())
        self.text_model = text_model or (opened.text_model if opened is not None else None)
        self.interval_s = load_collection_config().watch_interval_s if interval_s is None else float(interval_s)
        self._lock = threading.Lock()
        self._opened = opened
        self._stamp = manifest_stamp(self.folder) if opened is not None else None
        self._checked = time.monotonic() if opened is not None else float("-inf")
        self.version = 0  #: how many states were opened (a reader can tell it changed)
        self.error: str | None = None  #: why the latest state could not be opened (the previous one is kept)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def current(self, force: bool = False) -> OpenedCollection | None:
        """The latest committed state (checked at most every ``interval_s``; ``force``: now), or None while the
        collection does not exist."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < self.interval_s:
                return self._opened
            self._checked = now
            stamp = manifest_stamp(self.folder)
            if stamp is None or stamp == self._stamp:
                return self._opened
            try:
                if self.text_model is None:
                    self.text_model = TextExpressionModel.from_pretrained()
                opened = open_collection(self.name, self.root, self.text_model)
            except (UnknownCollectionError, IndexFormatError, OSError, ValueError) as err:
                # a state that cannot be read is not served; the previous one stays (the next check retries)
                self.error = f"{type(err).__name__}: {err}"
                log.warning("collection %r changed but cannot be opened (%s); still serving the previous state",
                            self.name, self.error)
                return self._opened
            previous = self._opened
            self._opened, self._stamp, self.error = opened, stamp, None  # a commit during the open: seen next time
            self.version += 1
        if previous is not None:
            log.info("collection %r changed: %d slide(s) now", self.name, len(opened.index.slides()))
        return opened
