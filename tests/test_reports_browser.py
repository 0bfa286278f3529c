"""The HTML reports open offline in a real headless browser (Debian's chromium, driven by Playwright)
without JavaScript errors or broken images, and the comparison's confusion cells show their photos.

.ci/run installs chromium; elsewhere these tests skip with a message when it is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

import diycnn
from tests.conftest import TINY_SPEC, make_dataset, offline_env

CHROMIUM = os.environ.get("DIYCNN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not os.path.exists(CHROMIUM),
    reason="needs Playwright for Python and Debian's chromium (apt-get install chromium); .ci/run installs both",
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    with offline_env(root / "cache"):
        data = make_dataset(root / "photos", {"red": 12, "blue": 12, "green": 12})
        (root / "tiny.yaml").write_text(TINY_SPEC)
        (root / "wide.yaml").write_text(TINY_SPEC.replace("name: tiny", "name: wide").replace("filters: 8", "filters: 4"))
        cmp = diycnn.compare(data, [str(root / "tiny.yaml"), str(root / "wide.yaml")], out=root / "cmp", epochs=2)
    return {"run": cmp / "runs" / "tiny" / "report.html", "comparison": cmp / "comparison.html"}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_report(browser, path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors


def broken_images(page) -> int:
    return page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")


@pytest.mark.parametrize("kind", ["run", "comparison"])
def test_report_opens_without_errors_or_broken_images(reports, browser, kind, tmp_path):
    page, errors = open_report(browser, reports[kind])
    assert page.evaluate("document.images.length") >= 3  # curves, confusion, Grad-CAM at least
    assert broken_images(page) == 0
    assert errors == []
    page.screenshot(path=str(tmp_path / f"{kind}.png"), full_page=True)
    assert (tmp_path / f"{kind}.png").stat().st_size > 10_000
    page.close()


def test_clicking_a_confusion_cell_shows_its_photos(reports, browser, tmp_path):
    page, errors = open_report(browser, reports["comparison"])
    cell = page.locator("td.cell[data-m='0'][data-t='0'][data-p='0']")
    count = int(cell.inner_text())
    cell.click()
    caption = page.inner_text("#caption-0")
    assert caption.startswith(f"{count} test photo(s): true blue, predicted blue")
    assert page.locator("#gallery-0 figure").count() == count
    assert "sel" in cell.get_attribute("class")
    assert broken_images(page) == 0 and errors == []
    page.screenshot(path=str(tmp_path / "clicked.png"))
    page.close()


def test_the_run_reports_confusion_cells_show_their_photos_too(reports, browser):
    page, errors = open_report(browser, reports["run"])
    cells = page.locator("td.cell")
    n = int(page.evaluate("Math.sqrt(document.querySelectorAll('td.cell').length)"))
    assert cells.count() == n * n == 9
    total = page.locator("#errors figure").count()
    for t in range(n):
        for p in range(n):
            cell = page.locator(f"td.cell[data-t='{t}'][data-p='{p}']")
            count = int(cell.inner_text())
            cell.click()
            visible = page.locator("#errors figure:visible")
            want = page.locator(f"#errors figure[data-t='{t}'][data-p='{p}']").count()
            assert visible.count() == want and (t != p or want == 0)
            assert all(f.get_attribute("data-t") == str(t) for f in visible.all())
            assert f": {count} test photo(s)" in page.inner_text("#errors-caption")
            cell.click()  # a second click shows every misclassified photo again
            assert page.locator("#errors figure:visible").count() == total
    assert errors == []
    page.close()


HOSTILE_CLASS = "<img src=x onerror=window.pwned=1>"
HOSTILE_FILE = "'><svg onload=window.pwned=2>.png"


def test_hostile_class_and_file_names_stay_text_in_the_run_report(tmp_path, browser):
    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10})
    (data / "blue").rename(data / HOSTILE_CLASS)
    for i, f in enumerate(sorted((data / "red").iterdir())[:4]):  # some hostile file names in each split
        f.rename(f.with_name(f"{i}{HOSTILE_FILE}"))
    with offline_env(tmp_path / "cache"):
        run = diycnn.train(data, model=tiny_spec_path(tmp_path), out=tmp_path / "run", epochs=1, test_split=0.4)
    html = (run.dir / "report.html").read_text()
    assert HOSTILE_CLASS not in html and "<svg onload" not in html
    # the Settings table gives the values used, not None/auto
    assert "<td>None</td>" not in html and "<td>auto</td>" not in html and "<td>cpu (auto)</td>" in html
    assert "Teachable Machine" not in html and "diycnn trained recipe <b>tiny</b>" in html
    page, errors = open_report(browser, run.dir / "report.html")
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("img[src=x]").count() == 0 and page.locator("svg").count() == 0
    assert HOSTILE_CLASS in page.inner_text("body")  # shown, as text
    page.locator("td.cell").first.click()
    assert page.evaluate("window.pwned === undefined") and errors == []
    page.close()


def tiny_spec_path(root):
    path = root / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return str(path)
