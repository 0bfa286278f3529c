"""The web page export as a user opens it: `diycnn train` and `diycnn export --format webpage` in new
processes, the folder served by a plain static server (python -m http.server), Chromium with a fake
webcam. The page's answers for uploaded photos (real JPEGs, an EXIF-rotated one, a grey one, a PNG with
transparency) must equal `diycnn predict` on the same files within 1e-4, "none of these" included; the
webcam preview must answer; and the page must open again and predict with the network gone. The TF.js
export's JavaScript snippet, pasted into a page beside its folder, must answer the same."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diycnn.exports.tfjs_format import find_tfjs
from tests.conftest import SHARED, TINY_SPEC, make_dataset
from tests.test_contract import _user_env, diycnn
from tests.test_reports_browser import CHROMIUM, FLAGS, pytestmark  # noqa: F401  (same skip rule)
from tests.webapp.test_browser import CAMERA, wait_js

ATOL = 1e-4


def _photos(folder: Path) -> list[Path]:
    """Photos a user might pick: real JPEGs where the shared data is there, plus files made here."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    real = sorted((SHARED / "hymenoptera" / "val" / "bees").glob("*.jpg"))[:3] if SHARED.is_dir() else []
    base = Image.fromarray(rng.integers(0, 256, (90, 140, 3), dtype=np.uint8)).resize((280, 180))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show it upright
    base.save(folder / "rotated.jpg", quality=90, exif=exif.tobytes())
    base.convert("L").save(folder / "grey.jpg", quality=90)
    rgba = np.dstack([np.asarray(base), np.where(rng.random((180, 280)) < 0.3, 0, 255).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    made = [folder / "rotated.jpg", folder / "grey.jpg", folder / "transparent.png"]
    return [*real, *made]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if find_tfjs() is None:
        pytest.skip("needs Node.js and TensorFlow.js (make install: diycnn weights fetch)")
    root = tmp_path_factory.mktemp("webpage")
    data = make_dataset(root / "data", {"red": 16, "blue": 16})
    (root / "tiny.yaml").write_text(TINY_SPEC)
    run, page = root / "run", root / "page"
    diycnn("train", str(data), "--model", str(root / "tiny.yaml"), "--epochs", "2", "--out", str(run), cwd=root)
    diycnn("export", str(run), "--format", "webpage", "--out", str(page), cwd=root)
    diycnn("export", str(run), "--format", "tfjs", "--out", str(root / "tfjs"), cwd=root)
    photos = _photos(root / "photos")
    want = json.loads(diycnn("predict", str(run), *map(str, photos), "--json", cwd=root).stdout)
    return {"root": root, "page": page, "photos": photos, "want": want,
            "names": json.loads((run / "model.json").read_text())["class_names"]}


@pytest.fixture
def static_server(exported):
    yield from _serve(exported["page"])


def _serve(folder: Path):
    """python -m http.server on `folder`, as a user would serve it: yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(folder)], env=_user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://localhost:{port}/"
    proc.terminate()
    proc.wait(timeout=10)


def _answers(page, count: int) -> dict[str, dict]:
    wait_js(page, f"document.querySelectorAll('li.result[data-done]').length >= {count}", timeout=120_000)
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('li.result')].map(li => {
        const box = li.querySelector('.prediction');
        return [li.dataset.file, {probabilities: box.dataset.probabilities ? JSON.parse(box.dataset.probabilities) : null,
                                 score: box.dataset.unknownScore, label: box.dataset.label || null}];
    }))""")


def _check(answers: dict[str, dict], exported) -> None:
    names = exported["names"]
    for photo, want in zip(exported["photos"], exported["want"]):
        got = answers[photo.name]
        assert got["probabilities"] is not None, f"the page could not read {photo.name}"
        np.testing.assert_allclose(got["probabilities"], [want["probabilities"][c] for c in names], atol=ATOL,
                                   err_msg=f"the page's probabilities for {photo.name}")
        assert float(got["score"]) == pytest.approx(want["unknown_score"], abs=ATOL), photo.name
        assert got["label"] == want["label"], photo.name


@pytest.mark.slow
def test_webpage_predicts_as_the_run_in_chromium_and_offline(exported, static_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS + CAMERA)
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        page.goto(static_server)
        wait_js(page, "document.body.dataset.ready === '1'", timeout=60_000)
        assert "wasm" in page.inner_text("#status")

        page.set_input_files("#upload", [str(p) for p in exported["photos"]])
        _check(_answers(page, len(exported["photos"])), exported)

        page.click("#camera")  # the fake camera's test pattern, classified frame after frame
        wait_js(page, "Number(document.getElementById('live').dataset.frames || 0) >= 2", timeout=60_000)
        live = json.loads(page.get_attribute("#live", "data-probabilities"))
        assert len(live) == len(exported["names"]) and sum(live) == pytest.approx(1, abs=1e-4)
        assert page.get_attribute("#live", "data-label") in [*exported["names"], "unknown"]
        page.click("#camera")

        # every file kept by the page's service worker: it opens and predicts with no network
        assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        wait_js(page, "navigator.serviceWorker.controller !== null", timeout=30_000)
        context.set_offline(True)
        page.reload()
        wait_js(page, "document.body.dataset.ready === '1'", timeout=60_000)
        page.set_input_files("#upload", [str(exported["photos"][0])])
        answers = _answers(page, 1)
        got = answers[exported["photos"][0].name]["probabilities"]
        np.testing.assert_allclose(got, [exported["want"][0]["probabilities"][c] for c in exported["names"]], atol=ATOL)
        browser.close()
    assert not errors, errors


def test_webpage_export_is_refused_for_face_cropped_runs():
    from diycnn.settings import export_formats_for

    assert "webpage" in export_formats_for("spec")
    assert "webpage" in export_formats_for("backbone", "tf_efficientnet_lite0")
    assert "webpage" not in export_formats_for("spec", faces=True)
    assert "webpage" not in export_formats_for("backbone", "face_recognition_net")
    assert "webpage" not in export_formats_for("backbone", "convnext_tiny")


SNIPPET_PAGE = """<!doctype html><meta charset="utf-8"><body>
<script src="tf/tf-core.min.js"></script><script src="tf/tf-backend-cpu.min.js"></script>
<script src="tf/tf-layers.min.js"></script><script src="predict.js"></script><script src="snippet.js"></script>"""
SNIPPET_JS = """(async () => {  // the snippet as pasted, in a file of its own (its comments name <script> tags)
  const img = new Image();
  img.src = new URLSearchParams(location.search).get("photo");
  document.body.append(img);
  await img.decode();
  await tf.setBackend("cpu");
CODE
  window.result = {probabilities: Array.from(answer.probabilities), unknown_score: answer.unknown_score,
                   unknown: answer.unknown};
})().catch((err) => { window.result = {error: String(err && err.stack || err)}; });
"""


@pytest.mark.slow
def test_the_tfjs_snippet_pasted_into_a_page_answers_as_the_run(exported, tmp_path):
    """The JavaScript that the tfjs export's README.txt (and the app) give, as pasted into a page served beside
    the folder (TF.js' scripts from the pinned packages instead of the CDN, which tests cannot reach)."""
    import shutil

    from playwright.sync_api import sync_playwright

    from diycnn.exports.snippets import snippets

    folder = tmp_path / "site"
    shutil.copytree(exported["root"] / "tfjs", folder)
    shutil.copytree(exported["page"] / "tf", folder / "tf")
    info = json.loads((folder / "export.json").read_text())
    (code,) = [s["code"] for s in snippets(info) if s["language"] == "JavaScript"]
    assert "diycnnPredict.predict" in code and "predict.json" in code
    (folder / "snippet.html").write_text(SNIPPET_PAGE)
    (folder / "snippet.js").write_text(SNIPPET_JS.replace("CODE", code))
    names = exported["names"]
    for photo in exported["photos"]:
        shutil.copyfile(photo, folder / photo.name)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        for address in _serve(folder):
            for photo, want in zip(exported["photos"], exported["want"]):
                page.goto(f"{address}snippet.html?photo={photo.name}")
                wait_js(page, "window.result !== undefined", timeout=60_000)
                got = page.evaluate("window.result")
                assert "error" not in got, got
                np.testing.assert_allclose(got["probabilities"], [want["probabilities"][c] for c in names], atol=ATOL,
                                           err_msg=f"the snippet's probabilities for {photo.name}")
                assert got["unknown_score"] == pytest.approx(want["unknown_score"], abs=ATOL), photo.name
                assert got["unknown"] == (want["label"] == "unknown"), photo.name
        browser.close()
