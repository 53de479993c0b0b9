"""Names that become paths: the one place they are checked, cleaned and kept unique.

Every name a user or a file supplies that ends up in a path — a collection, a slide or section
(``obs["section"]`` of an ``.h5ad``), a route, an uploaded file name, a query in an output file
name, a browser session id — goes through this module:

* :func:`check_name` — a name that must already be safe (collections, slides, routes): letters,
  digits, ``_ - .``, starting with a letter or digit, at most :data:`MAX_NAME_CHARS` characters.
  Anything else (``../x``, ``a/b``, ``..``, an empty string, a NUL byte) is a :class:`BadNameError`.
* :func:`slug` / :func:`safe_name` — free text (a query, an uploaded file name) turned into such a name.
* :func:`unique_name` / :func:`unique_path` — a free name beside those taken, so two outputs whose
  names clean to the same text never overwrite each other.
* :func:`inside` — a path resolved and checked to lie inside a folder (the last line of defence).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

#: longest name accepted for a collection, slide or route (file systems allow 255 bytes)
MAX_NAME_CHARS = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+|\.{2,}")


class BadNameError(ValueError):
    """A name that would become a path is not a plain file name (it names the value and why)."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` itself when it is a plain file-name-safe name, else :class:`BadNameError`.

    ``what`` says which kind of name it is ("collection", "slide" …) in the message.
    """
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_CHARS or ".." in name:
        raise BadNameError(
            f"bad {what} name {name!r}: use letters, digits, '_', '-', '.' (starting with a letter or digit, "
            f"no '..', at most {MAX_NAME_CHARS} characters) — a {what} name cannot be a path")
    return name


def is_valid_name(name: object) -> bool:
    """True when :func:`check_name` accepts ``name``."""
    try:
        check_name(name)
    except BadNameError:
        return False
    return True


def safe_name(text: str, max_len: int = 64, empty: str = "unnamed") -> str:
    """``text`` reduced to a valid name: runs of other characters become ``_``, leading/trailing
    ``_ . -`` are dropped, ``..`` is broken up; ``empty`` when nothing is left. Case is kept."""
    out = re.sub(r"_{2,}", "_", _UNSAFE.sub("_", str(text or "")))
    out = out.strip("_.-")[:max_len].rstrip("_.-")
    return out if out and _NAME.match(out) else empty


def slug(text: str, max_len: int = 40, empty: str = "result") -> str:
    """File-name-safe lower-case version of ``text`` (at most ``max_len`` characters; ``empty`` when
    nothing is left) — for queries in output file names."""
    return re.sub(r"[^0-9a-z]+", "_", str(text or "").lower()).strip("_")[:max_len].strip("_") or empty


def unique_name(name: str, taken: Collection[str]) -> str:
    """``name`` made safe (:func:`safe_name`), with ``-2``, ``-3`` … appended while ``taken`` holds it."""
    base = safe_name(name, empty="upload")
    out, n = base, 1
    while out in taken:
        n += 1
        out = f"{base}-{n}"
    return out


def unique_path(folder: str | Path, stem: str, suffixes: Collection[str]) -> Path:
    """``folder/<stem>`` (suffixes not included) such that none of ``<stem><suffix>`` exists yet:
    ``stem``, else ``stem-2``, ``stem-3`` … — one stem for a group of files written together
    (an overlay PNG, its CSV and GeoJSON). ``stem`` must be a valid name."""
    folder = Path(folder)
    check_name(stem, "output file")
    out, n = stem, 1
    while any((folder / f"{out}{s}").exists() for s in suffixes):
        n += 1
        out = f"{stem}-{n}"
    return folder / out


def inside(root: str | Path, *parts: str) -> Path:
    """``root/<parts…>`` resolved, after checking that it stays inside ``root`` (symlinks followed);
    :class:`BadNameError` otherwise."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise BadNameError(f"{'/'.join(parts)!r} leads outside {base.name}/")
    return path
