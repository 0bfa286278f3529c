"""The web app's JSON API (FastAPI's TestClient): safe names, content-checked uploads, the
cross-site and Host guards, background training with one-at-a-time and cancel, preview,
per-class results and export. The browser tests drive the same API through the page."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from diycnn.webapp import project as project_mod
from diycnn.webapp.server import create_app
from tests.conftest import encoded, photo

H = {"X-Diycnn": "1"}


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(tmp_path / "proj"))


def png(kind="red", seed=0) -> bytes:
    return encoded(photo(kind, np.random.default_rng(seed)), "PNG")


def wait_idle(client, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = client.get("/api/train").json()
        if s["status"] != "running":
            return s
        time.sleep(0.2)
    raise AssertionError(f"training still running after {timeout}s: {s}")


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", ".hidden", "..", "", "   ", "x" * 65, "tab\there", "c:d"])
def test_unsafe_class_names_are_refused(client, tmp_path, bad):
    r = client.post("/api/classes", json={"name": bad}, headers=H)
    assert r.status_code == 400 and r.json()["error"]
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == [".diycnn"]
    assert not (tmp_path / "x").exists()


def test_classes_create_rename_delete_without_silent_overwrite(client, tmp_path):
    root = tmp_path / "proj"
    assert client.post("/api/classes", json={"name": "IU"}, headers=H).json() == {"name": "IU"}
    assert client.post("/api/classes", json={"name": "Suzy 수지"}, headers=H).status_code == 200
    assert client.post("/api/classes", json={"name": "iu"}, headers=H).status_code == 409  # differs by case only
    assert client.patch("/api/classes/IU", json={"name": "Suzy 수지"}, headers=H).status_code == 409
    assert client.patch("/api/classes/IU", json={"name": "../up"}, headers=H).status_code == 400
    assert client.patch("/api/classes/IU", json={"name": "Lee Ji-eun"}, headers=H).json() == {"name": "Lee Ji-eun"}
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["Lee Ji-eun", "Suzy 수지"]
    client.post("/api/classes/Lee Ji-eun/photos", files=[("files", ("a.png", png(), "image/png"))], headers=H)
    assert client.delete("/api/classes/Lee Ji-eun", headers=H).json() == {"deleted": "Lee Ji-eun", "photos": 1}
    assert client.delete("/api/classes/nope", headers=H).status_code == 404
    assert [c["name"] for c in client.get("/api/project").json()["classes"]] == ["Suzy 수지"]


def test_uploads_are_checked_by_content_named_safely_and_never_overwrite(client, tmp_path, monkeypatch):
    root = tmp_path / "proj"
    client.post("/api/classes", json={"name": "cats"}, headers=H)
    monkeypatch.setattr(project_mod, "MAX_UPLOAD_BYTES", 4000)
    files = [("files", ("../../escape.jpg", png(seed=1), "image/jpeg")),  # a PNG with a path and a wrong name
             ("files", ("same.png", png(seed=2), "image/png")),
             ("files", ("same.png", png(seed=3), "image/png")),
             ("files", ("notes.jpg", b"this is text, not a photo", "image/jpeg")),
             ("files", ("big.png", encoded(photo("red", np.random.default_rng(0), size=200), "PNG"), "image/png")),
             ("files", ("empty.png", b"", "image/png"))]
    r = client.post("/api/classes/cats/photos", files=files, headers=H).json()
    assert r["added"] == ["escape.png", "same.png", "same-2.png"]
    reasons = {x["file"]: x["reason"] for x in r["rejected"]}
    assert "not an image" in reasons["notes.jpg"] and "notes" in reasons["notes.jpg"]
    assert "too large" in reasons["big.png"]
    assert "empty" in reasons["empty.png"]
    assert sorted(p.name for p in (root / "cats").iterdir()) == ["escape.png", "same-2.png", "same.png"]
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "escape.png").exists()
    assert (root / "cats" / "same.png").read_bytes() == png(seed=2)  # the second upload did not replace it
    thumb = client.get("/api/classes/cats/photos/same.png?thumb=1")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.get("/api/classes/cats/photos/..%2F..%2Fetc?thumb=1").status_code in (400, 404)
    assert client.delete("/api/classes/cats/photos/same.png", headers=H).json() == {
        "deleted": "same.png", "trash": ".diycnn/trash/cats/same.png"}
    assert not (root / "cats" / "same.png").exists()
    assert (root / ".diycnn" / "trash" / "cats" / "same.png").read_bytes() == png(seed=2)  # moved, not destroyed
    assert client.post("/api/classes/dogs/photos", files=files[:1], headers=H).status_code == 404


def test_photos_move_between_classes_and_never_vanish(tmp_path):
    client = TestClient(create_app(tmp_path / "proj"))
    root = tmp_path / "proj"
    for c in ("cats", "dogs"):
        client.post("/api/classes", json={"name": c}, headers=H)
    (root / "cats" / "a.png").write_bytes(png(seed=1))
    (root / "dogs" / "a.png").write_bytes(png(seed=2))
    r = client.post("/api/classes/cats/photos/a.png/move", json={"to": "dogs"}, headers=H)
    assert r.status_code == 200 and r.json() == {"moved": "a-2.png", "to": "dogs"}  # never overwrites
    assert (root / "dogs" / "a-2.png").read_bytes() == png(seed=1) and not (root / "cats" / "a.png").exists()
    assert (root / "dogs" / "a.png").read_bytes() == png(seed=2)
    same = client.post("/api/classes/dogs/photos/a.png/move", json={"to": "dogs"}, headers=H)
    assert same.status_code == 409 and "already in class" in same.json()["error"]
    assert client.post("/api/classes/dogs/photos/a.png/move", json={"to": "birds"}, headers=H).status_code == 404
    assert client.post("/api/classes/dogs/photos/a.png/move", json={"to": "../x"}, headers=H).status_code == 404
    assert client.post("/api/classes/dogs/photos/..%2Fa.png/move", json={"to": "cats"}, headers=H).status_code in (
        400, 404)
    assert client.post("/api/classes/dogs/photos/a.png/move", json={"to": "cats"}).status_code == 403  # no header
    client.delete("/api/classes/dogs/photos/a.png", headers=H)
    client.post("/api/classes/cats/photos", files=[("files", ("a.png", png(seed=2), "image/png"))], headers=H)
    r = client.delete("/api/classes/cats/photos/a.png", headers=H)
    assert r.json()["trash"] == ".diycnn/trash/cats/a.png"  # a photo of the same name from another class: its own folder
    assert sorted(p.name for p in (root / ".diycnn" / "trash" / "dogs").iterdir()) == ["a.png"]


def test_cross_site_and_foreign_host_requests_are_refused(tmp_path):
    client = TestClient(create_app(tmp_path / "proj"))
    r = client.post("/api/classes", json={"name": "x"})  # no X-Diycnn header: a form from another site
    assert r.status_code == 403 and "x-diycnn" in r.json()["error"]
    assert client.get("/api/project", headers={"Host": "attacker.example:7860"}).status_code == 403
    assert client.get("/api/project", headers={"Host": "localhost:7860"}).status_code == 200
    assert client.get("/api/project", headers={"Host": "[::1]:7860"}).status_code == 200
    assert not (tmp_path / "proj" / "x").exists()



def test_an_exposed_app_answers_only_its_own_names_no_dns_rebinding(tmp_path, monkeypatch):
    import socket

    from diycnn.webapp import security as server

    monkeypatch.setattr(socket, "gethostname", lambda: "studio")
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "studio.lan")
    monkeypatch.setattr(socket, "getaddrinfo", lambda name, *a: [(0, 0, 0, "", ("192.168.1.5", 0))])
    monkeypatch.setattr(server, "_interface_addresses", lambda: {"10.0.0.7"})
    exposed = TestClient(create_app(tmp_path / "proj2", host="0.0.0.0"))  # the user chose to expose it
    for own in ("192.168.1.5:7860", "10.0.0.7", "studio:7860", "STUDIO.lan:7860", "localhost:7860"):
        assert exposed.get("/api/project", headers={"Host": own}).status_code == 200, own
    # a name the attacker controls, re-pointed at this machine after the page loaded, is refused
    r = exposed.get("/api/project", headers={"Host": "rebind.attacker.example:7860"})
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]
    bound = TestClient(create_app(tmp_path / "proj3", host="192.168.1.5"))
    assert bound.get("/api/project", headers={"Host": "192.168.1.5:7860"}).status_code == 200
    assert bound.get("/api/project", headers={"Host": "evil.example"}).status_code == 403


def fill(client, counts, bad: int = 0):
    for cls, n in counts.items():
        client.post("/api/classes", json={"name": cls}, headers=H)
        files = [("files", (f"{cls}{i}.png", png(cls, seed=i + 100 * len(cls)), "image/png")) for i in range(n)]
        r = client.post(f"/api/classes/{cls}/photos", files=files, headers=H).json()
        assert len(r["added"]) == n


def test_the_app_says_before_training_what_it_will_leave_out(client, tmp_path):
    fill(client, {"red": 4, "blue": 3})
    root = tmp_path / "proj"
    (root / "red" / "notes.jpg").write_text("not a photo")  # dropped in by hand, not through the upload check
    shutil.copy(root / "red" / "red0.png", root / "red" / "red0 copy.png")  # an exact duplicate
    shutil.copy(root / "blue" / "blue0.png", root / "red" / "which.png")  # the same photo in two classes
    check = client.get("/api/check").json()
    red = {p["photo"]: p["reason"] for p in check["classes"]["red"]["left_out"]}
    (copy,) = {"red0.png", "red0 copy.png"} & set(red)  # one of the two twins is kept
    assert set(red) == {"notes.jpg", copy, "which.png"} and check["note"] is None
    assert "duplicate" in red[copy] and "label conflict" in red["which.png"]
    assert check["classes"]["red"]["usable"] == 4
    blue = check["classes"]["blue"]
    assert blue["usable"] == 2 and [p["photo"] for p in blue["left_out"]] == ["blue0.png"]  # the conflict's twin
    (root / "blue").rename(tmp_path / "away")
    shutil.rmtree(root / "red")
    assert client.get("/api/check").json()["classes"] == {}  # nothing to train yet: nothing to say


def test_the_check_decodes_as_the_chosen_recipe_will(client, tmp_path, face_model_dir):
    """Given the recipe, the check decodes the photos as training will: a file whose header is fine but
    whose data is cut off is listed before training, and a face recipe says which photos show no face
    (used whole); each photo is decoded once per preprocessing."""
    fill(client, {"red": 3, "blue": 3})
    root = tmp_path / "proj"
    whole = (root / "red" / "red0.png").read_bytes()
    (root / "red" / "cut.png").write_bytes(whole[: len(whole) // 2])  # a valid header, half the data
    plain = client.get("/api/check").json()["classes"]["red"]
    assert "cut.png" not in {p["photo"] for p in plain["left_out"]} and plain["usable"] == 4  # the scan reads headers
    check = client.get("/api/check?recipe=tm").json()
    red = {p["photo"]: p["reason"] for p in check["classes"]["red"]["left_out"]}
    assert set(red) == {"cut.png"} and check["classes"]["red"]["usable"] == 3 and check["note"] is None
    app = client.app.state.diycnn
    decoded = len(app._verdicts)
    assert client.get("/api/check?recipe=tm").json() == check and len(app._verdicts) == decoded  # remembered
    faces = client.get("/api/check?recipe=face-probe").json()["classes"]["blue"]
    assert len(faces["notes"]) == 3 and all("no face" in p["reason"] for p in faces["notes"])  # generated colours
    assert faces["usable"] == 3  # kept whole, as the face recipes do by default
    assert client.get("/api/check?recipe=nonsense").json()["classes"]["red"]["usable"] == 4  # unknown: scan only


@pytest.mark.slow
def test_train_preview_evaluate_export(client, tmp_path, offline):
    fill(client, {"red": 14, "blue": 14})
    root = tmp_path / "proj"
    (root / "red" / "dropped-in-by-hand.png").write_bytes(png()[:60])  # corrupt, not through the upload check
    assert client.post("/api/train", json={"model": "tm", "epochs": 500, "batch_size": 0}, headers=H).status_code == 400
    assert client.post("/api/train", json={"model": "nope"}, headers=H).status_code == 400
    r = client.post("/api/train", json={"model": "tm", "epochs": 4, "lr": "0.01"}, headers=H)
    assert r.status_code == 202 and r.json()["status"] == "running"
    second = client.post("/api/train", json={"model": "tm"}, headers=H)
    assert second.status_code == 409 and "already running" in second.json()["error"]
    s = wait_idle(client)
    assert s["status"] == "done", s
    assert [h["epoch"] for h in s["history"]] == [1, 2, 3, 4] and all("val_loss" in h for h in s["history"])
    runs = client.get("/api/project").json()["runs"]
    assert len(runs) == 1 and runs[0]["model"] == "tm"
    assert runs[0]["export_formats"] == ["onnx", "torchscript", "tm", "tfjs", "webpage"]  # no keras for a backbone recipe
    run_dir = root / ".diycnn" / "runs" / runs[0]["name"]
    assert any("dropped-in-by-hand" in p["path"] for p in json.loads(
        (run_dir / "metrics.json").read_text())["skipped"])
    ev = client.get("/api/evaluation").json()
    assert set(ev["per_class"]) == {"red", "blue"}
    lo, hi = ev["test_accuracy_ci95"]
    assert lo - 1e-9 <= ev["test_accuracy"] <= hi + 1e-9
    # 4 test photos: the app also gives the 5-fold estimate over all 28 readable photos
    assert ev["cross_validation"]["folds"] == 5 and ev["cross_validation"]["photos"] == 28
    assert "95% CI" in s["message"] and "cross-validated" in s["message"]
    assert ev["left_out"] == {"unreadable": 1, "duplicates": 0, "no_face": 0}  # the corrupt file, shown in the app
    assert sum(c["train"] + c["val"] + c["support"] for c in ev["per_class"].values()) == 28
    assert sum(map(sum, ev["confusion_matrix"])) == ev["counts"]["test"] > 0
    assert client.get("/" + ev["report"]).status_code == 200
    p = client.post("/api/predict", content=encoded(photo("blue", np.random.default_rng(7)), "JPEG"), headers=H).json()
    assert p["label"] == "blue" and sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    bad = client.post("/api/predict", content=b"GIF89a-not-really", headers=H)
    assert bad.status_code == 400 and "Cannot read this photo" in bad.json()["error"]
    assert client.get("/api/export/onnx/download").status_code == 404  # a GET never builds an export
    e = client.post("/api/export/onnx", headers=H).json()
    assert [sn["language"] for sn in e["snippets"]] == ["Python"] and "Classifier('.')" in e["snippets"][0]["code"]
    z = client.get(e["download"])
    assert z.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert any(n.endswith("/model.onnx") for n in names) and any(n.endswith("/labels.txt") for n in names)
    assert client.post("/api/export/pdf", headers=H).status_code == 400


def test_cancel_leaves_a_resumable_run_and_the_app_usable(client, offline):
    fill(client, {"red": 8, "blue": 8})
    client.post("/api/train", json={"model": "tm", "epochs": 1000}, headers=H)
    deadline = time.time() + 120
    while client.get("/api/train").json().get("epoch", 0) < 1 and time.time() < deadline:
        time.sleep(0.05)
    c = client.post("/api/train/cancel", headers=H)
    assert c.status_code == 200
    s = wait_idle(client)
    assert s["status"] == "cancelled" and "--resume" in s["message"] and len(s["history"]) < 1000
    assert client.get("/api/project").json()["runs"] == []  # an unfinished run is not offered for preview
    assert client.post("/api/train/cancel", headers=H).status_code == 409
    assert client.get("/api/evaluation").status_code == 409


def test_a_cancelled_run_resumes_from_the_app(client, offline, tmp_path):
    fill(client, {"red": 8, "blue": 8})
    client.post("/api/train", json={"model": "tm", "epochs": 30}, headers=H)
    deadline = time.time() + 120
    while client.get("/api/train").json().get("epoch", 0) < 1 and time.time() < deadline:
        time.sleep(0.02)
    client.post("/api/train/cancel", headers=H)
    s = wait_idle(client)
    assert s["status"] == "cancelled" and s["resumable"] == s["run"]
    for bad in ("../x", "", ".diycnn", 5, "no-such-run"):
        assert client.post("/api/train/resume", json={"run": bad}, headers=H).status_code in (400, 404)
    r = client.post("/api/train/resume", json={"run": s["run"]}, headers=H)
    assert r.status_code == 202 and r.json()["status"] == "running"
    done = wait_idle(client)
    assert done["status"] == "done", done
    runs = client.get("/api/project").json()["runs"]
    assert [r["name"] for r in runs] == [s["run"]]  # the same run, finished: not a new one
    history = (tmp_path / "proj" / ".diycnn" / "runs" / s["run"] / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 30  # header + every epoch: the run went on where it stopped
    ev = client.get("/api/evaluation").json()
    assert ev["run"] == s["run"]
    assert client.post("/api/train/resume", json={"run": s["run"]}, headers=H).status_code == 409  # complete


def test_training_needs_two_classes_with_photos(client):
    client.post("/api/classes", json={"name": "only"}, headers=H)
    r = client.post("/api/train", json={"model": "tm"}, headers=H)
    assert r.status_code == 400 and "two classes" in r.json()["error"]
    fill(client, {"red": 2, "blue": 2})
    r = client.post("/api/train", json={"model": "tm"}, headers=H)
    assert r.status_code == 400 and "'only'" in r.json()["error"]


def test_ui_command_binds_to_localhost_and_warns_when_exposed(tmp_path, monkeypatch, caplog):
    import uvicorn

    from diycnn.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["ui", "--project", str(tmp_path / "p")]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 7860 and not caplog.records
    assert (tmp_path / "p").is_dir()
    assert main(["ui", "--project", str(tmp_path / "p"), "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["port"] == 9000
    assert any("anyone who can reach this machine" in r.getMessage() for r in caplog.records)


def test_oversized_bodies_are_refused_before_they_are_stored(client, tmp_path, monkeypatch):
    from diycnn.webapp import security as server_mod
    from diycnn.webapp import state as state_mod

    monkeypatch.setattr(server_mod, "MAX_UPLOAD_BYTES", 10_000)  # the body limits
    monkeypatch.setattr(state_mod, "MAX_UPLOAD_BYTES", 10_000)  # the photo's own check
    client.post("/api/classes", json={"name": "cats"}, headers=H)
    r = client.post("/api/predict", content=b"x" * 10_001, headers=H)  # declared length over the limit
    assert r.status_code == 413 and "too large" in r.json()["error"] and "batches of up to 16" in r.json()["error"]

    def chunks(n, size=4096):  # no Content-Length: counted as it streams in
        for _ in range(n):
            yield b"y" * size

    r = client.post("/api/predict", content=chunks(3), headers=H)
    assert r.status_code == 413
    batch = server_mod.UPLOAD_BATCH * 10_000 + server_mod.JSON_LIMIT
    r = client.post("/api/classes/cats/photos", content=chunks(batch // 4096 + 1),
                    headers={**H, "Content-Type": "multipart/form-data; boundary=abc"})
    assert r.status_code == 413
    r = client.post("/api/classes", content=b"{" + b" " * server_mod.JSON_LIMIT + b"}", headers=H)
    assert r.status_code == 413
    assert not list((tmp_path / "proj" / "cats").iterdir())
    ok = client.post("/api/classes/cats/photos", files=[("files", ("a.png", png(), "image/png"))], headers=H)
    assert ok.status_code == 200 and ok.json()["added"] == ["a.png"]  # ordinary uploads pass
    assert client.post("/api/classes", json={"name": "dogs"}, headers=H).status_code == 200


def test_the_pages_training_settings_follow_the_same_rules_as_the_cli():
    from diycnn.models.registry import RECIPE_NAMES
    from diycnn.webapp.jobs import RECIPES, training_settings
    from diycnn.webapp.project import ProjectError

    assert set(RECIPES) == set(RECIPE_NAMES) | {"auto"}  # the names come from the registry, once
    assert training_settings({"model": "tm", "epochs": "12", "lr": "0.001", "batch_size": ""}) == \
        ("tm", {"epochs": 12, "lr": 0.001})
    for body, message in (({"epochs": "2.5"}, "whole number"), ({"epochs": 5000}, "between 1 and 1000"),
                          ({"lr": float("nan")}, "finite"), ({"batch_size": True}, "finite number"),
                          ({"lr": "fast"}, "must be a number"), ({"model": "sed-cnn"}, "Unknown recipe")):
        with pytest.raises(ProjectError, match=message):
            training_settings({"model": "tm", **body})
