"""Many users on one server: two sessions through the Gradio client (real HTTP, real app).

Session A uploads a synthetic slide; session B cannot see it (slide list, "find slides" ranking,
picker), cannot search it, and cannot fetch A's files — not even with a direct GET of their URLs;
B's scores do not change. Files are fetched only by the browser (client cookie) that owns them;
uploads in flight are not served; a session's files go when it is closed or ages out; a
19000 × 19000 px PNG is refused from its header without being decoded; messages show no server paths.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_he

gradio_client = pytest.importorskip("gradio_client")
QUERY = "find slides with tumour"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(mini_collection, tmp_path_factory):
    """The app on 127.0.0.1 over the mini C2 collection, with its data folder in a temp dir."""
    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import load_ui_config

    index_dir, name = mini_collection
    engine = open_engine(name, index_dir=index_dir)
    data = tmp_path_factory.mktemp("ui-data")
    port = _free_port()
    app = launch(engine, port=port, cfg=load_ui_config(data_dir=str(data)), block=False, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "engine": engine, "store": app.spotwhisper_sessions, "data": data}
    finally:
        app.close()


def _client(server):
    return gradio_client.Client(server["url"], verbose=False, download_files=False)


def _path(file_data) -> str:
    """The server path of a FileData-like output (dict or object)."""
    return file_data["path"] if isinstance(file_data, dict) else file_data.path


def _get(server, path: str, cookies: dict | None):
    return httpx.get(f"{server['url']}gradio_api/file={path}", cookies=cookies or {}, timeout=30)


@pytest.fixture(scope="module")
def two_sessions(server, tmp_path_factory):
    """A uploads 'secret.png' (not added to the collection); B only searches."""
    folder = tmp_path_factory.mktemp("upload")
    src = folder / "secret.png"
    Image.fromarray(synthetic_he((900, 1100), seed=5)).save(src)
    a, b = _client(server), _client(server)
    b_before = b.predict(QUERY, [], api_name="/chat")
    out = a.predict(gradio_client.handle_file(str(src)), None, "", 0.5, False, api_name="/upload")
    a_chat = a.predict(QUERY, [], api_name="/chat")
    b_after = b.predict(QUERY, [], api_name="/chat")
    return {"a": a, "b": b, "upload": out, "a_chat": a_chat, "b_before": b_before, "b_after": b_after, "src": src}


def _answer(chat_out) -> str:
    from spotwhisper.ui.chat import message_text

    return message_text(chat_out[0][-1]["content"])


def test_upload_is_seen_and_searched_only_by_its_session(server, two_sessions):
    status, picker = two_sessions["upload"][0], two_sessions["upload"][1]
    assert "Added **secret**" in status and "this session only" in status
    assert str(server["data"]) not in status and "/" not in status.split("`")[0]  # no server paths
    assert picker["value"] == "secret" and {"C2", "secret"} <= {c[0] if isinstance(c, (list, tuple)) else c
                                                               for c in picker["choices"]}
    assert "secret:" in _answer(two_sessions["a_chat"])  # A ranks its own slide
    b_text = _answer(two_sessions["b_after"])
    assert "secret" not in b_text and b_text.startswith("Ranked 1 slide(s)")
    assert _answer(two_sessions["b_before"]) == b_text  # B's scores did not change
    # the shared engine was not touched; B cannot pick A's slide either
    assert server["engine"].slide_names() == ["C2"]
    with pytest.raises(gradio_client.exceptions.AppError, match="not in the list of choices"):
        two_sessions["b"].predict("secret", api_name="/slide")
    shown = two_sessions["a"].predict("secret", api_name="/slide")  # A can show its own slide
    assert any(isinstance(x, str) and "**secret**" in x for x in shown)  # the caption under the viewer
    sessions = [server["store"].get(c.session_hash) for c in (two_sessions["a"], two_sessions["b"])]
    assert list(sessions[0].slides) == ["secret"] and sessions[1].slides == {}


def test_files_are_fetched_only_by_their_browser(server, two_sessions):
    a, b = two_sessions["a"], two_sessions["b"]
    shown = a.predict("show me tumour", [], api_name="/chat")
    gallery = next(x for x in shown if isinstance(x, list) and x and isinstance(x[0], dict) and "image" in x[0])
    overlay = _path(gallery[0]["image"])  # a top tile: a picture served to A's browser
    assert _get(server, overlay, a.cookies).status_code == 200
    assert _get(server, overlay, b.cookies).status_code == 403  # B knows the URL and still cannot fetch it
    assert _get(server, overlay, None).status_code == 403
    assert _get(server, overlay, {"spotwhisper_client": "guess"}).status_code == 403
    exported = a.predict(api_name="/export")
    files = [_path(f) for f in exported[0]]
    assert len(files) == 4 and "Exported 'tumour'" in exported[1]  # CSV, .h5ad, GeoJSON, OME-TIFF
    assert _get(server, overlay, a.cookies).status_code == 200  # exports do not replace the picture
    for f in files:
        assert _get(server, f, a.cookies).status_code == 200 and _get(server, f, b.cookies).status_code == 403
    # the session folder (uploads, processed slide) is never served, not even to its owner
    sess = server["store"].get(a.session_hash)
    kept = next((sess.folder / "uploads").rglob("secret.png"))
    assert kept.read_bytes() == two_sessions["src"].read_bytes()
    assert _get(server, str(kept), a.cookies).status_code == 403
    # Gradio's in-flight copy of the upload is gone
    assert not list(server["store"].gradio_dir.glob("*/secret.png"))
    # a path outside the data folder is not ours to guard: Gradio refuses it itself
    assert _get(server, "/etc/passwd", a.cookies).status_code in (403, 404)


def test_closed_session_loses_its_slides_and_files(server, two_sessions, tmp_path):
    from spotwhisper.ui.sessions import SessionAccessError

    store, a = server["store"], two_sessions["a"]
    c = _client(server)
    c.predict("tumour", [], api_name="/chat")
    sess = store.get(c.session_hash)
    served = list(sess.files)
    assert served and all(Path(p).is_file() for p in served)
    with pytest.raises(SessionAccessError):  # another browser naming this session
        store.session(c.session_hash, "someone-else")
    assert store.close(c.session_hash) and store.get(c.session_hash) is None
    assert not any(Path(p).exists() for p in served) and not sess.folder.exists()
    assert _get(server, served[0], c.cookies).status_code == 403
    # ageing out: idle past session_ttl_s closes it (and files no session owns are swept)
    stray = store.gradio_dir / "left-by-a-crash"
    stray.mkdir()
    old = time.time() - store.cfg.session_ttl_s - 10
    os.utime(stray, (old, old))
    assert a.session_hash in store.ids()
    closed = store.sweep(now=time.time() + store.cfg.session_ttl_s + 1)
    assert closed >= 1 and a.session_hash not in store.ids() and not stray.exists()


def test_huge_image_is_refused_from_its_header(tmp_path):
    """A 1 MB, 19000² px PNG is refused before decoding: peak memory barely moves."""
    from spotwhisper.ui.files import check_image_size, prepare_upload

    big = tmp_path / "bomb.png"
    Image.new("L", (19000, 19000), 255).save(big, optimize=True)
    assert big.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"bomb.png: 19,000 × 19,000 px \(361 Mpx\) is more than this server accepts"):
        prepare_upload(big, None, "bomb", 0.5, max_pixels=150_000_000)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"refusing the image took {grown_mb:.0f} MB: it was decoded"
    small = tmp_path / "ok.png"
    Image.fromarray(synthetic_he((300, 400))).save(small)
    assert check_image_size(small, 150_000_000, 10**10) == (400, 300)
    tif = tmp_path / "big.tif"
    import tifffile

    tifffile.imwrite(tif, np.zeros((64, 64, 3), np.uint8), tile=(32, 32))
    with pytest.raises(ValueError, match="tiled image"):
        check_image_size(tif, 10, 100)
    assert check_image_size(tif, 10, 10_000) == (64, 64)  # tiled: the tiled limit applies


def test_quota_refuses_beyond_the_cap(tmp_path):
    from spotwhisper.ui.config import load_ui_config
    from spotwhisper.ui.sessions import QuotaError, SessionStore

    store = SessionStore(load_ui_config(data_dir=str(tmp_path / "d"), data_max_mb=1))
    sess = store.session("s1", "owner")
    store.reserve(500_000, "x")
    path = store.serve(sess, Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 700, 3), np.uint8)), "noise")
    assert Path(path).stat().st_size > 900_000
    with pytest.raises(QuotaError, match="full"):
        store.reserve(200_000, "the upload")
    store.close("s1")
    store.reserve(200_000, "the upload")


def test_public_text_hides_server_paths():
    from spotwhisper.ui.files import public_text

    msg = public_text("/srv/spotwhisper/ui/sessions/ab12/uploads/20260101/x.png: cannot read image (/usr/lib/x.so)")
    assert msg == "x.png: cannot read image (x.so)"
    assert not re.search(r"/\w+/", public_text("kept at /root/.cache/spotwhisper/ui/sessions/abc/processed/s.h5ad"))


def test_engine_is_safe_for_concurrent_sessions(mini_slide):
    """Threads searching one shared engine (with and without per-session overlays) get the same
    answers as one thread, and the shared engine is not changed by the overlays."""
    from spotwhisper.search.engine import SearchEngine

    engine = SearchEngine(slides={"C2": mini_slide})
    queries = ["tertiary lymphoid structures", "tumour", "immune infiltrate", "adipose tissue", "stroma minus tumour"]
    expected = {q: engine.search(q).slides[0].fused for q in queries}
    other = mini_slide.copy()
    errors, results = [], []

    def run(i: int) -> None:
        try:
            view = engine.overlay({f"U{i}": other}) if i % 2 else engine
            for q in queries:
                res = view.search(q)
                results.append((q, next(h for h in res.slides if h.slide == "C2").fused, view.slide_names()))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 * len(queries)
    assert engine.slide_names() == ["C2"]
    for q, fused, names in results:
        if len(names) == 1:  # the shared engine alone: same numbers as one thread
            np.testing.assert_allclose(fused, expected[q], atol=1e-9)
        else:  # an overlay searched its own slide too
            assert len(names) == 2 and names[0] == "C2"
