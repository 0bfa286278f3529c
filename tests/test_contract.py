"""One contract over every recipe, as users run it (timm tests one contract over every model).

Every built-in recipe, plus the default `auto` on photos of people and on other photos, goes
through a user's journey, each step a fresh `diycnn` process typed as a user would, with the
environment a user has after `make install` (no test-only variables): train; predict, evaluate and
explain; export to every format the run supports; predict with each export (the ONNX folder through
`diycnn predict` and its standalone predict.py, TF.js and `tm` under Node.js); and the web app,
started fresh on the project, previews and exports every run over HTTP. A run is trained once and
shared by its steps. State left in a process cannot hide a crash here: no step shares one.

A new recipe in models/registry.py or a new export format is covered without a new test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from diycnn.models.registry import RECIPE_NAMES, REGISTRY
from diycnn.settings import export_formats_for
from tests.conftest import SHARED, make_dataset

pytestmark = pytest.mark.slow

KPOP = SHARED / "kpop_idols" / "train"
PEOPLE = ("Arin", "Chorong")  # two people of kpop_idols; any two would do
STRANGER = "Jihyo"  # photos of someone else: the --unknown-folder the recipes' runs are given
PER_CLASS = 8
CASES = [*RECIPE_NAMES, "auto:people", "auto:other"]
DIYCNN = str(Path(sys.executable).with_name("diycnn"))  # the installed command, as a user types it
ATOL = 1e-4


def _user_env() -> dict[str, str]:
    """The environment a user has: diycnn's default cache (~/.cache/diycnn, where `make install` put the
    face weights and TF.js), none of the variables the other tests set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIYCNN_")}
    env["COLUMNS"] = "100"
    return env


def diycnn(*args: str, cwd: Path, timeout: float = 600, columns: int = 100) -> subprocess.CompletedProcess:
    """`diycnn ARGS` in a new process; fails the test with its output unless it exits 0."""
    start = time.perf_counter()
    proc = subprocess.run([DIYCNN, *args], cwd=cwd, env={**_user_env(), "COLUMNS": str(columns)},
                          capture_output=True, text=True, timeout=timeout)
    print(f"{time.perf_counter() - start:6.1f} s  diycnn {' '.join(args[:4])}")  # shown with -s or on failure
    assert proc.returncode == 0, f"diycnn {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _probs(proc: subprocess.CompletedProcess, names: list[str]) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in names] for p in json.loads(proc.stdout)])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two projects (a photo folder each; the web app keeps its runs in PROJECT/.diycnn/runs) and photos
    none of the runs has seen, per project."""
    root = tmp_path_factory.mktemp("contract")
    other = make_dataset(root / "other", {"red": PER_CLASS, "blue": PER_CLASS}, seed=3)
    unseen = {"other": make_dataset(root / "other-unseen", {"red": 2, "blue": 2}, seed=11)}
    others = {"other": make_dataset(root / "other-others", {"green": 4}, seed=13)}
    people = root / "people"
    if KPOP.is_dir():
        for person in PEOPLE:
            files = sorted(f for f in (KPOP / person).iterdir() if "(1)" not in f.name)
            (people / person).mkdir(parents=True)
            (root / "people-unseen" / person).mkdir(parents=True)
            for f in files[:PER_CLASS]:
                shutil.copy(f, people / person / f.name)
            for f in files[PER_CLASS:PER_CLASS + 2]:
                shutil.copy(f, root / "people-unseen" / person / f.name)
        unseen["people"] = root / "people-unseen"
        (root / "people-others").mkdir()
        for f in sorted(f for f in (KPOP / STRANGER).iterdir() if "(1)" not in f.name)[:4]:
            shutil.copy(f, root / "people-others" / f.name)
        others["people"] = root / "people-others"
    return {"root": root, "projects": {"people": people, "other": other}, "unseen": unseen, "others": others,
            "runs": {}, "want": {}}


def _project_of(case: str) -> str:
    return "people" if case.startswith("face") or case == "auto:people" else "other"


def _trained(work, case: str) -> Path:
    """The case's run, trained on first use by `diycnn train` (one epoch: the contract is about what
    works, not how well), into the project's .diycnn/runs so the web app finds it. A recipe's run is
    given photos of none of its classes (--unknown-folder), so every export answers "none of these"
    with them as the run does; auto's is trained with no flags but the budget."""
    if case in work["runs"]:
        return work["runs"][case]
    project = _project_of(case)
    if project == "people" and "people" not in work["unseen"]:
        pytest.skip("needs $DIYCNN_DATASETS/kpop_idols (photos of people)")
    data = work["projects"][project]
    name = case.replace(":", "-")
    out = data / ".diycnn" / "runs" / name
    args = ["train", str(data), "--out", str(out), "--epochs", "1", "--seed", "0"]
    if case.startswith("auto"):  # the default: no --model
        proc = diycnn(*args, "--budget", "1", cwd=work["root"], columns=80)
        _check_terminal_output(proc.stdout + proc.stderr)
    else:
        diycnn(*args, "--model", case, "--unknown-folder", str(work["others"][project]), cwd=work["root"])
    info = json.loads((out / "model.json").read_text())
    assert info["status"] == "complete"
    cohort = json.loads((out / "metrics.json").read_text())["unknown"].get("unknown_folder")
    assert (cohort is not None and cohort["photos"] == 4) == (not case.startswith("auto")), cohort
    entry = REGISTRY.get(case)
    if entry is not None:  # what the registry says of the recipe is what the run is
        assert info["model"]["name"] == case and info["training"]["frozen"] == entry.cached_features
        assert (info["model"]["weights_source"] is not None) == entry.pretrained  # offline weights were found
        assert (info["model"]["backbone"] == "face_recognition_net") == entry.faces
    work["runs"][case] = out
    return out


