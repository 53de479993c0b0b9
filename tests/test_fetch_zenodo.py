"""The Zenodo downloader against a fake record on disk (file:// URLs, real py7zr archives)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spotwhisper.cli import main as cli_main
from spotwhisper.io import fetch as F
from spotwhisper.io import zenodo as Z

py7zr = pytest.importorskip("py7zr")

RECORD = "3957257"
PASSWORD = "s3cret-AES"
ENV = F.ZenodoConfig().password_env


def _jpeg() -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def _7z(path: Path, members: dict[str, bytes], password: str | None = None, header_encryption: bool = False) -> Path:
    """A 7z archive (AES-256 when ``password`` is given) holding ``members``."""
    with py7zr.SevenZipFile(path, "w", password=password, header_encryption=header_encryption) as z:
        for name, data in members.items():
            z._writestr(data, name)  # the public writestr refuses '../' names, which one test needs
    return path


def _entry(path: Path, shape: str = "current") -> dict:
    data = path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    if shape == "current":  # https://zenodo.org/api/records/<id> today
        return {"id": "f-" + path.name, "key": path.name, "size": len(data), "checksum": f"md5:{md5}",
                "links": {"self": path.as_uri()}}  # fmt: skip
    # the older deposit shape: bare md5, "links.self" is metadata, the bytes are at "links.download"
    return {"id": "f-" + path.name, "filename": path.name, "filesize": len(data), "checksum": md5,
            "links": {"self": "https://zenodo.org/api/deposit/depositions/1/files/x", "download": path.as_uri()}}  # fmt: skip


class FakeZenodo:
    """``<tmp>/served`` (the archives) and ``<tmp>/api/records/<id>`` (the record JSON)."""

    def __init__(self, tmp: Path):
        self.served = tmp / "served"
        self.served.mkdir()
        self.jpeg = _jpeg()
        self.tsv = b"gene\tC2x1\nERBB2\t7\n"
        _7z(self.served / "ST-imgs.7z", {"C2/HE_BT23450_C2.jpg": self.jpeg}, PASSWORD, header_encryption=True)
        _7z(self.served / "ST-cnts.7z", {"C2.tsv": self.tsv})  # not encrypted
        (self.served / "README.txt").write_text("her2st full-resolution images\n")
        self.api = tmp / "api"
        self.cfg = F.FetchConfig(chunk_bytes=4096, timeout_s=5.0, retries=0, retry_wait_s=0.01)
        self.cfg.zenodo.api_base = self.api.as_uri()
        self.write_record()

    def write_record(self, shape: str = "current") -> None:
        files = [_entry(self.served / n, shape) for n in ("ST-imgs.7z", "ST-cnts.7z", "README.txt")]
        record = {"id": int(RECORD), "metadata": {"title": "her2st"}, "files": files}
        (self.api / "records").mkdir(parents=True, exist_ok=True)
        (self.api / "records" / RECORD).write_text(json.dumps(record))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    return FakeZenodo(tmp_path)


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_download_verify_unpack_then_rerun_skips(fake, tmp_path):
    dest = tmp_path / "data"
    report = Z.fetch_her2st_zenodo(dest, passwords=[PASSWORD], cfg=fake.cfg, progress=False)
    root = dest / "her2st" / "zenodo"
    assert report.root == root and sorted(p.name for p in report.downloaded) == ["README.txt", "ST-cnts.7z", "ST-imgs.7z"]
    assert (root / "ST-imgs" / "C2" / "HE_BT23450_C2.jpg").read_bytes() == fake.jpeg
    assert (root / "ST-cnts" / "C2.tsv").read_bytes() == fake.tsv
    assert not (root / "README").exists()  # not an archive: downloaded only
    assert set(report.extracted) == {root / "ST-imgs", root / "ST-cnts"}
    md5 = hashlib.md5((fake.served / "ST-imgs.7z").read_bytes()).hexdigest()
    assert (root / "ST-imgs" / ".ST-imgs.7z.unpacked").read_text() == md5
    assert not list(root.rglob("*.part")) and not list(root.rglob(".unpack-*"))

    before = _mtimes(root)
    for f in fake.served.iterdir():  # a rerun must not read the files again
        f.unlink()
    again = Z.fetch_her2st_zenodo(dest, passwords=[PASSWORD], cfg=fake.cfg, progress=False)
    assert len(again.skipped) == 3 and not again.downloaded and not again.unpacked
    assert _mtimes(root) == before


def test_env_password_and_only(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, PASSWORD)
    report = Z.fetch_her2st_zenodo(tmp_path / "d", only=["ST-imgs"], cfg=fake.cfg, progress=False)
    assert [p.name for p in report.downloaded] == ["ST-imgs.7z"]
    assert [p.read_bytes() for p in report.unpacked] == [fake.jpeg]
    with pytest.raises(ValueError, match="no such file in the record.*ST-cnts.7z"):
        Z.fetch_her2st_zenodo(tmp_path / "d", only=["ST-nope"], cfg=fake.cfg, progress=False)


def test_corrupted_download_is_refused(fake, tmp_path):
    archive = fake.served / "ST-cnts.7z"
    data = bytearray(archive.read_bytes())
    data[40] ^= 0xFF  # the record still lists the md5 of the good bytes
    archive.write_bytes(bytes(data))
    root = tmp_path / "d" / "her2st" / "zenodo"
    with pytest.raises(F.ChecksumError, match=r"ST-cnts.7z: downloaded \d+ bytes with md5"):
        Z.fetch_her2st_zenodo(tmp_path / "d", only=["ST-cnts.7z"], cfg=fake.cfg, progress=False)
    assert not (root / "ST-cnts.7z").exists() and not (root / "ST-cnts.7z.part").exists()
    assert (root / "ST-cnts.7z.bad").read_bytes() == bytes(data)
    assert not (root / "ST-cnts").exists()


@pytest.mark.parametrize("passwords", [[], ["wrong"]], ids=["missing", "wrong"])
def test_bad_password_extracts_nothing(fake, tmp_path, passwords):
    dest = tmp_path / "d"
    root = dest / "her2st" / "zenodo"
    with pytest.raises(F.FetchError, match="nothing was extracted") as err:
        Z.fetch_her2st_zenodo(dest, passwords=passwords, cfg=fake.cfg, progress=False)
    msg = str(err.value)
    assert "github.com/almaan/her2st" in msg and ENV in msg and "ST-imgs.7z" in msg
    assert ("wrong password" if passwords else "no password was given") in msg
    assert not (root / "ST-imgs").exists()  # no files, no marker, not even the folder
    assert (root / "ST-cnts" / "C2.tsv").read_bytes() == fake.tsv  # the other archive still unpacked
    kept = (root / "ST-imgs.7z").stat().st_mtime_ns

    report = Z.fetch_her2st_zenodo(dest, passwords=["wrong", PASSWORD], cfg=fake.cfg, progress=False)
    assert (root / "ST-imgs.7z").stat().st_mtime_ns == kept and not report.downloaded  # only unpacked now
    assert [p.read_bytes() for p in report.unpacked] == [fake.jpeg]


@pytest.mark.parametrize("password", [None, PASSWORD])
def test_member_outside_target_is_refused(tmp_path, password):
    evil = _7z(tmp_path / "evil.7z", {"ok.txt": b"fine", "../escaped.txt": b"bad"}, password)
    target = tmp_path / "out" / "evil"
    with pytest.raises(F.FetchError, match="unsafe path '../escaped.txt'"):
        Z.unpack_7z(evil, target, [PASSWORD] if password else [])
    assert not (tmp_path / "out" / "escaped.txt").exists() and not target.exists()


def test_older_record_shape_downloads_too(fake, tmp_path):
    fake.write_record("deposit")
    files = Z.zenodo_files(RECORD, fake.cfg)
    first = files[0]
    assert (first.name, first.algorithm, first.url) == ("ST-imgs.7z", "md5", (fake.served / "ST-imgs.7z").as_uri())
    report = Z.fetch_her2st_zenodo(tmp_path / "d", passwords=[PASSWORD], cfg=fake.cfg, progress=False)
    assert len(report.downloaded) == 3 and fake.jpeg in [p.read_bytes() for p in report.unpacked]


def test_parse_record_shapes_and_bad_entries():
    md5 = "0123456789abcdef0123456789abcdef"
    legacy = {"files": [{"bucket": "b1", "key": "a.7z", "size": 9, "checksum": f"md5:{md5}", "type": "7z",
                         "links": {"self": "https://zenodo.org/api/files/b1/a.7z"}}]}  # fmt: skip
    rdm = {"files": {"enabled": True, "entries": {"a.7z": {"key": "a.7z", "size": 9, "checksum": f"md5:{md5}",
           "links": {"self": "https://x/api/records/1/files/a.7z", "content": "https://x/api/records/1/files/a.7z/content"}}}}}  # fmt: skip
    assert Z.parse_record(legacy, 1, "https://zenodo.org/api") == [
        Z.ZenodoFile("a.7z", "https://zenodo.org/api/files/b1/a.7z", 9, md5, "md5")
    ]
    assert Z.parse_record(rdm, 1, "https://x/api")[0].url.endswith("/a.7z/content")
    no_link = {"files": [{"key": "b c.7z", "checksum": f"md5:{md5}"}]}
    assert Z.parse_record(no_link, 7, "https://zenodo.org/api/")[0].url == "https://zenodo.org/api/records/7/files/b%20c.7z/content"
    with pytest.raises(F.FetchError, match="unsafe path"):
        Z.parse_record({"files": [{"key": "../../x.7z", "checksum": f"md5:{md5}"}]}, 1, "")
    with pytest.raises(F.FetchError, match="no checksum"):
        Z.parse_record({"files": [{"key": "x.7z"}]}, 1, "")
    with pytest.raises(F.FetchError, match="lists no files"):
        Z.parse_record({"metadata": {}}, 1, "")


def test_missing_record_is_a_clear_error(fake):
    with pytest.raises(F.FetchError, match="no such file"):
        Z.zenodo_files("999", fake.cfg)


def test_cli_list_and_fetch(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(F, "load_fetch_config", lambda: fake.cfg)
    assert cli_main(["data", "fetch", "her2st-zenodo", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "ST-imgs.7z" in listed and "md5:" in listed
    monkeypatch.setenv(ENV, PASSWORD)
    dest = tmp_path / "data"
    assert cli_main(["data", "fetch", "her2st-zenodo", "--dest", str(dest), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 file(s) downloaded" in out and f"unpacked into {dest / 'her2st' / 'zenodo' / 'ST-imgs'}" in out
    assert cli_main(["data", "fetch", "her2st", "--dest", str(dest), "--password", "x"]) == 1
    assert "--password does not apply to her2st" in capsys.readouterr().err
    monkeypatch.delenv(ENV)
    assert cli_main(["data", "fetch", "her2st-zenodo", "--dest", str(tmp_path / "d2"), "--no-progress"]) == 1
    assert "no password was given" in capsys.readouterr().err
    assert os.listdir(tmp_path / "d2" / "her2st" / "zenodo") != []  # the verified downloads are kept
