"""The web app in a real browser (Debian's chromium via Playwright, fake webcam): create classes,
upload photos, record a webcam burst, train a tiny model, see live and uploaded predictions,
per-class results and the confusion matrix, download an export. Screenshots are saved
(and copied to $DIYCNN_SCREENSHOTS when set, which is how docs/ui.png was made)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict
from diycnn.webapp.server import create_app
from tests.conftest import SHARED, photo, serving
from tests.test_reports_browser import CHROMIUM, FLAGS, pytestmark  # noqa: F401  (same skip rule)

CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture
def server(tmp_path, offline):
    with serving(create_app(tmp_path / "project")) as url:
        yield url, tmp_path / "project"


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + CAMERA)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
        # the page must live within its own Content-Security-Policy (no inline script or style)
        page.on("console", lambda m: page.errors.append(f"CSP: {m.text}") if "Content Security Policy" in m.text else None)
        page.on("response", lambda r: page.errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
                if r.status >= 400 else None)
        yield page
        browser.close()


def shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("DIYCNN_SCREENSHOTS"):
        shutil.copy(path, os.path.join(os.environ["DIYCNN_SCREENSHOTS"], f"{name}.png"))
    return path


def wait_js(page, expression, timeout=30_000):
    """Poll a JavaScript expression until it is truthy. Playwright's wait_for_function evaluates
    its predicate with eval, which the page's Content-Security-Policy (rightly) forbids; the
    DevTools protocol's evaluate, used here, is not subject to it."""
    deadline = time.time() + timeout / 1000
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise AssertionError(f"still false after {timeout} ms: {expression}")
        time.sleep(0.1)


def card(page, name):
    return page.locator(f'.class-card[data-name="{name}"]')