def _check_terminal_output(text: str) -> None:
    """What a person reads of a default run piped to a file: at most 60 lines, each within 80
    columns (COLUMNS=80) unless it is one unbreakable path, no Python reprs; the first usable model is announced, and the result
    leads with the figure to trust."""
    lines = text.splitlines()
    assert len(lines) <= 60, f"{len(lines)} lines:\n{text}"
    # wider only where one word (a long path, here the test's temporary folder) cannot be folded
    assert all(len(line) <= 80 or " " not in line.strip() for line in lines), [line for line in lines if len(line) > 80]
    for sign in ("{'", "['", "Traceback", "0000001", "9999999"):  # reprs, unrounded floats
        assert sign not in text, f"{sign!r} in the output:\n{text}"
    assert any(line.startswith("auto: first usable model after") for line in lines), text
    model = next(i for i, line in enumerate(lines) if line.startswith("Model: "))
    assert lines[model + 1].startswith(("Accuracy to trust, cross-validated: ", "Test accuracy: ")), text


def _formats(run: Path) -> list[str]:
    model = json.loads((run / "model.json").read_text())["model"]
    return export_formats_for(model.get("kind"), model.get("backbone"))


def _export_inputs(folder: Path, photos: list[Path], cwd: Path) -> np.ndarray:
    """What a TF.js export takes for `photos`, made as its README.txt says: a face run's export ships
    predict.py, whose --save-inputs writes the aligned faces; other runs' photos are resized with Pillow
    as export.json's preprocessing says (diycnn's own code, which the steps describe)."""
    from PIL import Image

    from diycnn.data.images import Preprocessing

    info = json.loads((folder / "export.json").read_text())
    if (folder / "predict.py").is_file():
        out = cwd / f"inputs-{folder.name}"
        proc = subprocess.run([sys.executable, str(folder / "predict.py"), "--save-inputs", str(out), *map(str, photos)],
                              cwd=cwd, env=_user_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        saved = [Path(item["input"]) for item in json.loads(proc.stdout)]
        assert len(saved) == len(photos)
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in saved])
    prep = Preprocessing.from_dict(info["preprocessing"])
    assert not prep.align and not prep.faces, "a face run's TF.js export must ship predict.py to make its input"
    return np.stack([prep.load(p) for p in photos])


