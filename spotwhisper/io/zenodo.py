"""Zenodo records: list a record's files, download them (md5-verified, resumable), unpack archives.

:func:`zenodo_files` reads ``GET {api_base}/records/{id}`` (``api_base`` in ``configs/fetch.yaml``)
and understands both shapes of its ``files`` list: the current one (``key``, ``size``,
``checksum: "md5:<hex>"``, ``links.self`` = download URL) and the older ones (``filename``,
``filesize``, a bare md5, ``links.download``). :func:`fetch_record` downloads the files with
:func:`spotwhisper.io.fetch.download` (``.part`` files resumed, the md5 checked before the file
is moved into place, files already correct skipped) and unpacks every archive into
``<root>/<archive stem>/``: ``.7z`` with ``py7zr`` (AES-encrypted ones with a password), zip
and tar with :func:`spotwhisper.io.fetch.unpack`. Extraction goes through a temporary folder;
a marker ``.<archive>.unpacked`` (holding the archive's md5) makes reruns skip it.

her2st: record 3957257 holds the full-resolution H&E images of all sections as 7z archives
encrypted with AES; the passwords are published in the README of github.com/almaan/her2st.
:func:`fetch_her2st_zenodo` puts them under ``<dest>/her2st/zenodo/``
(``spotwhisper data fetch her2st-zenodo --dest DIR --password PW``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from .fetch import (
    FetchConfig,
    FetchError,
    FetchReport,
    byte_bar,
    check_members,
    download_counted,
    extract_atomically,
    load_fetch_config,
    open_url,
    unpack,
    unpack_once,
)

log = logging.getLogger(__name__)

#: Shown when a her2st archive cannot be opened: where its passwords are published.
HER2ST_PASSWORD_HINT = (
    "The passwords of the her2st Zenodo archives are published in the README of https://github.com/almaan/her2st "
    "(see also https://github.com/almaan/her2st/issues/2: not every archive uses the same one, so --password "
    "may be given several times; each is tried in turn)."
)
#: File name endings unpacked after download (the rest are only downloaded).
ARCHIVE_SUFFIXES = (".7z", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class ZenodoFile:
    """One file of a record: ``name`` (Zenodo's key), download ``url``, ``size`` in bytes (``None`` if
    not listed) and the ``checksum`` hex digest computed with :mod:`hashlib` ``algorithm``."""

    name: str
    url: str
    size: int | None
    checksum: str
    algorithm: str = "md5"


@dataclass
class RecordReport(FetchReport):
    """What :func:`fetch_record` did; ``extracted`` maps each folder an archive was unpacked into to its files."""

    record_id: str = ""
    files: list[ZenodoFile] = field(default_factory=list)
    extracted: dict[Path, list[Path]] = field(default_factory=dict)


def record_url(record_id: str | int, cfg: FetchConfig) -> str:
    """``{api_base}/records/{record_id}``."""
    return f"{cfg.zenodo.api_base.rstrip('/')}/records/{record_id}"


def _checksum(value: object, where: str) -> tuple[str, str]:
    """``"md5:<hex>"`` (or a bare md5, as the deposit API lists it) → ``(algorithm, hex)``."""
    if not isinstance(value, str) or not value:
        raise FetchError(f"{where}: no checksum listed, so the download could not be verified")
    algorithm, sep, digest = value.partition(":")
    if not sep:
        algorithm, digest = "md5", value
    algorithm = algorithm.lower()
    if algorithm not in hashlib.algorithms_available or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise FetchError(f"{where}: checksum {value!r} is not '<algorithm>:<hex digest>'")
    return algorithm, digest.lower()


def parse_record(record: dict, record_id: str | int, api_base: str) -> list[ZenodoFile]:
    """The files of a record's JSON (current or older Zenodo shape; see the module docstring)."""
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict):  # InvenioRDM's own shape: {"entries": {key: {...}}}
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not files or not isinstance(files, list):
        raise FetchError(f"Zenodo record {record_id} lists no files (restricted, embargoed, or not a record?)")
    out: dict[str, ZenodoFile] = {}
    for i, entry in enumerate(files):
        where = f"Zenodo record {record_id}, file {i + 1}"
        name = (entry.get("key") or entry.get("filename")) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise FetchError(f"{where}: neither 'key' nor 'filename' is given ({entry!r:.200})")
        check_members([name], f"Zenodo record {record_id}")
        links = entry.get("links") or {}
        # "content"/"download" are the bytes where a "self" link is the file's metadata (deposit, InvenioRDM)
        url = links.get("content") or links.get("download") or links.get("self")
        url = url or f"{api_base.rstrip('/')}/records/{record_id}/files/{urllib.parse.quote(name)}/content"
        size = entry.get("size", entry.get("filesize"))
        algorithm, digest = _checksum(entry.get("checksum"), f"{where} ({name})")
        if name in out:
            raise FetchError(f"Zenodo record {record_id}: {name!r} is listed twice")
        out[name] = ZenodoFile(name, url, int(size) if size is not None else None, digest, algorithm)
    return list(out.values())