@pytest.mark.slow
def test_create_upload_webcam_train_predict_export(server, page, tmp_path):
    url, root = server
    rng = np.random.default_rng(0)
    files = {}
    for cls in ("red", "blue"):
        files[cls] = []
        for i in range(12):
            path = tmp_path / "upload" / cls / f"{cls} photo {i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(cls, rng, size=64).save(path)
            files[cls].append(str(path))
    page.goto(url)
    # a new project opens with two ready classes, as Teachable Machine's does: rename them
    card(page, "Class 2").wait_for()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["Class 1", "Class 2"]
    for old, new in (("Class 1", "red"), ("Class 2", "blue")):
        card(page, old).locator(".class-name").fill(new)
        card(page, old).locator(".class-name").press("Enter")
        card(page, new).wait_for()
    assert card(page, "red").is_visible() and card(page, "blue").is_visible()
    order = "[...document.querySelectorAll('.class-card')].map(c => c.dataset.name)"
    assert page.evaluate(order) == ["red", "blue"]  # creation order, as Teachable Machine keeps it: a rename stays put
    for cls in ("webcam",):
        page.fill("#new-class", cls)
        page.click("#add-class")
        card(page, cls).wait_for()
    page.reload()
    card(page, "webcam").wait_for()
    assert page.evaluate(order) == ["red", "blue", "webcam"]  # and after a reload
    page.fill("#new-class", "../escape")
    page.click("#add-class")
    page.wait_for_selector("#class-msg.error")
    assert "'/'" in page.text_content("#class-msg")
    assert page.errors == [f"HTTP 400 POST {url}/api/classes"]  # the refusal just shown, nothing else
    page.errors.clear()

    for cls in ("red", "blue"):
        card(page, cls).locator("input.files").set_input_files(files[cls])
        wait_js(page, f"document.querySelector('.class-card[data-name=\"{cls}\"] .count').textContent"
                               " === '12 photos'")
    assert len(list((root / "red").iterdir())) == 12
    # drag-and-drop two photos (made in the page) onto 'blue', then remove one with its x button
    page.evaluate("""async () => {
        const dt = new DataTransfer();
        for (const i of [1, 2]) {
            const c = document.createElement('canvas'); c.width = c.height = 48;
            const g = c.getContext('2d'); g.fillStyle = 'rgb(30,30,' + (200 + i) + ')'; g.fillRect(0, 0, 48, 48);
            const blob = await new Promise(r => c.toBlob(r, 'image/png'));
            dt.items.add(new File([blob], 'dropped ' + i + '.png', {type: 'image/png'}));
        }
        document.querySelector('.class-card[data-name="blue"]').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    wait_js(page, "document.querySelector('.class-card[data-name=\"blue\"] .count').textContent"
                           " === '14 photos'")
    assert (root / "blue" / "dropped 1.png").is_file()
    card(page, "blue").locator('.thumb:has(img[title="dropped 2.png"]) button').click(force=True)
    wait_js(page, "document.querySelector('.class-card[data-name=\"blue\"] .count').textContent"
                           " === '13 photos'")
    assert not (root / "blue" / "dropped 2.png").exists()

    # webcam: Chromium's fake camera; hold the record button for a burst
    card(page, "webcam").locator("button.webcam").click()
    wait_js(page, "document.querySelector('.class-card[data-name=\"webcam\"] video').videoWidth > 0")
    hold = card(page, "webcam").locator("button.hold")
    hold.hover()
    page.mouse.down()
    page.wait_for_timeout(2200)
    page.mouse.up()
    wait_js(page, "parseInt(document.querySelector('.class-card[data-name=\"webcam\"] .count').textContent)"
                           " >= 8", timeout=30_000)
    burst = sorted((root / "webcam").iterdir())
    assert len(burst) >= 8 and all(p.suffix == ".jpg" and p.read_bytes()[:2] == b"\xff\xd8" for p in burst)
    shot(page, tmp_path, "ui-classes")

    # train a tiny model in the background; the page stays responsive and shows live curves
    assert page.input_value("#recipe") == "auto"  # the default, as in the CLI and the API
    page.select_option("#recipe", "seed-cnn")
    page.click("#training-col details > summary")
    assert page.get_attribute("#epochs", "placeholder") == "30"  # the recipe's real defaults, not "default"
    page.select_option("#recipe", "tm")
    assert page.locator("#recipe-about").is_visible() and "Teachable Machine" in page.text_content("#recipe-about")
    assert [page.get_attribute(f, "placeholder") for f in ("#epochs", "#batch-size", "#lr")] == ["50", "16", "0.001"]
    page.fill("#epochs", "6")
    page.click("#train")
    page.wait_for_selector("#cancel:not([disabled])")
    assert page.evaluate("fetch('/api/project').then(r => r.ok)")  # responsive while training
    page.reload()  # during training: the job, its status and the chosen recipe are still there
    wait_js(page, "document.querySelector('#train-stage').textContent.startsWith('tm: ')")
    assert page.input_value("#recipe") == "tm"
    page.wait_for_selector("#train-msg.ok", timeout=180_000)
    assert "Done" in page.text_content("#train-msg")
    assert page.locator("#acc-chart circle").count() >= 12  # train + val points for 6 epochs
    page.reload()  # after training: the curves, the status and the recipe survive a reload
    page.wait_for_selector("#train-msg.ok")
    assert "Done" in page.text_content("#train-msg") and page.input_value("#recipe") == "tm"
    assert page.locator("#acc-chart circle").count() >= 12
    # the charts have axes: epoch ticks 1..6 and a title; hovering an epoch reads its values out
    labels = page.locator("#loss-chart text").all_text_contents()
    assert "epoch" in labels and {"1", "6"} <= set(labels)
    page.locator("#loss-chart rect.hover").nth(2).hover()
    assert page.text_content("#loss-chart .readout").startswith("epoch 3: train loss ")
    page.wait_for_selector("#per-class")
    assert page.locator("#per-class tr").count() == 4  # header + 3 classes
    # a few test photos: the 5-fold estimate over all photos is shown too, visibly, with its interval
    assert page.evaluate("fetch('/api/evaluation').then(r => r.json())")["counts"]["test"] < 30
    assert page.locator("[data-testid=cv-accuracy]").is_visible()
    assert "95% CI" in page.text_content("#cross-validation") and "95% CI" in page.text_content("#evaluation")
    cells = page.locator("#confusion td").all_text_contents()
    counts = page.evaluate("fetch('/api/evaluation').then(r => r.json())")["counts"]
    assert sum(map(int, cells)) == counts["test"]
    report = page.get_attribute("#report-link", "href")
    assert page.evaluate(f"fetch('{report}').then(r => r.status)") == 200

    # preview: an uploaded photo, then the live webcam
    blue = tmp_path / "query.jpg"
    photo("blue", np.random.default_rng(99), size=64).save(blue)
    page.set_input_files("#preview-file", str(blue))
    page.wait_for_selector('#bars .bar.top[data-cls="blue"]')
    assert page.locator("#bars .bar").count() == 3
    page.click("#preview-cam-btn")
    page.wait_for_selector('#bars .bar.top[data-cls="webcam"]', timeout=30_000)
    shot(page, tmp_path, "ui")
    page.click("#preview-cam-btn")
    assert page.locator("#bars .bar").count() == 0  # no stale bars once the webcam is off

    # export: only the formats this run supports; an ONNX zip comes down, with code to paste
    options = page.locator("#export-format option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["onnx", "torchscript", "tm", "tfjs", "webpage"] and "Keras export" in page.text_content("#export-about")
    page.select_option("#export-format", "onnx")
    with page.expect_download(timeout=180_000) as dl:
        page.click("#export")
    zipped = zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read()))
    assert any(n.endswith("model.onnx") for n in zipped.namelist())
    snippet = page.locator('pre.snippet[data-language="Python"]')
    snippet.wait_for()
    assert snippet.is_visible() and "Classifier('.')" in snippet.text_content()
    assert page.errors == []


@pytest.mark.slow
def test_suspect_labels_are_moved_or_deleted_in_one_click(tmp_path, offline, page):
    """Two photos filed under the wrong class show up as suspects after training; one is moved to
    the class it belongs to, the other deleted (to the project's trash) -- each after a confirmation."""
    root = tmp_path / "project"
    rng = np.random.default_rng(7)
    for cls in ("red", "blue"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            photo(cls, rng, size=48).save(root / cls / f"{cls}_{i:02d}.png")
    (root / "red" / "red_05.png").rename(root / "blue" / "red_05.png")  # a red photo filed as blue
    (root / "blue" / "blue_05.png").rename(root / "red" / "blue_05.png")  # and a blue one as red
    asked = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    with serving(create_app(root)) as url:
        page.goto(url)
        page.select_option("#recipe", "tm")
        page.click("#training-col details > summary")
        page.fill("#epochs", "5")
        page.click("#train")
        page.wait_for_selector("#train-msg.ok", timeout=180_000)
        page.wait_for_selector("#suspects")
        rows = page.locator('[data-testid="suspect"]')
        texts = rows.all_text_contents()
        assert any("red_05.png" in t and "filed as blue" in t for t in texts), texts
        assert any("blue_05.png" in t and "filed as red" in t for t in texts), texts
        wrong_red = rows.filter(has_text="red_05.png")
        assert wrong_red.locator("img").is_visible()
        wrong_red.get_by_role("button", name="Move to red").click()
        wait_js(page, "[...document.querySelectorAll('[data-testid=suspect]')].some(r => r.textContent.includes('moved to red'))")
        assert (root / "red" / "red_05.png").is_file() and not (root / "blue" / "red_05.png").exists()
        rows.filter(has_text="blue_05.png").get_by_role("button", name="Delete").click()
        wait_js(page, "[...document.querySelectorAll('[data-testid=suspect]')].some(r => r.textContent.includes('trash'))")
        assert not (root / "red" / "blue_05.png").exists()
        assert (root / ".diycnn" / "trash" / "red" / "blue_05.png").is_file()  # moved, never destroyed
        assert len(asked) == 2 and "Move" in asked[0] and "Delete" in asked[1]
        shot(page, tmp_path, "ui-suspects")
    assert page.errors == []


# Two different Hangul syllables must draw differently in the page's font: without a CJK font both
# come out as the same empty box ("tofu").
HANGUL_DRAWS = """(() => {
    const font = getComputedStyle(document.querySelector('.class-name')).font;
    const c = document.createElement('canvas'); c.width = 60; c.height = 40;
    const g = c.getContext('2d');
    const draw = ch => { g.clearRect(0, 0, 60, 40); g.font = font; g.fillText(ch, 4, 30);
                         return g.getImageData(0, 0, 60, 40).data.join(); };
    return draw('아') !== draw('수') && draw('유') !== draw('지');
})()"""


KPOP_TRAIN = SHARED / "kpop_idols" / "train"
CJK_FONT = bool(shutil.which("fc-list")) and bool(subprocess.run(["fc-list", ":lang=ko"], capture_output=True,
                                                                  text=True).stdout.strip())


@pytest.mark.slow
@pytest.mark.parametrize("width, height", [(1280, 800), (800, 1000)])
def test_first_look_at_1280_and_800_pixels_with_hangul_names(tmp_path, offline, page, width, height):
    """The hobbyist's first hour at a laptop's 1280x800 and a narrow 800x1000 window (fake camera on):
    the two ready classes renamed in Hangul, 15 real face photos of two singers uploaded to each,
    files dropped into the folder by hand listed before training, the default-looking recipe
    trained, cancelled and resumed from the page, the cross-validated accuracy with its interval,
    TF.js (1280) and Teachable Machine's format (800) exported from the page and run in TF.js;
    nothing needs sideways scrolling, the columns stack when narrow, and the export stays within
    the first screen of its column."""
    root = tmp_path / "project"
    uploads = {}
    for cls, person in (("아이유", "Dahyun"), ("수지", "Chorong")):  # no duplicates among their first 15
        if KPOP_TRAIN.is_dir():  # real photos (the shared datasets); generated ones elsewhere
            uploads[cls] = [str(f) for f in sorted((KPOP_TRAIN / person).iterdir())[:15]]
            continue
        warnings.warn("$DIYCNN_DATASETS/kpop_idols is missing: the walkthrough uploads generated photos")
        rng = np.random.default_rng(len(cls))
        (tmp_path / "up" / cls).mkdir(parents=True)
        uploads[cls] = []
        for i in range(15):
            photo("red" if cls == "아이유" else "blue", rng, size=48).save(tmp_path / "up" / cls / f"{i:02d}.png")
            uploads[cls].append(str(tmp_path / "up" / cls / f"{i:02d}.png"))
    first, query = (Path(uploads["수지"][i]).name for i in (0, 3))
    page.set_viewport_size({"width": width, "height": height})
    with serving(create_app(root)) as url:
        page.goto(url)
        for old, new in (("Class 1", "아이유"), ("Class 2", "수지")):  # a new project opens with two classes
            card(page, old).wait_for()
            assert card(page, old).is_visible()
            card(page, old).locator(".class-name").fill(new)
            card(page, old).locator(".class-name").press("Enter")
            card(page, new).wait_for()
        for cls, files in uploads.items():
            card(page, cls).locator("input.files").set_input_files(files)
            wait_js(page, f"document.querySelector('.class-card[data-name=\"{cls}\"] .count').textContent"
                          " === '15 photos'")
        assert card(page, "수지").locator(".class-name").input_value() == "수지"
        shutil.copy(root / "수지" / first, root / "수지" / f"copy of {first}")  # dropped in by hand: a duplicate
        (root / "수지" / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")  # and an unreadable file
        whole = (root / "수지" / first).read_bytes()
        (root / "수지" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # and one cut off after a valid header
        page.reload()
        card(page, "수지").wait_for()
        # before training, the card says what training will leave out, and why
        left_out = card(page, "수지").locator(".left-out summary")
        left_out.wait_for()
        assert left_out.is_visible() and "leave out 3 file(s); 15 photo(s) will be used" in left_out.text_content()
        left_out.click()
        reasons = card(page, "수지").locator(".left-out li").all_text_contents()
        assert any("broken.jpg" in r for r in reasons) and any("duplicate" in r for r in reasons), reasons
        assert any("cut.jpg" in r for r in reasons), reasons  # found by decoding as the chosen recipe will
        assert card(page, "아이유").locator(".left-out summary").count() == 0
        if CJK_FONT:
            assert page.evaluate(HANGUL_DRAWS), "Hangul class names draw as empty boxes"
        else:
            warnings.warn("no CJK font installed (.ci/run installs fonts-noto-cjk): Hangul rendering not checked")
        page.select_option("#recipe", "tm")
        page.click("#training-col details > summary")
        page.fill("#epochs", "400")
        assert not page.locator("#resume").is_visible()
        page.click("#train")  # cancelled as soon as it can be, then resumed from the page
        page.wait_for_selector("#cancel:not([disabled])")
        page.click("#cancel")
        page.wait_for_selector("#resume", state="visible", timeout=60_000)
        page.click("#resume")
        page.wait_for_selector("#train-msg.ok", timeout=300_000)
        assert not page.locator("#resume").is_visible()
        assert "(epoch 400/400)" in page.text_content("#train-stage") or "early" in page.text_content("#train-stage")
        page.wait_for_selector("#per-class")
        # 30 photos leave a handful for testing: the 5-fold estimate over all of them leads, with its interval
        assert page.locator("[data-testid=cv-accuracy]").is_visible()
        assert "95% CI" in page.text_content("#cross-validation") and "5-fold" in page.text_content("#cross-validation")
        shot(page, tmp_path, f"ui-{width}")
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
        box = {c: page.locator(f"#{c}-col").bounding_box() for c in ("classes", "training", "preview")}
        if width <= 860:  # one column: classes, then training, then preview, each the page's width
            assert box["classes"]["x"] == box["training"]["x"] == box["preview"]["x"]
            assert box["classes"]["y"] < box["training"]["y"] < box["preview"]["y"]
            page.locator("#preview-col").scroll_into_view_if_needed()
        else:
            assert box["classes"]["y"] == box["training"]["y"] == box["preview"]["y"]  # side by side
        export = page.locator("#export").bounding_box()
        preview = box["preview"]
        assert export["y"] + export["height"] <= preview["y"] + height  # Export within one screen of its column
        assert page.locator("#export").is_visible()
        if find_tfjs() is not None:  # export TF.js (or TM's format) from the page and run the zip in TF.js
            fmt = "tfjs" if width == 1280 else "tm"
            page.select_option("#export-format", fmt)
            with page.expect_download(timeout=300_000) as dl:
                page.click("#export")
            page.locator('pre.snippet[data-language="JavaScript"]').wait_for()
            loads = "tf.loadLayersModel('model.json')" if fmt == "tfjs" else "tmImage.load('model.json', 'metadata.json')"
            assert loads in page.text_content('pre.snippet[data-language="JavaScript"]')
            unzipped = tmp_path / fmt
            zipfile.ZipFile(dl.value.path()).extractall(unzipped)
            (folder,) = unzipped.iterdir()
            ask = urllib.request.Request(f"{url}/api/predict", data=(root / "수지" / query).read_bytes(),
                                         headers={"X-Diycnn": "1"})
            want = json.load(urllib.request.urlopen(ask, timeout=60))["probabilities"]
            from diycnn.data.loader import decode_all
            from diycnn.loading import load

            run = load(next((root / ".diycnn" / "runs").iterdir()))
            assert json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["labels"] == run.class_names
            assert sorted(run.class_names) == ["수지", "아이유"]
            images, _, _ = decode_all([root / "수지" / query], run.preprocessing)
            # the tm recipe's own scaling is [-1, 1]; Teachable Machine's library feeds pixels / 127 - 1
            x = images.astype(np.float32) / (127.5 if fmt == "tfjs" else 127) - 1
            got, _ = tfjs_predict(folder, x)
            assert got[0] == pytest.approx([want[c] for c in run.class_names], abs=0.02)  # the app predicts in bf16 on bf16 CPUs
        # a third class from the webcam at this window size: its card and camera come into view by
        # themselves, and the first hold of the record button records photos
        page.fill("#new-class", "웹캠")
        page.click("#add-class")
        card(page, "웹캠").wait_for()
        card(page, "웹캠").locator("button.webcam").click()
        wait_js(page, "document.querySelector('.class-card[data-name=\"웹캠\"] video').videoWidth > 0")
        hold = card(page, "웹캠").locator("button.hold")
        in_view = ("(() => { const r = document.querySelector('.class-card[data-name=\"웹캠\"] button.hold')"
                   ".getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight + 1; })()")  # + sub-pixel rounding
        wait_js(page, in_view, timeout=5_000)  # scrolled into view by the page, not by the test
        video = card(page, "웹캠").locator("video").bounding_box()
        assert video["width"] > 0 and video["x"] + video["width"] <= width
        box = hold.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.wait_for_timeout(1500)
        page.mouse.up()
        wait_js(page, "parseInt(document.querySelector('.class-card[data-name=\"웹캠\"] .count').textContent) >= 3",
                timeout=30_000)
        assert len(list((root / "웹캠").iterdir())) >= 3
    # the unreadable files' thumbnails are refused (422), as they should be; nothing else failed
    assert [e for e in page.errors if "broken.jpg?thumb=1" not in e and "cut.jpg?thumb=1" not in e] == []
