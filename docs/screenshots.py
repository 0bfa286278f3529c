"""Retake the README's web-app screenshots (docs/ui.png at 1280x800, docs/ui-800.png at 800x1000).

A hobbyist's first hour: two people, 15 photos each (kpop_idols from $DIYCNN_DATASETS, copied
into a temporary project; the data folder is never written to), class names in Hangul, the
face-probe recipe, then a photo previewed. Needs Debian's chromium and the face weights.

    .venv/bin/python docs/screenshots.py [--data $DIYCNN_DATASETS/kpop_idols/train]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.conftest.serving, tests.test_reports_browser.CHROMIUM

from diycnn.webapp.server import create_app  # noqa: E402
from tests.conftest import serving  # noqa: E402
from tests.test_reports_browser import CHROMIUM, FLAGS  # noqa: E402

PEOPLE = {"Irene": "아이린", "Seulgi": "슬기"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(os.environ.get("DIYCNN_DATASETS") or HERE.parent.parent / "shared" / "datasets") / "kpop_idols" / "train"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "idols"
        query = None
        for person, name in PEOPLE.items():
            photos = sorted((Path(args.data) / person).iterdir())
            (root / name).mkdir(parents=True)
            for f in photos[:15]:
                shutil.copy(f, root / name / f.name)
            query = query or photos[-1]
        with serving(create_app(root)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.select_option("#recipe", "face-probe")
            page.click("#train")
            page.wait_for_selector("#train-msg.ok", timeout=600_000)
            page.wait_for_selector("#per-class")
            page.set_input_files("#preview-file", str(query))
            page.wait_for_selector("#bars .bar.top")
            page.locator("#loss-chart rect.hover").nth(3).hover(force=True)
            page.screenshot(path=str(HERE / "ui.png"))
            page.set_viewport_size({"width": 800, "height": 1000})
            page.screenshot(path=str(HERE / "ui-800.png"))
            browser.close()
    print(f"wrote {HERE / 'ui.png'} and {HERE / 'ui-800.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
