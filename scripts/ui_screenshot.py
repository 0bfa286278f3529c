"""Make docs/ui.png: the web app on 20 ants and 20 bees from $DIYCNN_DATASETS/hymenoptera,
after training `tm` from the page and previewing one validation photo.

    DIYCNN_OFFLINE=1 .venv/bin/python scripts/ui_screenshot.py [docs/ui.png]

The project is a temporary folder (the shared data is only read)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from diycnn.webapp.server import create_app

DATA = Path(os.environ.get("DIYCNN_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets") / "hymenoptera"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui.png").resolve()
    work = Path(tempfile.mkdtemp(prefix="diycnn-ui-"))
    uploads = {c: sorted((DATA / "train" / c).glob("*.jpg"))[:20] for c in ("ants", "bees")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(work / "insects"), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://localhost:{port}/")
        for cls, files in uploads.items():
            page.fill("#new-class", cls)
            page.click("#add-class")
            page.locator(f'.class-card[data-name="{cls}"] input.files').set_input_files([str(f) for f in files])
            page.wait_for_function(f"document.querySelector('.class-card[data-name=\"{cls}\"] .count')"
                                   f".textContent === '{len(files)} photos'")
        page.select_option("#recipe", "tm")
        page.click("#train")
        page.wait_for_selector("#train-msg.ok", timeout=600_000)
        page.wait_for_selector("#per-class")
        page.set_input_files("#preview-file", str(sorted((DATA / "val" / "bees").glob("*.jpg"))[3]))
        page.wait_for_selector("#bars .bar.top")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    server.should_exit = True
    shutil.rmtree(work)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
