"""Write a file or a folder as a whole: build it in a temporary sibling, then swap it in.

:func:`atomic_file` serves every single-file writer (h5ad, parquet, JSON, npz, PNG, OME-TIFF …);
:func:`atomic_dir` serves model folders (``save_pretrained``). An interrupted write never leaves a
half-written file or model behind: either the old one or the new one is there.

:func:`temp_dir` makes a temporary folder with the permissions of any other new folder (``mkdtemp``
alone gives 0700, which a folder renamed into place would keep); :func:`exchange` swaps two
folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``). :func:`kill_point` is the hook the
crash-consistency tests use: it SIGKILLs the process at a named phase when
``$SPOTWHISPER_KILL_AT`` names it, and does nothing otherwise.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path, suffix: str = ".part", fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (its folder is created) for the caller to write;
    when the block ends without error it replaces ``path`` (after flushing it to disk with
    ``fsync``), otherwise it is deleted and ``path`` is left as it was.

    ``suffix`` ends the temporary name, for writers that go by the extension (``np.savez`` needs
    ``.npz``). The file gets the process's default permissions, like any file it creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(dest: str | Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success it replaces ``dest``.

    Files named in ``keep`` that exist in the old ``dest`` but were not written anew are carried
    over (e.g. a hand-written model card). On an exception the temporary folder is removed and
    ``dest`` is left as it was. Files are made world-readable (safetensors writes owner-only).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        yield tmp
        for name in keep:
            if (dest / name).exists() and not (tmp / name).exists():
                shutil.copy2(dest / name, tmp / name)
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: environment variable naming the phase at which :func:`kill_point` SIGKILLs the process (tests only)
KILL_AT_ENV = "SPOTWHISPER_KILL_AT"


def kill_point(phase: str) -> None:
    """SIGKILL this process when ``$SPOTWHISPER_KILL_AT`` equals ``phase`` (crash-consistency tests:
    the process dies exactly there, with no cleanup, as in a power cut or an OOM kill)."""
    if os.environ.get(KILL_AT_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; 0o022 where unknown)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>`` (parent created) with the permissions of an
    ordinary new folder (0777 minus the umask), not ``mkdtemp``'s 0700."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o777 & ~_umask())
    return path


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one atomic step; False (nothing done) where the system or
    file system cannot (no ``renameat2``, or ``RENAME_EXCHANGE`` unsupported)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