def _tfjs_probs(folder: Path, images: np.ndarray) -> np.ndarray:
    """TF.js (Node.js) on the export, fed as its export.json says."""
    from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict

    if find_tfjs() is None:
        if os.environ.get("CI"):
            pytest.fail("make install must install TensorFlow.js (diycnn weights fetch)")
        pytest.skip("needs Node.js and TensorFlow.js (diycnn weights fetch)")
    info = json.loads((folder / "export.json").read_text())
    p = info["preprocessing"]
    if "127" in info["input"]["pixels"]:  # Teachable Machine's pixels
        x = images.astype(np.float32) / 127 - 1
    else:
        x = (images.astype(np.float32) * np.float32(p["input_scale"]) - np.float32(p["mean"])) / np.float32(p["std"])
    got, _ = tfjs_predict(folder, x.astype(np.float32))
    if info["tta"]:
        got = (got + tfjs_predict(folder, x[:, :, ::-1].copy().astype(np.float32))[0]) / 2
    return got


def _predict_js_answers(folder: Path, photos: list[Path], want: np.ndarray, scores: np.ndarray,
                        inputs: np.ndarray | None = None) -> None:
    """The folder's predict.js (the web page's, and the one TF.js folders ship) under Node.js: the run's
    probabilities, unknown scores and verdicts. Whole photos decoded by Pillow (the browser test decodes
    them in Chromium), or, given `inputs`, the model's inputs made as README.txt says."""
    from diycnn.data.images import load_rgb
    from diycnn.exports.tfjs_export import run_predict_js
    from diycnn.exports.tfjs_format import find_tfjs

    if find_tfjs() is None:
        if os.environ.get("CI"):
            pytest.fail("make install must install TensorFlow.js (diycnn weights fetch)")
        pytest.skip("needs Node.js and TensorFlow.js (diycnn weights fetch)")
    settings = json.loads((folder / "predict.json").read_text())
    if inputs is None:
        background = tuple(settings["preprocessing"]["background"])
        results = run_predict_js(folder, [np.asarray(load_rgb(p, background)) for p in photos])["results"]
    else:
        results = run_predict_js(folder, inputs, prepared=True)["results"]
    np.testing.assert_allclose([r["probabilities"] for r in results], want, atol=ATOL, err_msg=f"predict.js, {folder.name}")
    np.testing.assert_allclose([r["unknown_score"] for r in results], scores, atol=ATOL,
                               err_msg=f"predict.js's unknown scores, {folder.name}")
    assert [r["unknown"] for r in results] == list(scores > settings["unknown"]["threshold"])


