"""The app's own folders and caches inside a project someone else made (`.diycnn/trash`, `thumbs`,
`runs`, export folders), and requests built to exhaust the server: each is refused with a 4xx and
one line, or served safely; nothing is written outside the project and a GET never fetches."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import diycnn
from diycnn.webapp.project import APP_DIR, Project, ProjectError
from diycnn.webapp.server import create_app
from tests.conftest import TINY_SPEC, encoded, make_dataset, photo

H = {"X-Diycnn": "1"}


def png(kind="red", seed=0, size=24) -> bytes:
    return encoded(photo(kind, np.random.default_rng(seed), size=size), "PNG")


@pytest.fixture
def proj(tmp_path):
    return make_dataset(tmp_path / "proj", {"red": 3, "blue": 3})


@pytest.fixture
def client(proj):
    return TestClient(create_app(proj))


# --- the trash, and every .diycnn/ folder, must be a real folder inside the project ----------------------
@pytest.mark.parametrize("linked", [".diycnn/trash", ".diycnn", ".diycnn/trash/autostart"])
def test_deleting_a_photo_never_moves_it_through_a_linked_trash(proj, tmp_path, linked):
    config = tmp_path / "home" / ".config"
    (config / "autostart").mkdir(parents=True)
    (proj / "autostart").mkdir()
    (proj / "autostart" / "x.png").write_bytes(png(seed=3))
    client = TestClient(create_app(proj))  # the app starts first: .diycnn/runs exists before the link is made
    link = proj / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists():
        import shutil

        shutil.rmtree(link)
    link.symlink_to(config if linked != ".diycnn/trash/autostart" else config / "autostart")
    r = client.delete("/api/classes/autostart/photos/x.png", headers=H)
    assert r.status_code == 409 and "link" in r.json()["error"], r.text
    assert (proj / "autostart" / "x.png").is_file()  # nothing lost
    assert not any(config.rglob("*.png"))  # nothing written outside the project


def test_the_trash_works_when_it_is_a_real_folder(client, proj):
    r = client.delete("/api/classes/red/photos/red_000.png", headers=H)
    assert r.status_code == 200 and (proj / r.json()["trash"]).is_file()


def test_a_linked_runs_folder_is_refused_when_the_app_starts(proj, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / APP_DIR).mkdir()
    (proj / APP_DIR / "runs").symlink_to(elsewhere)
    with pytest.raises(ProjectError, match=r"\.diycnn/runs' in this project is a link"):
        create_app(proj)
    with pytest.raises(ProjectError, match="link"):
        Project(proj).app_folder("runs", create=True)


def test_a_linked_thumbs_folder_is_neither_read_nor_written(client, proj, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (proj / APP_DIR).mkdir(exist_ok=True)
    (proj / APP_DIR / "thumbs").symlink_to(elsewhere)
    r = client.get("/api/classes/red/photos/red_000.png?thumb=1")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert list(elsewhere.iterdir()) == []


# --- a planted thumbnail is never shown -------------------------------------------------------------------
def test_a_planted_thumbnail_is_regenerated_not_shown(client, proj):
    data = (proj / "red" / "red_000.png").read_bytes()
    thumbs = proj / APP_DIR / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    planted = encoded(Image.new("RGB", (160, 160), (0, 255, 0)), "JPEG")
    (thumbs / f"{hashlib.sha256(data).hexdigest()}-160.jpg").write_bytes(planted)
    r = client.get("/api/classes/red/photos/red_000.png?thumb=1")
    assert r.status_code == 200 and r.content != planted
    shown = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).mean(axis=(0, 1))
    assert shown[0] > shown[1]  # the red photo, not the planted green square
    # and the thumbnail the app wrote itself is reused by a fresh app (signed with this user's key)
    again = TestClient(create_app(proj)).get("/api/classes/red/photos/red_000.png?thumb=1")
    assert again.content == r.content


# --- adding a class over a file or a dangling link of that name ----------------------------------------
@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_adding_a_class_over_a_file_or_a_dangling_link_is_a_conflict(client, proj, tmp_path, kind):
    if kind == "file":
        (proj / "cats").write_text("not a folder")
    else:
        (proj / "cats").symlink_to(tmp_path / "nowhere")
    r = client.post("/api/classes", json={"name": "cats"}, headers=H)
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    assert not (tmp_path / "nowhere").exists()


# --- request bodies and decoding that would exhaust the server --------------------------------------------
def test_a_deeply_nested_json_body_is_a_400(client):
    r = client.post("/api/train", content=b"[" * 100_000, headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]


def test_uploads_are_decoded_off_the_event_loop_with_the_shared_limit(client, monkeypatch):
    import asyncio

    from diycnn.webapp import state as server

    seen = []
    real = Project.add_photo

    def spy(self, *a, **k):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:  # no loop running in this thread: a worker
            seen.append("worker")
        seen.append(server.THUMB_DECODES._value)  # a slot of the shared decode limit is held
        return real(self, *a, **k)

    monkeypatch.setattr(Project, "add_photo", spy)
    r = client.post("/api/classes/red/photos", files=[("files", ("a.png", png(seed=7), "image/png"))], headers=H)
    assert r.status_code == 200 and r.json()["added"]
    assert seen == ["worker", 1]


def test_checks_decode_one_at_a_time_with_two_workers(client, proj, monkeypatch):
    import diycnn.data.loader as loader

    active, peak, workers, lock = [0], [0], [], threading.Lock()
    real = loader.decode_all

    def tracked(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            workers.append(k.get("workers"))
        try:
            import time

            time.sleep(0.2)
            return real(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(loader, "decode_all", tracked)
    for i in range(4):  # new photos for each request, so every check has something to decode
        (proj / "blue" / f"new{i}.png").write_bytes(png("blue", seed=50 + i))
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.get("/api/check?recipe=tm").status_code))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4 and peak[0] == 1 and set(workers) == {2}


def test_a_check_never_fetches_the_face_weights(client, tmp_path, monkeypatch):
    from diycnn.models import face_weights

    monkeypatch.setenv("DIYCNN_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.delenv("DIYCNN_OFFLINE", raising=False)

    def fetch(*a, **k):
        raise AssertionError("a GET started a download")

    monkeypatch.setattr(face_weights, "download", fetch)
    r = client.get("/api/check?recipe=face-probe")
    assert r.status_code == 200, r.text
    assert "face weights are not installed" in r.json()["note"] and "diycnn weights fetch" in r.json()["note"]


# --- Export always writes a fresh folder -------------------------------------------------------------------
@pytest.fixture
def trained(proj, tmp_path, offline):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    out = proj / APP_DIR / "runs" / "tiny-1"
    diycnn.train(proj, model=str(spec), out=out, epochs=1)
    return out


def test_export_zips_a_fresh_export_never_files_the_run_came_with(client, trained):
    planted = trained / "export-onnx"
    planted.mkdir()
    (planted / "export.json").write_text('{"format": "diycnn-export"}')
    (planted / "predict.py").write_text("import os; os.system('echo pwned')\n")
    (planted / "extra.txt").write_text("planted")
    stale = trained / f"{trained.name}-onnx.zip"
    stale.write_bytes(b"planted zip")
    r = client.post("/api/export/onnx", headers=H)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(stale) as zf:
        names = {n.split("/", 1)[1] for n in zf.namelist()}
        assert "model.onnx" in names and "extra.txt" not in names
        assert all(b"pwned" not in zf.read(n) for n in zf.namelist())
    assert not (planted / "extra.txt").exists()
