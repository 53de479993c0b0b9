"""A hostile client against the real server (127.0.0.1, the mini C2 collection): files, sessions, uploads.

Two browsers, each with its own client cookie: the victim (``a``) searches and is served files;
the attacker (``b``, or no cookie at all) replays what issue 25 found, over raw HTTP and the
Gradio queue protocol (``tests/security_support.py``), and every attack must be refused while the
victim's files and session survive:

1. the file route with ``%3F`` / ``%253F`` / ``..`` tricks in the raw request target;
2. an upload event naming another session's file (``FileData`` with its path);
3. another session's heartbeat (whose disconnect fires unload), event stream and events;
5. a tiled 100,000² px TIFF of 80 KB (bounded CPU and memory); repeated raw uploads (per-client
   quota, unused uploads deleted promptly);
7. a lone surrogate in a query; a 0 × 0 TIFF; a spot table with duplicate centres; a bad CSV.
"""

from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_he
from spotwhisper.ui.chat import message_text
from tests.security_support import RawClient, file_data, outputs, running_app, tiff_bomb

pytest.importorskip("gradio")
ANSWER, GALLERY = 0, 7  #: the chat history and top-tile gallery among the chat event's outputs
UPLOAD_STATUS = 0  #: the upload event's first output: the status sentence


@pytest.fixture(scope="module")
def server(mini_collection, tmp_path_factory):
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    data = tmp_path_factory.mktemp("sec-data")
    with running_app(open_engine(name, index_dir=index_dir), data) as info:
        yield info


@pytest.fixture(scope="module")
def victim(server):
    """Browser ``a`` asked a question: its session holds an answer and the tiles served to it."""
    a = RawClient(server["port"])
    done = a.call("chat", ["show me tumour", [], None])
    assert done.get("success"), done
    tiles = [t["image"]["path"] for t in outputs(done)[GALLERY]]
    assert tiles and all(Path(p).is_file() for p in tiles)
    return {"client": a, "tiles": tiles, "bytes": {p: Path(p).read_bytes() for p in tiles}}


def _intact(server, victim) -> None:
    """The victim's session is open and every file served to it is still there, unchanged, and its own."""
    a = victim["client"]
    assert a.session in server["store"].ids()
    for p, data in victim["bytes"].items():
        assert Path(p).read_bytes() == data
        assert a.fetch(p) == (200, data)


@pytest.mark.parametrize("trick", ["/tmp/x%3F/../..", "/tmp/x%253F/../..", "/tmp/../..", "/tmp/x%3F/%2E%2E/.."])
def test_file_route_tricks_are_refused(server, victim, trick):
    """Attack 1: the owner check must see the path Gradio serves, whatever the request target hides."""
    b = RawClient(server["port"])
    target = victim["tiles"][0]
    assert b.fetch(target)[0] == 403
    for cookie in ("own", None, "made-up"):
        status, body = b.fetch(trick + target, cookie=cookie)
        assert status in (403, 404), (trick, cookie, status)
        assert body != victim["bytes"][target]
    for route in ("/gradio_api/file/", "/file="):  # Gradio's other spellings of the file route
        status, _, body = b.request("GET", route + trick.lstrip("/") + target)
        assert status in (403, 404) and body != victim["bytes"][target]
    _intact(server, victim)


def test_upload_cannot_take_another_sessions_file(server, victim):
    """Attack 2: an upload event naming the victim's served file is refused; nothing is copied or deleted."""
    b = RawClient(server["port"])
    target = victim["tiles"][1]
    done = b.call("upload", [file_data(target), None, "", 0.5, False, None])
    status = outputs(done)[UPLOAD_STATUS] if done.get("success") else str(done)
    assert "not uploaded by this browser" in status, status
    assert "Added" not in status
    _intact(server, victim)
    sess = server["store"].get(b.session)
    assert sess is None or (not sess.slides and not (sess.folder / "uploads").exists())
    # nor a file the victim uploaded and has not used yet
    a = victim["client"]
    st, paths = a.upload("mine.png", _png_bytes(300, 400))
    assert st == 200
    done = b.call("upload", [file_data(paths[0]), None, "", 0.5, False, None])
    assert "not uploaded by this browser" in (outputs(done)[UPLOAD_STATUS] if done.get("success") else str(done))
    assert Path(paths[0]).is_file()


def test_another_session_cannot_be_closed_or_read(server, victim):
    """Attack 3: another browser's (or no cookie's) heartbeat of the victim's session is refused, so its
    disconnect fires no unload; the victim's event stream and events are refused to others as well."""
    a, b = victim["client"], RawClient(server["port"])
    for cookie in ("own", None):
        assert b.heartbeat(a.session, cookie=cookie) == 403
    _intact(server, victim)
    assert b.request("GET", f"/gradio_api/queue/data?session_hash={a.session}")[0] == 403
    done = b.call("chat", ["show me stroma", [], None], session=a.session)
    assert not done.get("success")
    _intact(server, victim)
    # the owner's own tab closing does close it (unload still works)
    c = RawClient(server["port"])
    assert c.call("chat", ["show me stroma", [], None]).get("success")
    sess = server["store"].get(c.session)
    served = list(sess.files)
    assert c.heartbeat(c.session) == 200
    deadline = time.monotonic() + 10
    while c.session in server["store"].ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c.session not in server["store"].ids() and not any(Path(p).exists() for p in served)