def _both(*steps):
    """Run independent steps two at a time (each is its own process; two cores): their results, in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [f.result() for f in [pool.submit(step) for step in steps]]


def _scores(proc: subprocess.CompletedProcess) -> np.ndarray:
    return np.array([p["unknown_score"] for p in json.loads(proc.stdout)])


def _check_export(folder: Path, fmt: str, photos: list[Path], want: np.ndarray, names: list[str], cwd: Path,
                  scores: np.ndarray) -> None:
    """The export predicts what the run predicts, used as its README.txt says, and answers "none of these"
    with the run's scores and threshold (ONNX: its second output; TF.js folders and the page: predict.js;
    TorchScript: its unknown_score method)."""
    info = json.loads((folder / "export.json").read_text())
    assert info["check"]["status"] == "checked", info["check"]
    readme = (folder / "README.txt").read_text()
    if "predict.py" in readme:  # what the README names is in the folder
        assert (folder / "predict.py").is_file(), f"{fmt}: README.txt names predict.py, which is missing"
    if info["model_file"].endswith(".onnx"):
        predicted = diycnn("predict", str(folder), *map(str, photos), "--json", cwd=cwd)
        np.testing.assert_allclose(_probs(predicted, names), want, atol=ATOL, err_msg=f"diycnn predict on the {fmt} export")
        proc = subprocess.run([sys.executable, "predict.py", *map(str, photos)], cwd=folder, env=_user_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        np.testing.assert_allclose(_probs(proc, names), want, atol=ATOL, err_msg=f"predict.py of the {fmt} export")
        assert info["unknown"]["output"] == "unknown_score", info["unknown"]
        for answer in (predicted, proc):
            np.testing.assert_allclose(_scores(answer), scores, atol=ATOL, err_msg=f"unknown score, {fmt} export")
            assert [p["unknown"] for p in json.loads(answer.stdout)] == list(scores > info["unknown"]["threshold"])
    elif info["model_file"] == "model.json":  # the model as README.txt feeds it, then with its predict.js
        inputs = _export_inputs(folder, photos, cwd)
        np.testing.assert_allclose(_tfjs_probs(folder, inputs), want, atol=ATOL, err_msg=f"TF.js on the {fmt} export")
        assert info["unknown"]["script"] == "predict.js", info["unknown"]
        _predict_js_answers(folder, photos, want, scores, inputs)
    elif fmt == "webpage":  # the page's own code (predict.js, in TF.js under Node.js) on the whole photos
        _predict_js_answers(folder, photos, want, scores)
    elif info["model_file"].endswith(".pt"):  # TorchScript, loaded with torch alone: forward and unknown_score
        import torch

        model = torch.jit.load(str(folder / info["model_file"]), map_location="cpu").eval()
        x = torch.from_numpy(_export_inputs(folder, photos, cwd))
        with torch.inference_mode():
            np.testing.assert_allclose(model(x).numpy(), want, atol=ATOL, err_msg=f"TorchScript, {fmt} export")
            assert info["unknown"]["method_name"] == "unknown_score", info["unknown"]
            np.testing.assert_allclose(model.unknown_score(x).numpy(), scores, atol=ATOL,
                                       err_msg=f"TorchScript's unknown scores, {fmt} export")


@pytest.mark.parametrize("case", CASES)
def test_every_recipe_works_where_users_run_it(work, case):
    run = _trained(work, case)
    cwd = work["root"]
    names = json.loads((run / "model.json").read_text())["class_names"]
    unseen = work["unseen"][_project_of(case)]
    photos = sorted(p for p in unseen.rglob("*") if p.is_file())
    strangers = work["unseen"]["other" if _project_of(case) == "people" else "people"] \
        if "people" in work["unseen"] else work["unseen"]["other"]  # photos of none of its classes
    formats = _formats(run)
    assert "onnx" in formats and "tm" in formats
    folders = {fmt: cwd / f"{run.name}-export-{fmt}" for fmt in formats}
    cams = cwd / f"cams-{run.name}"

    metrics = json.loads((run / "metrics.json").read_text())
    stored = metrics["test_probabilities"]
    test_photos = sorted(stored)[:4]
    data = Path(json.loads((run / "model.json").read_text())["data"])

    # predict, evaluate, explain and every export: each a new process that has only the run directory
    predicted, evaluated, own_test, *_ = _both(
        lambda: diycnn("predict", str(run), *map(str, photos), "--json", cwd=cwd),
        lambda: diycnn("evaluate", str(run), str(unseen), "--json", "--unknown-folder", str(strangers), cwd=cwd),
        lambda: diycnn("predict", str(run), *[str(data / p) for p in test_photos], "--json", cwd=cwd),
        lambda: diycnn("explain", str(run), str(photos[0]), "--out", str(cams), cwd=cwd),
        *[lambda fmt=fmt: diycnn("export", str(run), "--format", fmt, "--out", str(folders[fmt]), cwd=cwd)
          for fmt in formats])
    want = _probs(predicted, names)
    work["want"][case] = want[0]  # the app's preview of photos[0] must give these
    assert want.shape == (len(photos), len(names)) and np.allclose(want.sum(1), 1, atol=1e-4)
    result = json.loads(evaluated.stdout)
    assert result["n"] == len(photos) and 0 <= result["accuracy"] <= 1
    assert len(list(cams.glob("*.gradcam.jpg"))) == 1
    # the saved model predicts what the run scored, its calibration (temperature) included
    assert np.allclose(_probs(own_test, names), [stored[p] for p in test_photos], atol=ATOL)
    section = metrics["calibration"]
    assert 0 <= section["test_ece_before"] <= 1 and 0 <= section["test_ece_after"] <= 1
    if section["calibrated"]:
        assert section["photos"] > 0 and section["temperature"] > 0
    else:
        assert section["why"] and section["test_ece_after"] == section["test_ece_before"]

    # "none of these": every prediction says whether it is unknown, with its score, by the run's threshold
    threshold = metrics["unknown"]["threshold"]
    assert metrics["unknown"]["enabled"] and 0 <= metrics["unknown"]["test_known_rejected"] <= 1
    for item in json.loads(predicted.stdout):
        assert item["unknown"] == (item["unknown_score"] > threshold)
        assert item["label"] in ([*names, "no face"] if item.get("face") is False else [*names, "unknown"])
    figures = result["unknown"]
    assert figures["threshold"] == pytest.approx(threshold) and 0 <= figures["known_called_unknown"] <= 1
    assert figures["strangers"] > 0 and 0 <= figures["strangers_called_unknown"] <= 1

    # each export predicts what the run predicts, used as its README says
    _both(*[lambda fmt=fmt: _check_export(folders[fmt], fmt, photos, want, names, cwd, _scores(predicted))
            for fmt in formats])


def _test_pattern() -> bytes:
    """Colour bars, as a webcam test card shows: no face anywhere."""
    import io

    from PIL import Image

    bars = np.repeat(np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255],
                               [255, 0, 0], [0, 0, 255], [0, 0, 0]], dtype=np.uint8), 40, axis=0)
    out = io.BytesIO()
    Image.fromarray(np.tile(bars[None], (240, 1, 1))).save(out, format="PNG")
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("project", ["people", "other"])
def test_the_app_started_fresh_previews_and_exports_every_run(work, project):
    """`diycnn ui` in a new process on a project whose runs were trained by other processes, as after a
    restart: each run previews a photo (the run's own probabilities, as `diycnn predict` gave them) and
    the newest run exports Teachable Machine's format (the app's default; every format of every run is
    exported by the CLI test above)."""
    import httpx

    cases = [c for c in CASES if _project_of(c) == project]
    runs = {case: _trained(work, case) for case in cases}
    data = work["projects"][project]
    photo = sorted(p for p in work["unseen"][project].rglob("*") if p.is_file())[0]
    port = _free_port()
    server = subprocess.Popen([DIYCNN, "ui", "--project", str(data), "--port", str(port)], cwd=work["root"],
                              env=_user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"X-Diycnn": "1"}, timeout=300) as client:
            for _ in range(300):
                try:
                    if client.get("/api/project").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            listed = {r["name"] for r in client.get("/api/project").json()["runs"]}
            assert {r.name for r in runs.values()} <= listed
            for case, run in runs.items():
                names = json.loads((run / "model.json").read_text())["class_names"]
                want = work["want"].get(case)
                if want is None:  # this test alone: ask a fresh `diycnn predict`
                    want = _probs(diycnn("predict", str(run), str(photo), "--json", cwd=work["root"]), names)[0]
                answer = client.post(f"/api/predict?run={run.name}", content=photo.read_bytes())
                assert answer.status_code == 200, f"{case}: {answer.text}"
                prep = json.loads((run / "model.json").read_text())["model"].get("preprocessing") or {}
                if prep.get("faces") or prep.get("align"):  # a test pattern: no face, and the page says so
                    blank = client.post(f"/api/predict?run={run.name}", content=_test_pattern())
                    assert blank.status_code == 200 and blank.json()["no_face"] is True, f"{case}: {blank.text}"
                assert isinstance(answer.json()["unknown"], bool), f"{case}: the preview says whether it is none of these"
                got = np.array([answer.json()["probabilities"][c] for c in names])
                np.testing.assert_allclose(got, want, atol=ATOL, err_msg=f"the app's preview of {case}")
            made = client.post("/api/export/tm")  # the newest run, as the page's button does
            assert made.status_code == 200, made.text
            zipped = client.get(made.json()["download"])
            assert zipped.status_code == 200 and zipped.content[:2] == b"PK"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output, output[-3000:]
