"""Write a file or a folder as a whole: build it in a temporary sibling, then swap it in.

:func:`atomic_file` serves every single-file writer (h5ad, parquet, JSON, npz, PNG, OME-TIFF …);
:func:`atomic_dir` serves model folders (``save_pretrained``). An interrupted write never leaves a
half-written file or model behind: either the old one or the new one is there.
"""

from __future__ import annotations

import os
import shutil
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