def test_lone_surrogate_in_a_query_is_answered(server):
    """Attack 7: ``\\ud800`` in a message must not break the event stream (nor the next request)."""
    a = RawClient(server["port"])
    done = a.call("chat", ["show me tumour \ud800", [], None], timeout=60)
    assert done.get("success"), done
    text = message_text(outputs(done)[ANSWER][-1]["content"])
    assert "tumour" in text and "\ud800" not in text
    assert a.call("chat", ["show me stroma", [], None], timeout=60).get("success")


def _png_bytes(h: int, w: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(synthetic_he((h, w), seed=3)).save(buf, format="PNG")
    return buf.getvalue()


def _upload(client: RawClient, files: list[tuple[str, bytes]], mpp: float | None, name: str = "") -> str:
    """Upload ``files`` (image, optional spot table) raw, then run the upload event → its status sentence."""
    paths = []
    for fname, content in files:
        st, got = client.upload(fname, content)
        assert st == 200, got
        paths.append(got[0])
    spots = file_data(paths[1]) if len(paths) > 1 else None
    done = client.call("upload", [file_data(paths[0]), spots, name, mpp, False, None], timeout=120)
    assert done.get("success"), done  # a message, not a generic error
    return outputs(done)[UPLOAD_STATUS]


def test_the_same_upload_may_be_sent_again(server):
    """When µm/px is asked for, the user clicks again with the same files: the session's copy is used."""
    a = RawClient(server["port"])
    st, paths = a.upload("again.png", _png_bytes(300, 400))
    assert st == 200
    for _ in range(2):
        done = a.call("upload", [file_data(paths[0]), None, "", None, False, None])
        assert "µm per pixel unknown" in outputs(done)[UPLOAD_STATUS], done
    assert not Path(paths[0]).exists()  # Gradio's copy went; the session folder holds the upload
    sess = server["store"].get(a.session)
    assert [p.name for p in (sess.folder / "uploads").rglob("*.png")] == ["again.png"]


def test_tiled_tiff_bomb_is_refused_from_its_header(server, tmp_path):
    """Attack 5: an 80 KB TIFF claiming 100,000² px (10 Gpx, ~30 GB to inflate) is refused from its header,
    within a few CPU seconds and without memory growth."""
    import psutil

    bomb = tiff_bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 200_000
    a = RawClient(server["port"])
    proc, peak = psutil.Process(), [0]
    rss0 = proc.memory_info().rss
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    try:
        status = _upload(a, [("bomb.tif", bomb.read_bytes())], 0.5)
    finally:
        stop.set()
        watcher.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    assert "bomb.tif" in status and "CPU" in status and "upload_budget.max_cpu_s" in status, status
    assert cpu < 10 and time.monotonic() - t0 < 60, f"refusing took {cpu:.1f} CPU s"
    assert (peak[0] - rss0) / 2**20 < 300


def test_broken_uploads_get_a_message_naming_the_file(server, tmp_path):
    """Attack 7: a 0 × 0 TIFF, spot tables with duplicate centres (with and without µm/px), a bad CSV."""
    import tifffile

    a = RawClient(server["port"])
    zero = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(zero, np.zeros((0, 0), np.uint8))
    for mpp in (None, 0.5):
        status = _upload(a, [("empty.tif", zero.read_bytes())], mpp)
        assert "empty.tif" in status and "no pixels" in status, status
    png = _png_bytes(900, 1100)
    table = "x,y\n" + "\n".join(["400,450"] * 20) + "\n" + "\n".join(f"{100 + 60 * i},{200}" for i in range(10))
    for mpp in (None, 0.5):
        status = _upload(a, [("he.png", png), ("dups.csv", table.encode())], mpp)
        assert "dups.csv" in status and "same centre" in status and "Added" not in status, status
    for bad in (b"\x00\xff\xfe garbage \x00" * 50, b"a;b\n1;2\n"):
        status = _upload(a, [("he.png", png), ("bad.csv", bad)], None)
        assert "bad.csv" in status and "µm per pixel unknown" not in status, status
    sess = server["store"].get(a.session)
    assert sess is not None and not sess.slides


def test_raw_uploads_have_a_per_client_quota_and_unused_ones_go(mini_collection, tmp_path):
    """Attack 5: raw uploads never used count against their browser only, up to ``client_upload_mb``, and are
    deleted after ``upload_unused_ttl_s``, so they cannot fill the server's storage."""
    from spotwhisper.search.engine import open_engine

    index_dir, name = mini_collection
    data = tmp_path / "data"
    with running_app(open_engine(name, index_dir=index_dir), data, client_upload_mb=1, upload_unused_ttl_s=2.0,
                     cleanup_interval_s=0.5) as srv:
        b, a = RawClient(srv["port"]), RawClient(srv["port"])
        chunk = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
        codes = [b.upload(f"junk{i}.bin", chunk)[0] for i in range(6)]
        assert codes[:3] == [200, 200, 200] and set(codes[3:]) == {413}, codes
        st, body = b.upload("more.bin", chunk)
        assert st == 413 and b"client_upload_mb" in body
        assert a.upload("honest.bin", chunk)[0] == 200  # another browser is not affected
        assert b.upload("nocookie.bin", chunk, cookie=None)[0] == 403  # uploads belong to a browser
        held = sum(f.stat().st_size for f in (data / "gradio").rglob("*") if f.is_file())
        assert held < 1.5 * 4 * len(chunk)
        deadline = time.monotonic() + 15
        while any((data / "gradio").rglob("*.bin")) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not any((data / "gradio").rglob("*.bin")), "unused uploads were not deleted"
        assert b.upload("again.bin", chunk)[0] == 200  # quota released with them
