"""Write a folder as a whole: build it in a temporary sibling, then swap it in.

Model folders (``save_pretrained``) use this, so an interrupted save never leaves a half-written
model behind: either the old folder or the new one is there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
