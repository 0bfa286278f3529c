"""The web app opened on a project folder someone else made, through its JSON API: odd folder
names, links leaving the project, files that are not photos, damaged run metadata, huge images,
concurrent exports and slow predictions. Each case answers with a 4xx and a one-line reason (or
works), never a 500, a traceback or a file from outside the project."""

from __future__ import annotations

import json
import threading
import time
import unicodedata

import numpy as np
import pytest
from fastapi.testclient import TestClient

import diycnn
from diycnn.webapp.project import APP_DIR
from diycnn.webapp.server import create_app
from tests.conftest import TINY_SPEC, encoded, make_dataset, photo, serving

H = {"X-Diycnn": "1"}


def png(kind="red", seed=0, size=24) -> bytes:
    return encoded(photo(kind, np.random.default_rng(seed), size=size), "PNG")


@pytest.fixture
def proj(tmp_path):
    root = make_dataset(tmp_path / "proj", {"red": 3, "blue": 3})
    return root


@pytest.fixture
def client(proj):
    return TestClient(create_app(proj))


# --- 2. the photo endpoint serves photos from inside the class folder, as images only ----------------
def test_links_out_of_the_class_folder_are_never_served(client, proj, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (proj / "red" / "zz.jpg").symlink_to(secret)
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(seed=9))
    (proj / "red" / "zz2.png").symlink_to(outside)  # even a real photo, if it lies outside
    for name in ("zz.jpg", "zz2.png"):
        for thumb in (0, 1):
            r = client.get(f"/api/classes/red/photos/{name}?thumb={thumb}")
            assert r.status_code == 404 and b"OPENSSH" not in r.content, (name, thumb)
    listed = {c["name"]: c["photos"] for c in client.get("/api/project").json()["classes"]}
    assert "zz.jpg" not in listed["red"] and "zz2.png" not in listed["red"]
    # a class folder that is itself a link to a folder elsewhere: listed with a warning, nothing served
    elsewhere = make_dataset(tmp_path / "elsewhere", {"green": 2})
    (proj / "linked").symlink_to(elsewhere / "green")
    classes = {c["name"]: c for c in client.get("/api/project").json()["classes"]}
    assert classes["linked"]["photos"] == [] and "link" in classes["linked"]["warning"]
    assert client.get("/api/classes/linked/photos/green_000.png?thumb=0").status_code == 404


def test_files_are_served_as_the_image_they_decode_to_never_as_html(client, proj):
    (proj / "red" / "info.html").write_text("<script>fetch('/api/classes', {method: 'POST'})</script>")
    (proj / "red" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (proj / "red" / "photo.html").write_bytes(png(seed=4))  # a real PNG under an HTML name
    for name in ("info.html", "logo.svg"):
        r = client.get(f"/api/classes/red/photos/{name}?thumb=0")
        assert r.status_code == 415 and "text/html" not in r.headers["content-type"]
        assert "not a photo" in r.json()["error"]
    r = client.get("/api/classes/red/photos/photo.html?thumb=0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png(seed=4)
    assert "sandbox" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"


# --- 3. odd folder names on disk are listed and fixable ----------------------------------------------
def test_odd_folder_names_are_listed_with_a_warning_and_can_be_fixed(client, proj):
    nfd = unicodedata.normalize("NFD", "été")
    long = "x" * 70
    for name in ("what?", long, nfd):
        make_dataset(proj / "tmp", {"red": 1})
        (proj / "tmp" / "red").rename(proj / name)
        (proj / "tmp").rmdir()
    r = client.get("/api/project")
    assert r.status_code == 200
    classes = {c["name"]: c for c in r.json()["classes"]}
    assert {"what?", long, nfd} <= set(classes)
    assert all(classes[n].get("warning") for n in ("what?", long, nfd))
    assert "warning" not in classes["red"]
    # the NFC spelling the browser sends finds the NFD folder
    nfc = unicodedata.normalize("NFC", "été")
    assert client.get(f"/api/classes/{nfc}/photos/red_000.png?thumb=1").status_code == 200
    assert client.patch("/api/classes/what%3F", json={"name": "what"}, headers=H).json() == {"name": "what"}
    assert client.patch(f"/api/classes/{nfc}", json={"name": nfc}, headers=H).json() == {"name": nfc}
    assert client.delete(f"/api/classes/{long}", headers=H).json() == {"deleted": long, "photos": 1}
    names = {c["name"]: c for c in client.get("/api/project").json()["classes"]}
    assert "what" in names and nfc in names and not any(c.get("warning") for c in names.values())


# --- 4. split-folder names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["train", "Test", "val", "validation"])
def test_split_folder_names_are_reserved(client, name):
    r = client.post("/api/classes", json={"name": name}, headers=H)
    assert r.status_code == 400 and "reserved" in r.json()["error"]
    assert client.patch("/api/classes/red", json={"name": name}, headers=H).status_code == 400


# --- 6. thumbnails: bounded decoding, cached on disk ----------------------------------------------------
def test_thumbnails_decode_at_most_two_at_a_time_and_are_cached_on_disk(client, proj, monkeypatch):
    from diycnn.webapp import state as server

    for i in range(8):
        (proj / "red" / f"big{i}.jpg").write_bytes(encoded(photo("red", np.random.default_rng(i), size=600), "JPEG"))
    active, peak, lock = 0, 0, threading.Lock()
    real = server._make_thumbnail

    def tracked(data, shown):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        try:
            return real(data, shown)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(server, "_make_thumbnail", tracked)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        client.get(f"/api/classes/red/photos/big{i}.jpg?thumb=1"))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 8 and peak <= 2
    assert len(list((proj / APP_DIR / "thumbs").glob("*.jpg"))) == 8
    # a fresh app (a restart) reads them from disk instead of decoding again
    fresh = TestClient(create_app(proj))
    monkeypatch.setattr(server, "_make_thumbnail", lambda *a: pytest.fail("decoded again"))
    assert fresh.get("/api/classes/red/photos/big3.jpg?thumb=1").content[:2] == b"\xff\xd8"


def test_a_large_jpeg_thumbnail_is_decoded_at_reduced_scale(client, proj, monkeypatch):
    from PIL import JpegImagePlugin

    (proj / "red" / "huge.jpg").write_bytes(encoded(photo("red", np.random.default_rng(1), size=2400), "JPEG"))
    sizes = []
    real = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        out = real(self)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    r = client.get("/api/classes/red/photos/huge.jpg?thumb=1")
    assert r.status_code == 200 and sizes and max(sizes[0]) <= 600  # 1/4 or 1/8 scale, not 2400x2400


# --- 7. a slow prediction does not stall the server ------------------------------------------------------
def test_a_slow_prediction_runs_off_the_event_loop(proj, monkeypatch):
    import httpx

    from diycnn.webapp.state import App

    monkeypatch.setattr(App, "predict", lambda self, data, run=None: time.sleep(3) or {"label": "red"})
    with serving(create_app(proj)) as url:
        slow = threading.Thread(target=lambda: httpx.post(f"{url}/api/predict", content=png(), headers=H, timeout=30))
        slow.start()
        time.sleep(0.5)
        start = time.time()
        assert httpx.get(f"{url}/api/train", timeout=30).status_code == 200
        waited = time.time() - start
        slow.join()
    assert waited < 2, f"GET /api/train waited {waited:.1f}s behind a prediction"


# --- 8. two exports at once ------------------------------------------------------------------------------
@pytest.fixture
def trained(proj, tmp_path, offline):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    make_dataset(proj, {"red": 10, "blue": 10}, seed=3)
    diycnn.train(proj, model=str(spec), out=proj / APP_DIR / "runs" / "tiny-1", epochs=1)
    return proj / APP_DIR / "runs" / "tiny-1"


def test_two_exports_at_once_both_succeed_one_after_the_other(client, trained, monkeypatch):
    import diycnn.exports as exports

    active, peak, lock = 0, 0, threading.Lock()
    real = exports.export

    def tracked(*args, **kwargs):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(exports, "export", tracked)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.post("/api/export/onnx", headers=H)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200] and peak == 1


