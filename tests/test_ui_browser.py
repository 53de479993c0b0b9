"""The UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright), one server per module.

Over the mini C2 collection: a message appears before its answer (searches are slowed down here so
the order is observable) and the ask box stays usable; the slide viewer loads deep-zoom tiles, and
wheel-zoom and drag-pan change the view and fetch deeper tiles; a query lights up numbered regions
and clicking one explains it; "compare A and B" paints two colours; no route ticked shows a message.
Screenshots go to ``tmp_path`` (and ``$SPOTWHISPER_ARTIFACT_DIR`` when set). Without Chromium or
Playwright the tests skip locally and fail under CI (``CI=true``).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
QUERY = "show me immune infiltrate"
SLOW_S = 4.0  #: added to every search while ``slow`` is on


def _missing(msg: str):
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{msg} (required under CI)")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    exe = os.environ.get("SPOTWHISPER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        _missing("Chromium not found (apt-get install -y chromium)")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(chromium, mini_collection, tmp_path_factory):
    """One app over the mini collection for the whole module; ``server["slow"]`` delays searches."""
    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import load_ui_config

    index_dir, name = mini_collection
    engine = open_engine(name, index_dir=index_dir)
    info = {"engine": engine, "slow": False}
    search = engine.search

    def slowed(*args, **kwargs):
        if info["slow"]:
            time.sleep(SLOW_S)
        return search(*args, **kwargs)

    engine.search = slowed
    port = _free_port()
    app = launch(engine, port=port, cfg=load_ui_config(data_dir=str(tmp_path_factory.mktemp("ui-data"))),
                 block=False, quiet=True)
    info["url"] = f"http://127.0.0.1:{port}/"
    try:
        yield info
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server["url"], timeout=60_000)
    page.wait_for_function("document.querySelector('#viewer-main .sw-viewer')?.dataset.view", timeout=60_000)
    page.wait_for_function("document.querySelector('#map-caption')?.innerText.includes('C2')", timeout=60_000)
    yield page
    page.close()


def _viewer(page, key: str = "main") -> dict:
    return page.evaluate(f"Object.assign({{}}, document.querySelector('#viewer-{key} .sw-viewer').dataset)")


def _ask(page, text: str) -> None:
    page.fill("#query textarea", text)
    page.press("#query textarea", "Enter")


def _save(page, tmp_path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    artifacts = os.environ.get("SPOTWHISPER_ARTIFACT_DIR")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)
    return shot


def test_message_appears_before_its_answer(page, server, tmp_path):
    server["slow"] = True
    try:
        start = time.monotonic()
        _ask(page, QUERY)
        page.wait_for_function(f"document.querySelector('#chat').innerText.includes({QUERY!r})", timeout=SLOW_S * 1000)
        shown = time.monotonic() - start
        chat = page.inner_text("#chat")
        assert "Searched 'immune infiltrate'" not in chat  # the answer is still being worked on
        page.wait_for_function("document.querySelector('#chat').innerText.includes('Searching')", timeout=5_000)
        assert page.is_editable("#query textarea")  # the ask box stays usable meanwhile
        page.fill("#query textarea", "typing while it works")
        page.wait_for_function("document.querySelector('#chat').innerText.includes(\"Searched 'immune\")",
                               timeout=60_000)
        answered = time.monotonic() - start
    finally:
        server["slow"] = False
    assert shown < SLOW_S <= answered
    assert page.input_value("#query textarea") == "typing while it works"  # not wiped by the answer
    _save(page, tmp_path, "ui_message_first.png")


def test_query_lights_up_regions_and_a_click_explains(page, server, tmp_path):
    _ask(page, QUERY)
    page.wait_for_function("document.querySelector('#map-caption')?.innerText.includes('region(s)')", timeout=60_000)
    page.wait_for_function("(d => Number(d.regions) > 0 && (d.layer || '').length > 0)"
                           "(document.querySelector('#viewer-main .sw-viewer').dataset)", timeout=30_000)
    hits = server["engine"].search("immune infiltrate")
    regions = hits.slides[0].regions
    assert regions and f"{len(regions)} region(s)" in page.inner_text("#map-caption")
    assert page.locator("#viewer-main .sw-region-label").count() == len(regions)
    assert page.inner_text("#viewer-main .sw-cb-title").startswith("relevance")  # colour bar of the result
    assert f"threshold {server['engine'].cfg.threshold:g}" in page.inner_text("#viewer-main .sw-colourbar")
    assert page.inner_text("#viewer-main .sw-scalebar span").endswith(("µm", "mm"))
    layer = page.request.get(server["url"] + _viewer(page)["layer"])
    rgba = np.asarray(Image.open(io.BytesIO(layer.body())))
    assert layer.status == 200 and (rgba[..., 3] > 200).sum() > 0  # spots above the threshold, opaque
    page.locator("#viewer-main .sw-region-label").first.click()
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Region 1 on C2')", timeout=30_000)
    assert "% of the tissue" in page.inner_text("#chat")
    _save(page, tmp_path, "ui_regions.png")


def test_zoom_and_pan_change_the_view(page, tmp_path):
    tiles: list[str] = []
    page.on("request", lambda r: tiles.append(r.url) if "/slide_files/" in r.url else None)
    before = [float(v) for v in _viewer(page)["view"].split(",")]
    box = page.locator("#viewer-main .sw-osd").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    levels_before = {int(u.split("/slide_files/")[1].split("/")[0]) for u in tiles}
    page.mouse.move(cx, cy)
    for _ in range(4):
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(250)
    page.wait_for_timeout(1200)
    zoomed = [float(v) for v in _viewer(page)["view"].split(",")]
    assert zoomed[2] < 0.6 * before[2]  # narrower viewport = zoomed in
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 200, cy - 120, steps=10)
    page.mouse.up()
    page.wait_for_timeout(1200)
    panned = [float(v) for v in _viewer(page)["view"].split(",")]
    assert panned[2] == pytest.approx(zoomed[2], rel=1e-3)  # same zoom
    assert panned[0] > zoomed[0] and panned[1] > zoomed[1]  # dragged up-left = view moves right-down
    levels = {int(u.split("/slide_files/")[1].split("/")[0]) for u in tiles}
    assert levels and max(levels) > max(levels_before | {0})  # deeper (sharper) tiles were fetched
    _save(page, tmp_path, "ui_zoomed.png")


def test_comparison_shows_two_colours(page, server, tmp_path):
    from spotwhisper.ui.layers import CLASS_COLOURS

    _ask(page, "compare immune infiltrate and invasive cancer")
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Compared on C2')", timeout=60_000)
    page.wait_for_function("(document.querySelector('#viewer-main .sw-viewer').dataset.layer || '').length > 0",
                           timeout=30_000)
    legend = page.inner_text("#viewer-main .sw-colourbar")
    assert "A: immune infiltrate" in legend and "B: invasive cancer" in legend
    layer = np.asarray(Image.open(io.BytesIO(page.request.get(server["url"] + _viewer(page)["layer"]).body())))
    seen = {"#{:02X}{:02X}{:02X}".format(*px) for px in layer[layer[..., 3] > 0][:, :3]}
    assert {CLASS_COLOURS[1], CLASS_COLOURS[2]} <= seen  # only-A and only-B spots both painted
    page.wait_for_timeout(1500)
    shot = np.asarray(Image.open(_save(page, tmp_path, "ui_compare.png")).convert("RGB")).astype(int)
    box = page.locator("#viewer-main .sw-osd").bounding_box()
    view = shot[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    r, g, b = view[..., 0], view[..., 1], view[..., 2]
    blue = ((b - r > 60) & (b - g > 20)).sum()  # A (#0072B2) blended over the H&E
    orange = ((r - b > 90) & (g - b > 40)).sum()  # B (#E69F00)
    assert blue > 200 and orange > 200


def test_no_route_ticked_gives_a_message_not_a_stale_map(page):
    _ask(page, QUERY)
    page.wait_for_function("document.querySelector('#chat').innerText.includes('why (region 1')", timeout=60_000)
    page.wait_for_timeout(500)
    for _ in range(10):  # untick every box (a box the server re-ticks while busy is unticked again)
        ticked = [b for b in page.locator("#routes input[type=checkbox]").all() if b.is_checked()]
        if not ticked:
            break
        ticked[0].click()
        page.wait_for_timeout(800)
    page.wait_for_function("getComputedStyle(document.querySelector('#viewer-main .sw-message')).display !== 'none'",
                           timeout=30_000)
    assert "tick at least one route" in page.inner_text("#viewer-main .sw-message")
    assert "layer" not in _viewer(page)  # the heat map is gone
    assert "tick at least one route" in page.inner_text("#map-caption")