def zenodo_files(record_id: str | int, cfg: FetchConfig | None = None) -> list[ZenodoFile]:
    """The files of Zenodo record ``record_id``: ``GET {cfg.zenodo.api_base}/records/{record_id}``."""
    cfg = cfg or load_fetch_config()
    url = record_url(record_id, cfg)
    try:
        stream, _, _ = open_url(url, 0, cfg)
        with stream:
            record = json.loads(stream.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        what = "no such record" if err.code in (404, 410) else err.reason
        raise FetchError(f"{url}: HTTP {err.code} ({what})") from err
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"{url}: cannot read the record ({err})") from err
    except ValueError as err:  # JSON or UTF-8
        raise FetchError(f"{url}: the answer is not a Zenodo record in JSON ({err})") from err
    return parse_record(record, record_id, cfg.zenodo.api_base)


def archive_stem(name: str) -> str | None:
    """``"ST-imgs.7z"`` → ``"ST-imgs"``; ``None`` for a file that is not an archive."""
    low = name.lower()
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def select_files(files: list[ZenodoFile], only: Sequence[str] | None) -> list[ZenodoFile]:
    """Files whose name, name without the archive suffix, or glob matches a token of ``only`` (``None`` = all)."""
    if not only:
        return list(files)

    def hit(f: ZenodoFile, token: str) -> bool:
        return token in (f.name, archive_stem(f.name)) or fnmatch(f.name, token)

    unknown = [t for t in only if not any(hit(f, t) for f in files)]
    if unknown:
        raise ValueError(f"--only {unknown}: no such file in the record (it has: {', '.join(f.name for f in files)})")
    return [f for f in files if any(hit(f, t) for t in only)]


class _Undecodable(Exception):
    """py7zr could not decode the archive (a wrong key, or damaged data)."""


def _extract_7z(archive: Path, password: str | None, tmp: Path, progress: bool) -> None:
    import py7zr
    from py7zr.callbacks import ExtractCallback

    class Progress(ExtractCallback):
        def __init__(self, bar):
            self.bar = bar

        def report_update(self, decompressed_bytes: str) -> None:
            self.bar.update(int(decompressed_bytes))

        def report_start_preparation(self) -> None: ...
        def report_start(self, processing_file_path: str, processing_bytes: str) -> None: ...
        def report_end(self, processing_file_path: str, wrote_bytes: str) -> None: ...
        def report_warning(self, message: str) -> None: ...
        def report_postprocess(self) -> None: ...

    try:
        with py7zr.SevenZipFile(archive, "r", password=password) as z:
            members = z.list()
            check_members([m.filename for m in members], archive)
            links = [m.filename for m in members if m.is_symlink]
            if links:
                raise FetchError(f"{archive}: links are not extracted: {links[:5]}")
            total = sum(m.uncompressed or 0 for m in members if not m.is_directory)
            with byte_bar(total, f"unpack {archive.name}", progress) as bar:
                z.extractall(tmp, callback=Progress(bar))
    except (FetchError, OSError):
        raise
    except Exception as err:  # a wrong key decodes to garbage: LZMAError, CrcError, Bad7zFile, TypeError …
        raise _Undecodable(f"{type(err).__name__}: {err}") from err


def _is_encrypted(archive: Path) -> bool:
    import py7zr

    try:
        with py7zr.SevenZipFile(archive, "r") as z:
            return z.needs_password()
    except py7zr.PasswordRequired:  # encrypted headers: even the member names need the password
        return True
    except py7zr.Bad7zFile as err:
        raise FetchError(f"{archive}: not a 7z archive ({err})") from err