def test_links_in_a_run_folder_are_never_zipped_or_served(client, trained, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    assert client.post("/api/export/onnx", headers=H).status_code == 200
    zipped = trained / "tiny-1-onnx.zip"
    zipped.unlink()
    (trained / "export-onnx" / "notes.txt").symlink_to(secret)
    assert client.post("/api/export/onnx", headers=H).status_code == 200
    assert b"top secret" not in zipped.read_bytes()
    zipped.unlink()
    zipped.symlink_to(secret)  # a run folder that ships a link in place of the zip
    r = client.get("/api/export/onnx/download?run=tiny-1")
    assert r.status_code == 404 and b"top secret" not in r.content


# --- 9, 10, 11 ---------------------------------------------------------------------------------------------
def test_rename_refuses_a_name_that_differs_only_by_case(client):
    r = client.patch("/api/classes/blue", json={"name": "Red"}, headers=H)
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    assert client.patch("/api/classes/blue", json={"name": "Blue"}, headers=H).json() == {"name": "Blue"}


@pytest.mark.parametrize("body", [b'{"epochs": 1e400}', b'{"lr": 1e400}', b'{"epochs": true}', b'{"lr": NaN}'])
def test_absurd_numbers_are_a_400(client, body):
    r = client.post("/api/train", content=body, headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 400 and "number" in r.json()["error"]


@pytest.mark.parametrize("model_json", [[1, 2, 3], {"format": "diycnn-run", "status": "complete", "model": "x"},
                                        "[" * 50_000 + "]" * 50_000])
def test_damaged_run_metadata_never_breaks_the_page(client, proj, model_json):
    run = proj / APP_DIR / "runs" / "bad"
    run.mkdir(parents=True)
    text = model_json if isinstance(model_json, str) else json.dumps(model_json)
    (run / "model.json").write_text(text)
    (run / "metrics.json").write_text(json.dumps({"test_accuracy": 1.0}))
    r = client.get("/api/project")
    assert r.status_code == 200 and r.json()["runs"] == []
    assert client.get("/api/evaluation?run=bad").status_code in (404, 409)  # no such finished run


def test_damaged_metrics_are_a_422_with_a_reason(client, trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    (trained / "metrics.json").write_text(json.dumps({**metrics, "per_class": "nope"}))
    r = client.get("/api/evaluation?run=tiny-1")
    assert r.status_code == 422 and "damaged" in r.json()["error"]


def test_deleting_a_linked_class_folder_is_refused_and_deletes_nothing(client, proj, tmp_path):
    elsewhere = make_dataset(tmp_path / "elsewhere", {"green": 2})
    (proj / "linked").symlink_to(elsewhere / "green")
    r = client.delete("/api/classes/linked", headers=H)
    assert r.status_code == 409 and "link" in r.json()["error"]
    assert len(list((elsewhere / "green").iterdir())) == 2


def test_a_truncated_jpeg_is_refused_at_upload(client, proj):
    whole = encoded(photo("red", np.random.default_rng(0), size=200), "JPEG")
    r = client.post("/api/classes/red/photos", files=[("files", ("cut.jpg", whole[: len(whole) // 2], "image/jpeg"))],
                    headers=H).json()
    assert r["added"] == [] and "truncated" in r["rejected"][0]["reason"]
    assert not (proj / "red" / "cut.jpg").exists()
