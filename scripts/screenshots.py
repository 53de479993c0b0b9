"""Regenerate the README's screenshots of the UI (docs/screenshots/*.png) from a built collection.

Serves the UI over the collection (default: the demo collection that ``spotwhisper demo`` builds),
drives it in headless Chromium like a user — ask a question, zoom into the best region, compare two
things, show a second slide side by side — and saves one PNG per step, reduced to 256 colours so
the files stay small. Needs Playwright and Chromium (``/usr/bin/chromium`` or ``$SPOTWHISPER_CHROMIUM``).

    python scripts/screenshots.py [--collection demo] [--index-dir DIR] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 960}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_small(png: bytes, path: Path) -> Path:
    """Write a screenshot as a 256-colour PNG (a few hundred kB instead of megabytes)."""
    import io

    img = Image.open(io.BytesIO(png)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def _ask(page, text: str, done_js: str) -> None:
    page.fill("#query textarea", text)
    page.press("#query textarea", "Enter")
    page.wait_for_function(done_js, timeout=180_000)
    page.wait_for_timeout(2500)  # tiles and the heat map settle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collection", default="demo")
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--query", default="tertiary lymphoid structures")
    ap.add_argument("--compare", default="compare tumour and stroma")
    ap.add_argument("--chromium", default=os.environ.get("SPOTWHISPER_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from spotwhisper.search.engine import open_engine
    from spotwhisper.ui.app import launch
    from spotwhisper.ui.config import load_ui_config

    engine = open_engine(args.collection, args.index_dir)
    names = engine.slide_names()
    best = engine.search(args.query).slides[0].slide
    other = next((s for s in names if s != best), None)
    port = _free_port()
    data = tempfile.mkdtemp(prefix="spotwhisper-screens-")
    app = launch(engine, port=port, cfg=load_ui_config(data_dir=data), block=False, quiet=True)
    written = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
            page.wait_for_function("document.querySelector('#viewer-main .sw-viewer')?.dataset.view", timeout=120_000)
            if page.input_value("#slide-picker input") != best:
                page.locator("#slide-picker input").fill(best)
                page.keyboard.press("Enter")
                page.wait_for_timeout(2000)
            _ask(page, f"show me {args.query}", "document.querySelector('#map-caption')?.innerText.includes('region')"
                 " && document.querySelector('#chat').innerText.includes('why (region 1')")
            written.append(save_small(page.screenshot(), args.out / "search.png"))
            label = page.locator("#viewer-main .sw-region-label").first
            if label.count():
                box = label.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                for _ in range(5):
                    page.mouse.wheel(0, -300)
                    page.wait_for_timeout(300)
                page.wait_for_timeout(3000)
                written.append(save_small(page.screenshot(), args.out / "zoomed.png"))
            page.evaluate("window.swViewers.main.viewport.goHome(true)")  # back to the whole tissue
            _ask(page, args.compare, "document.querySelector('#chat').innerText.includes('Compared on')")
            written.append(save_small(page.screenshot(), args.out / "compare.png"))
            if other:
                _ask(page, f"show me {args.query}", "document.querySelector('#chat').innerText.split('Compared on')"
                     ".pop().includes('why (region 1')")
                page.locator("#second-picker input").fill(other)
                page.keyboard.press("Enter")
                page.wait_for_function("document.querySelector('#viewer-second .sw-viewer')?.dataset.layer",
                                       timeout=120_000)
                page.wait_for_timeout(3000)
                written.append(save_small(page.screenshot(), args.out / "side_by_side.png"))
            browser.close()
    finally:
        app.close()
    for path in written:
        print(f"{path}  {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
