"""Download public data sets: resumable, checksum-verified, atomic.

A manifest (``spotwhisper/resources/<name>_manifest.json``) lists every file with its relative
path, URL (``{ref}`` is replaced by a git ref), size in bytes and sha256. :func:`fetch` puts the
files under ``dest/<dest_subdir>/<path>``:

* a partial download is kept as ``<file>.part`` and resumed with an HTTP ``Range`` request;
* the checksum (sha256 here; :func:`download` takes any :mod:`hashlib` algorithm) is checked
  before the file is renamed into place (``os.replace``), so a final file is always complete
  and correct; a mismatch moves the data aside to ``<file>.bad`` and raises :class:`ChecksumError`;
* files already present with the right hash are skipped;
* entries with ``"unpack": "zip"|"tar"`` are extracted after download, refusing members that
  would land outside the target folder.

her2st: the files come from the GitHub repository ``almaan/her2st``. Its Zenodo record 3957257
(full-resolution H&E images of all sections, as AES-encrypted 7z archives; the passwords are
published in the almaan/her2st README) is fetched by :mod:`spotwhisper.io.zenodo` with the same
machinery, verified against the md5 sums Zenodo lists, and unpacked with ``py7zr``
(``spotwhisper data fetch her2st-zenodo --dest DIR --password PW``).

Manifests are described in :mod:`spotwhisper.io.download_manifest`; the her2st one is rebuilt from a
local copy with ``python -m spotwhisper.io.fetch --make-manifest DIR`` (same as ``python -m spotwhisper.io.download_manifest``).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..config import load_config
from .download_manifest import (  # noqa: F401 - re-exported: the manifest is part of the fetch API
    HER2ST_HEADER,
    HER2ST_LAYOUT,
    DownloadManifest,
    ManifestEntry,
    hash_file,
    load_manifest,
    main,
    make_manifest,
    safe_relpath,
    select,
    sha256_file,
    write_json_atomic,
)

log = logging.getLogger(__name__)

BAD_SUFFIX = ".bad"
PART_SUFFIX = ".part"
HTTP_RANGE_NOT_SATISFIABLE = 416
#: HTTP statuses worth retrying (server busy or failing for a moment).
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass
class ZenodoConfig:
    """Zenodo records (``zenodo:`` in ``configs/fetch.yaml``; used by :mod:`spotwhisper.io.zenodo`)."""

    api_base: str = "https://zenodo.org/api"  #: REST API; ``{api_base}/records/{id}`` lists a record (file:// works)
    her2st_record: str = "3957257"  #: her2st full-resolution images (Andersson et al. 2021)
    her2st_subdir: str = "her2st/zenodo"  #: where under the data directory the record goes
    password_env: str = "SPOTWHISPER_HER2ST_PASSWORD"  #: environment variable holding a 7z password


@dataclass
class FetchConfig:
    """Download settings (``configs/fetch.yaml``)."""

    chunk_bytes: int = 1 << 20  #: bytes read per network call
    timeout_s: float = 60.0  #: socket timeout per request (s)
    retries: int = 3  #: further attempts after a dropped connection or a 5xx answer (each resumes)
    retry_wait_s: float = 2.0  #: pause before a retry (s), doubled each time
    user_agent: str = "spotwhisper-fetch"
    zenodo: ZenodoConfig = field(default_factory=ZenodoConfig)


def load_fetch_config() -> FetchConfig:
    """``configs/fetch.yaml`` (shipped with the package; a missing file is an error)."""
    return load_config(FetchConfig, "fetch")


class FetchError(Exception):
    """A download failed (network, HTTP status, bad manifest or archive)."""


class ChecksumError(FetchError):
    """A downloaded file does not have the size or checksum its source (manifest, Zenodo record) lists."""


@dataclass
class FetchReport:
    """What :func:`fetch` did: file paths downloaded, skipped (already correct) and unpacked."""

    root: Path
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    unpacked: list[Path] = field(default_factory=list)


def open_url(url: str, offset: int, cfg: FetchConfig):
    """Open ``url`` from byte ``offset`` → ``(stream, resumed, total size or None)``."""
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if not path.exists():
            raise FetchError(f"{url}: no such file")
        fh = open(path, "rb")
        fh.seek(offset)
        return fh, offset > 0, path.stat().st_size
    req = urllib.request.Request(url, headers={"User-Agent": cfg.user_agent})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    resp = urllib.request.urlopen(req, timeout=cfg.timeout_s)
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            resp.close()
            raise FetchError(f"{url}: server answered the range request with {resp.headers.get('Content-Range')!r}")
        return resp, True, int(m.group(2)) if m.group(2) != "*" else None
    length = resp.headers.get("Content-Length")
    return resp, False, int(length) if length else None


def _transfer(url: str, part: Path, cfg: FetchConfig, on_bytes: Callable[[int], None]) -> None:
    """Append the rest of ``url`` to ``part`` (restarting when the server ignores ``Range``)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        stream, resumed, total = open_url(url, offset, cfg)
    except urllib.error.HTTPError as err:
        if err.code == HTTP_RANGE_NOT_SATISFIABLE and offset:
            return  # .part already holds every byte; the checksum decides
        raise
    with stream:
        if offset and not resumed:
            on_bytes(-offset)  # the server sends everything again
        with open(part, "ab" if resumed else "wb") as out:
            while block := stream.read(cfg.chunk_bytes):
                out.write(block)
                on_bytes(len(block))
    got = part.stat().st_size
    if total is not None and got < total:  # urllib returns short reads silently
        raise ConnectionError(f"connection closed after {got} of {total} bytes")


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    cfg: FetchConfig | None = None,
    on_bytes: Callable[[int], None] | None = None,
    checksum: str | None = None,
    algorithm: str = "sha256",
) -> bool:
    """Download ``url`` to ``dest`` unless it is already there with this checksum.

    The expected hex digest is ``sha256``, or ``checksum`` computed with the :mod:`hashlib`
    ``algorithm`` (e.g. ``"md5"`` for Zenodo); ``size`` is in bytes. Resumes from
    ``dest + ".part"``; retries dropped connections and 5xx answers ``cfg.retries`` times.
    ``on_bytes(n)`` is called with every chunk's size (negative when restarting).
    Returns ``True`` when it downloaded, ``False`` when the file was already correct.
    Raises :class:`ChecksumError` (the bad data is kept aside as ``dest + ".bad"``) or
    :class:`FetchError`.
    """
    if (sha256 is None) == (checksum is None):
        raise TypeError("download() needs exactly one of sha256= or checksum=")
    if sha256 is not None:
        checksum, algorithm = sha256, "sha256"
    checksum = checksum.lower()
    cfg = cfg or FetchConfig()
    dest = Path(dest)
    on_bytes = on_bytes or (lambda n: None)
    if dest.exists() and (size is None or dest.stat().st_size == size) and hash_file(dest, algorithm) == checksum:
        return False
    if dest.exists():
        log.warning("%s: present but its checksum differs from the expected one; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    if part.exists() and size is not None and part.stat().st_size > size:
        on_bytes(-part.stat().st_size)
        part.unlink()
    wait = cfg.retry_wait_s
    for attempt in range(cfg.retries + 1):
        try:
            _transfer(url, part, cfg, on_bytes)
            break
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_STATUSES or attempt == cfg.retries:
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            if attempt == cfg.retries:
                raise FetchError(f"{url}: download failed after {cfg.retries + 1} attempts ({err})") from err
        log.info("%s: attempt %d failed; resuming in %.1f s", url, attempt + 1, wait)
        time.sleep(wait)
        wait *= 2
    got_size = part.stat().st_size if part.exists() else 0
    got = hash_file(part, algorithm) if part.exists() else ""
    if got != checksum or (size is not None and got_size != size):
        bad = dest.with_name(dest.name + BAD_SUFFIX)
        if part.exists():
            os.replace(part, bad)
        raise ChecksumError(
            f"{dest.name}: downloaded {got_size} bytes with {algorithm} {got[:16]}…, but its source lists "
            f"{size} bytes with {algorithm} {checksum[:16]}… (from {url}); the data is kept aside as {bad}. "
            "The source may have changed since its checksum was recorded."
        )
    os.replace(part, dest)
    return True


def check_members(names: list[str], where: str | Path) -> None:
    """Raise :class:`FetchError` naming ``where`` when a member/file name is absolute or holds ``..``."""
    try:
        for n in names:
            safe_relpath(n, where=str(where))
    except ValueError as err:
        raise FetchError(str(err)) from err


def extract_atomically(target: str | Path, extract: Callable[[Path], None]) -> list[Path]:
    """Run ``extract(tmp)`` into a temporary folder inside ``target``, then move the files into place.

    Returns the final paths of the files. When ``extract`` raises, nothing is moved, the
    temporary folder is removed, and so is ``target`` if this call created it.
    """
    target = Path(target)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target))
    try:
        try:
            extract(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created and not any(target.iterdir()):
                target.rmdir()
            raise
        out = []
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            final = target / f.relative_to(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, final)
            out.append(final)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_zip_or_tar(archive: Path, tmp: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                check_members(zf.namelist(), archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                check_members([m.name for m in members], archive)
                odd = [m.name for m in members if not (m.isfile() or m.isdir())]
                if odd:
                    raise FetchError(f"{archive}: links or special files are not extracted: {odd[:5]}")
                # members are checked above (names, no links); the "data" filter needs Python ≥ 3.11.4 / 3.10.12
                tf.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        else:
            raise FetchError(f"{archive}: neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        raise FetchError(f"{archive}: {err}") from err


def unpack(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip or tar ``archive`` into ``target`` → paths of the extracted files.

    Every member is checked first: absolute paths, ``..``, links and device files are refused
    (:class:`FetchError`) before anything is written. Extraction goes to a temporary folder that
    is moved into place file by file, so a failure leaves no partial tree.
    """
    archive = Path(archive)
    return extract_atomically(target, lambda tmp: _extract_zip_or_tar(archive, tmp))


def unpack_once(
    archive: Path, target: Path, version: str, extract: Callable[[Path, Path], list[Path]] = unpack
) -> list[Path]:
    """``extract(archive, target)`` unless the marker ``target/.<archive name>.unpacked`` holds ``version``
    (the archive's checksum) → extracted paths (``[]`` when skipped). The marker is written last."""
    marker = target / f".{archive.name}.unpacked"
    if marker.exists() and marker.read_text().strip() == version:
        return []
    files = extract(archive, target)
    marker.write_text(version)
    return files


def byte_bar(total: int, desc: str, progress: bool) -> tqdm:
    """A tqdm bar counting ``total`` bytes (hidden when not ``progress``)."""
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress)


def download_counted(
    url: str,
    file: Path,
    bar: tqdm,
    report: FetchReport,
    *,
    checksum: str,
    algorithm: str,
    size: int | None,
    cfg: FetchConfig,
) -> None:
    """:func:`download` one file, advancing the byte ``bar`` and listing it in ``report``."""
    part = file.with_name(file.name + PART_SUFFIX)
    if part.exists():
        bar.update(part.stat().st_size)
    if download(url, file, checksum=checksum, algorithm=algorithm, size=size, cfg=cfg, on_bytes=bar.update):
        report.downloaded.append(file)
    else:
        report.skipped.append(file)
        bar.update(size or 0)


def fetch(
    manifest: DownloadManifest | str | Path,
    dest: str | Path,
    *,
    only: list[str] | None = None,
    ref: str | None = None,
    cfg: FetchConfig | None = None,
    progress: bool = True,
) -> FetchReport:
    """Download the files of ``manifest`` (selected by ``only``, see :func:`select`) under ``dest``.

    ``ref`` replaces ``{ref}`` in the URLs (default: the manifest's ``default_ref``).
    Returns a :class:`FetchReport`; the data set folder is ``report.root``.
    """
    manifest = manifest if isinstance(manifest, DownloadManifest) else load_manifest(manifest)
    cfg = cfg or load_fetch_config()
    root = Path(dest) / manifest.dest_subdir if manifest.dest_subdir else Path(dest)
    entries = select(manifest, only)
    report = FetchReport(root)
    total = sum(e.size or 0 for e in entries)
    with byte_bar(total, manifest.name, progress) as bar:
        for e in entries:
            file = root / safe_relpath(e.path, "manifest")
            url = e.url.replace("{ref}", ref or manifest.default_ref)
            bar.set_postfix_str(PurePosixPath(e.path).name, refresh=False)
            try:
                download_counted(url, file, bar, report, checksum=e.sha256, algorithm="sha256", size=e.size, cfg=cfg)
            except ChecksumError as err:
                raise ChecksumError(f"{err} Try another --ref, or report it.") from err
            if e.unpack:
                target = root / safe_relpath(e.unpack_to, "manifest") if e.unpack_to else file.parent
                report.unpacked.extend(unpack_once(file, target, e.sha256))
    return report


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