def unpack_7z(
    archive: str | Path, target: str | Path, passwords: Sequence[str] = (), *, hint: str = "", progress: bool = False
) -> list[Path]:
    """Extract a 7z ``archive`` into ``target`` → paths of the extracted files.

    An encrypted archive is tried with each of ``passwords`` in turn. Member names are checked
    first (absolute paths, ``..`` and links are refused) and extraction goes through a temporary
    folder, so on any error (:class:`FetchError`, its message ending with ``hint``) nothing is
    left in ``target``. ``progress`` shows a tqdm bar of uncompressed bytes.
    """
    try:
        import py7zr  # noqa: F401
    except ImportError as err:
        raise FetchError(f"{archive}: unpacking 7z archives needs py7zr (pip install py7zr)") from err
    archive = Path(archive)
    if not _is_encrypted(archive):
        try:
            return extract_atomically(target, lambda tmp: _extract_7z(archive, None, tmp, progress))
        except _Undecodable as err:
            raise FetchError(f"{archive}: damaged 7z archive ({err}); nothing was extracted") from err
    if not passwords:
        msg = f"{archive.name} is encrypted and no password was given; nothing was extracted."
        raise FetchError(f"{msg} {hint}".strip())
    for i, password in enumerate(passwords):
        try:
            return extract_atomically(target, lambda tmp, pw=password: _extract_7z(archive, pw, tmp, progress))
        except _Undecodable as err:
            log.info("%s: password %d of %d does not open it (%s)", archive.name, i + 1, len(passwords), err)
    msg = f"{archive.name}: wrong password (tried {len(passwords)}), or a damaged archive; nothing was extracted."
    raise FetchError(f"{msg} {hint}".strip())


def _unpacker(passwords: Sequence[str], hint: str, progress: bool):
    def extract(archive: Path, target: Path) -> list[Path]:
        if archive.name.lower().endswith(".7z"):
            return unpack_7z(archive, target, passwords, hint=hint, progress=progress)
        return unpack(archive, target)

    return extract


def summarize_files(files: list[Path], folder: Path) -> str:
    """``"<n> file(s), <MiB> MiB: <first names relative to folder>, …"``."""
    size = sum(f.stat().st_size for f in files)
    names = ", ".join(str(f.relative_to(folder)) for f in files[:3]) + (", …" if len(files) > 3 else "")
    return f"{len(files)} file(s), {size / 2**20:,.1f} MiB: {names}"


def fetch_record(
    record_id: str | int,
    root: str | Path,
    *,
    only: Sequence[str] | None = None,
    passwords: Sequence[str] = (),
    cfg: FetchConfig | None = None,
    progress: bool = True,
    hint: str = "",
) -> RecordReport:
    """Download the files of Zenodo record ``record_id`` (selected by ``only``, see :func:`select_files`)
    into ``root`` and unpack each archive into ``root/<archive stem>/``.

    Every file is downloaded (or found already correct) before any is unpacked; archives that
    cannot be unpacked (e.g. a wrong password) are reported together in one :class:`FetchError`
    (ending with ``hint``) after the others are done, their verified downloads kept so a rerun
    only unpacks them.
    """
    cfg = cfg or load_fetch_config()
    root = Path(root)
    files = select_files(zenodo_files(record_id, cfg), only)
    report = RecordReport(root, record_id=str(record_id), files=files)
    total = sum(f.size or 0 for f in files)
    with byte_bar(total, f"zenodo {record_id}", progress) as bar:
        for f in files:
            bar.set_postfix_str(f.name, refresh=False)
            file = root / f.name
            download_counted(f.url, file, bar, report, checksum=f.checksum, algorithm=f.algorithm, size=f.size, cfg=cfg)
    extract = _unpacker(passwords, "", progress)  # the hint goes once at the end
    failed = []
    for f in files:
        stem = archive_stem(f.name)
        if stem is None:
            continue
        target = root / stem
        try:
            new = unpack_once(root / f.name, target, f.checksum, extract)
        except FetchError as err:
            failed.append(str(err))
            continue
        report.unpacked.extend(new)
        if new:
            report.extracted[target] = new
            log.info("%s → %s: %s", f.name, target, summarize_files(new, target))
        else:
            log.info("%s: already unpacked in %s", f.name, target)
    if failed:
        kept = f"The downloads are verified and kept in {root}; a rerun only unpacks them."
        raise FetchError("\n".join([*failed, kept, hint]).strip())
    return report


def fetch_her2st_zenodo(
    dest: str | Path,
    *,
    only: Sequence[str] | None = None,
    passwords: Sequence[str] = (),
    record_id: str | int | None = None,
    cfg: FetchConfig | None = None,
    progress: bool = True,
) -> RecordReport:
    """The her2st Zenodo record (``cfg.zenodo.her2st_record``) into ``dest/<cfg.zenodo.her2st_subdir>``.

    ``passwords`` are tried first, then the one in ``$<cfg.zenodo.password_env>`` if set.
    """
    cfg = cfg or load_fetch_config()
    z = cfg.zenodo
    tried = list(passwords) + ([os.environ[z.password_env]] if os.environ.get(z.password_env) else [])
    hint = f"{HER2ST_PASSWORD_HINT} Pass it with --password or set ${z.password_env}."
    record_id = record_id or z.her2st_record
    root = Path(dest) / z.her2st_subdir
    return fetch_record(record_id, root, only=only, passwords=tried, cfg=cfg, progress=progress, hint=hint)
