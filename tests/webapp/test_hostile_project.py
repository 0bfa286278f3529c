"""A project folder prepared by an attacker (a zip from a 'friend'), opened with `diycnn ui` in
headless Chromium: hostile run metadata, a report that tries to call the API, symlinks out of the
project, HTML and SVG files among the photos, odd folder names and a class called 'train'. The page
listens for dialogs and every request: nothing may execute, nothing outside the project may be
served, and the page must still work."""

from __future__ import annotations

import json
import unicodedata

import pytest

from diycnn.webapp.project import APP_DIR
from diycnn.webapp.server import create_app
from tests.conftest import make_dataset, serving
from tests.test_reports_browser import CHROMIUM, FLAGS, pytestmark  # noqa: F401  (same skip rule)

# Each payload, if it ever ran, would create a class folder named 'pwned' through the API
# (it sends the X-Diycnn header a same-origin script can send) and open a dialog.
ATTACK = ("fetch('/api/classes',{method:'POST',headers:{'X-Diycnn':'1','Content-Type':'application/json'},"
          "body:JSON.stringify({name:'pwned'})});alert(1)")
IMG = f'<img src=x onerror="{ATTACK}">'
SCRIPT = f"<script>{ATTACK}</script>"


def build_project(root, secret):
    make_dataset(root, {"red": 4, "blue": 4})
    make_dataset(root / "tmp", {"red": 2})
    (root / "tmp" / "red").rename(root / "train")  # a class named like a split folder
    (root / "tmp").rmdir()
    make_dataset(root / "tmp", {"blue": 1})
    (root / "tmp" / "blue").rename(root / "what?")  # a name the app would not create
    (root / "tmp").rmdir()
    make_dataset(root / "tmp", {"blue": 1})
    (root / "tmp" / "blue").rename(root / unicodedata.normalize("NFD", "été"))  # as macOS writes it
    (root / "tmp").rmdir()
    (root / "red" / "zz.jpg").symlink_to(secret)
    (root / "red" / "info.html").write_text(f"<html><body>{SCRIPT}</body></html>")
    (root / "red" / "logo.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg">{SCRIPT}</svg>')
    run = root / APP_DIR / "runs" / "evil"
    run.mkdir(parents=True)
    names = [IMG, "blue"]
    (run / "model.json").write_text(json.dumps({
        "format": "diycnn-run", "format_version": 1, "status": "complete", "created": "2026-01-01T00:00:00",
        "name": IMG, "model": {"name": IMG, "spec": {}}, "class_names": names}))
    (run / "metrics.json").write_text(json.dumps({
        "class_names": names, "test_accuracy": 0.5, "test_loss": 0.7, "counts": {"train": 4, "val": 2, "test": 2},
        "per_class": {n: {"recall": 0.5, "support": 1} for n in names}, "confusion_matrix": [[1, 0], [1, 0]],
        "auto": {"winner": SCRIPT}}))
    (run / "report.html").write_text(f"<html><body><h1>report</h1>{SCRIPT}{IMG}</body></html>")
    return root


@pytest.fixture
def hostile(tmp_path, offline):
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    root = build_project(tmp_path / "from-a-friend", secret)
    with serving(create_app(root)) as url:
        yield url, root


@pytest.mark.slow
def test_a_hostile_project_runs_nothing_serves_nothing_outside_and_still_works(hostile):
    from playwright.sync_api import sync_playwright

    url, root = hostile
    dialogs, writes, bodies = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: writes.append(f"{r.method} {r.url}") if r.method not in ("GET", "HEAD") else None)
        response = page.goto(url)
        assert "script-src 'self'" in response.headers["content-security-policy"]

        # the hostile run's metadata is shown, as text
        page.wait_for_selector("#per-class")
        shown = page.text_content("#evaluation")
        assert IMG in shown and SCRIPT in shown
        assert page.locator("#evaluation img, #evaluation script").count() == 0
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0

        # every folder is listed, odd ones with a warning badge; 'train' is an ordinary class
        names = page.eval_on_selector_all(".class-card", "cards => cards.map(c => c.dataset.name)")
        assert {"red", "blue", "train", "what?", unicodedata.normalize("NFD", "été")} <= set(names)
        assert page.locator('.class-card[data-name="what?"] [data-testid="class-warning"]').is_visible()

        # the report of a hostile run opens sandboxed: its script cannot reach the API
        report = browser.new_page()
        report.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        report.on("request", lambda r: writes.append(f"{r.method} {r.url}") if r.method not in ("GET", "HEAD") else None)
        r = report.goto(f"{url}/runs/evil/report.html")
        assert r.status == 200 and "sandbox" in r.headers["content-security-policy"]
        report.wait_for_timeout(500)
        # photos: a link to a file outside the project is not served; HTML/SVG files are not served as documents
        for name, status in (("zz.jpg", 404), ("info.html", 415), ("logo.svg", 415)):
            for thumb in (0, 1):
                r = report.goto(f"{url}/api/classes/red/photos/{name}?thumb={thumb}")
                bodies.append(r.body())
                assert r.status in (status, 404, 422) and "text/html" not in r.headers["content-type"], (name, thumb)
        report.wait_for_timeout(300)

        # ... and the page still works: a class can be added from it
        page.fill("#new-class", "fine")
        page.click("#add-class")
        page.locator('.class-card[data-name="fine"]').wait_for()
        browser.close()

    assert dialogs == []
    assert not (root / "pwned").exists()
    assert writes == [f"POST {url}/api/classes"]  # only the page's own 'fine'
    assert all(b"OPENSSH" not in b for b in bodies)
    assert (root / "fine").is_dir()
