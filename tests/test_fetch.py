"""The downloader against a local HTTP server with Range support (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

from spotwhisper.io import download_manifest as M
from spotwhisper.io import fetch as F

FAST = F.FetchConfig(chunk_bytes=4096, timeout_s=5.0, retries=2, retry_wait_s=0.01)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-[M]``; can drop the first answer of a file midway."""

    log: ClassVar[list[tuple[str, str | None]]] = []
    drop_once: ClassVar[set[str]] = set()
    ignore_range = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        self.log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and not self.ignore_range:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else end
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start : end + 1]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.drop_once:
            self.drop_once.discard(self.path)
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    """``(base_url, served folder, handler class)`` on 127.0.0.1, a random port, in a thread."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(RangeHandler):
        log: ClassVar[list] = []
        drop_once: ClassVar[set] = set()

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, Handler
    httpd.shutdown()
    httpd.server_close()


def _file(folder: Path, rel: str, data: bytes) -> dict:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _manifest(entries: list[dict], base: str) -> F.DownloadManifest:
    files = [F.ManifestEntry(url=f"{base}/{{ref}}/{e['path']}", **e) for e in entries]
    return F.DownloadManifest("toy", files, dest_subdir="toy", default_ref="v1")


def test_full_download_verify_and_skip(server, tmp_path):
    base, served, handler = server
    payload = os.urandom(50_000)
    entries = [
        {**_file(served / "v1", "data/a.bin", payload), "section": "C2", "kind": "counts"},
        {**_file(served / "v1", "data/b.txt", b"hello\n"), "section": "D1", "kind": "counts"},
        {**_file(served / "v1", "res/shared.csv", b"x,y\n1,2\n")},
    ]
    m = _manifest(entries, base)
    report = F.fetch(m, tmp_path / "dest", cfg=FAST, progress=False)
    assert report.root == tmp_path / "dest" / "toy"
    assert (report.root / "data" / "a.bin").read_bytes() == payload
    assert len(report.downloaded) == 3 and not report.skipped
    assert not list(report.root.rglob("*.part"))

    handler.log.clear()
    again = F.fetch(m, tmp_path / "dest", cfg=FAST, progress=False)
    assert len(again.skipped) == 3 and not again.downloaded and handler.log == []  # nothing requested

    only = F.fetch(m, tmp_path / "other", only=["D1"], cfg=FAST, progress=False)
    assert sorted(p.name for p in only.downloaded) == ["b.txt", "shared.csv"]  # shared files come along
    with pytest.raises(ValueError, match="not a section"):
        M.select(m, ["Z9"])


def test_resume_after_truncated_part(server, tmp_path):
    base, served, handler = server
    payload = os.urandom(30_000)
    e = _file(served, "x.bin", payload)
    dest = tmp_path / "out" / "x.bin"
    dest.parent.mkdir()
    (tmp_path / "out" / "x.bin.part").write_bytes(payload[:12_345])
    seen = []
    assert F.download(f"{base}/x.bin", dest, sha256=e["sha256"], size=e["size"], cfg=FAST, on_bytes=seen.append)
    assert dest.read_bytes() == payload
    assert handler.log == [("/x.bin", "bytes=12345-")]
    assert sum(seen) == len(payload) - 12_345  # only the missing part was transferred


def test_dropped_connection_is_resumed(server, tmp_path):
    base, served, handler = server
    payload = os.urandom(40_000)
    e = _file(served, "y.bin", payload)
    handler.drop_once.add("/y.bin")
    dest = tmp_path / "y.bin"
    F.download(f"{base}/y.bin", dest, sha256=e["sha256"], size=e["size"], cfg=FAST)
    assert dest.read_bytes() == payload
    assert handler.log[0] == ("/y.bin", None) and handler.log[1][1].startswith("bytes=")


def test_server_ignoring_range_restarts(server, tmp_path):
    base, served, handler = server
    handler.ignore_range = True
    payload = os.urandom(10_000)
    e = _file(served, "z.bin", payload)
    dest = tmp_path / "z.bin"
    (tmp_path / "z.bin.part").write_bytes(b"garbage that must not be kept")
    F.download(f"{base}/z.bin", dest, sha256=e["sha256"], size=e["size"], cfg=FAST)
    assert dest.read_bytes() == payload


def test_checksum_mismatch_leaves_no_final_file(server, tmp_path):
    base, served, _ = server
    _file(served, "w.bin", b"the real bytes")
    dest = tmp_path / "w.bin"
    with pytest.raises(F.ChecksumError, match="w.bin: downloaded 14 bytes") as err:
        F.download(f"{base}/w.bin", dest, sha256="0" * 64, size=14, cfg=FAST)
    assert "kept aside" in str(err.value)
    assert not dest.exists() and not (tmp_path / "w.bin.part").exists()
    assert (tmp_path / "w.bin.bad").read_bytes() == b"the real bytes"


def test_http_404_is_a_clear_error(server, tmp_path):
    base, _, _ = server
    with pytest.raises(F.FetchError, match="HTTP 404"):
        F.download(f"{base}/missing.bin", tmp_path / "m.bin", sha256="0" * 64, cfg=FAST)
    assert not (tmp_path / "m.bin").exists()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_unpacking_and_traversal_refusal(server, tmp_path):
    base, served, _ = server
    good = _file(served / "v1", "props/major.zip", _zip({"major/C2-proportion.tsv": b"a\tb\n", "readme.txt": b"r"}))
    m = _manifest([{**good, "unpack": "zip"}], base)
    report = F.fetch(m, tmp_path / "d", cfg=FAST, progress=False)
    root = tmp_path / "d" / "toy"
    assert (root / "props" / "major" / "C2-proportion.tsv").read_bytes() == b"a\tb\n"
    assert sorted(p.name for p in report.unpacked) == ["C2-proportion.tsv", "readme.txt"]
    assert F.fetch(m, tmp_path / "d", cfg=FAST, progress=False).unpacked == []  # unpacked once

    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip({"ok.txt": b"fine", "../../escaped.txt": b"bad"}))
    target = tmp_path / "target"
    with pytest.raises(F.FetchError, match="unsafe path"):
        F.unpack(evil, target)
    assert not (tmp_path / "escaped.txt").exists() and not (target / "ok.txt").exists()
    assert not target.exists()  # nothing half-extracted; the folder it created is gone too


def test_tar_unpacking_refuses_links(tmp_path):
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        data = b"spots"
        info = tarfile.TarInfo("sub/file.tsv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert [p.read_bytes() for p in F.unpack(good, tmp_path / "g")] == [b"spots"]
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(F.FetchError, match="links or special files"):
        F.unpack(evil, tmp_path / "e")


def test_file_urls(tmp_path):
    src = tmp_path / "src.bin"
    payload = os.urandom(5000)
    src.write_bytes(payload)
    dest = tmp_path / "o" / "src.bin"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "src.bin.part").write_bytes(payload[:1000])
    F.download(src.as_uri(), dest, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), cfg=FAST)
    assert dest.read_bytes() == payload


def test_her2st_manifest_matches_reference_copy(data_dir):
    """The shipped manifest is what make_manifest computes from the reference her2st folder."""
    shipped = json.loads((M.RESOURCES / "her2st_manifest.json").read_text())
    m = M.load_manifest("her2st")
    assert len(m.entries) == len(shipped["files"]) == 108
    kinds = {e.kind for e in m.entries}
    assert {"counts", "spots", "image", "pathology_labels", "clusters", "deconvolution", "tls_signature"} <= kinds
    c2 = [e for e in M.select(m, ["C2"]) if e.section == "C2"]
    assert {e.kind for e in c2} == {"counts", "spots", "image", "clusters"}
    root = data_dir / "her2st"
    for e in m.entries:
        assert M.sha256_file(root / e.path) == e.sha256 and (root / e.path).stat().st_size == e.size
        assert e.url.startswith("https://raw.githubusercontent.com/almaan/her2st/{ref}/")


def test_make_manifest_cli(tmp_path):
    root = tmp_path / "her2st"
    (root / "data" / "ST-cnts").mkdir(parents=True)
    (root / "data" / "ST-cnts" / "C9.tsv.gz").write_bytes(b"x")
    out = tmp_path / "m.json"
    assert M.main(["--make-manifest", str(root), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["files"] == [
        {
            "path": "data/ST-cnts/C9.tsv.gz",
            "url": "https://raw.githubusercontent.com/almaan/her2st/{ref}/data/ST-cnts/C9.tsv.gz",
            "size": 1,
            "sha256": hashlib.sha256(b"x").hexdigest(),
            "kind": "counts",
            "section": "C9",
        }
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the expected files"):
        M.make_manifest(tmp_path / "empty")
