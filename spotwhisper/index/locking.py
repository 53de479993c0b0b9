"""Reader/writer locks on a collection folder (``<collection>/.lock``, POSIX ``flock``).

Readers hold a shared lock while they read the manifest and load the shards it lists; writers
hold an exclusive lock from reading the manifest until the old files are deleted. So a reader
never sees a shard deleted under it. Where ``fcntl`` is missing (Windows) locking is a no-op
and only the atomic manifest replacement protects readers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


@contextlib.contextmanager
def collection_lock(folder: Path, *, exclusive: bool, timeout: float = 120.0, poll: float = 0.05) -> Iterator[None]:
    """Hold a shared (readers) or exclusive (writers) lock on ``folder`` for the ``with`` block.

    Raises :class:`TimeoutError` naming the lock file after ``timeout`` seconds.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = Path(folder) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    kind = "exclusive" if exclusive else "shared"
                    raise TimeoutError(
                        f"{path}: no {kind} lock after {timeout:.0f} s (another process is writing?)"
                    ) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
