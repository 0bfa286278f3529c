"""The face network: TF.js weights read and dequantised by diycnn, the PyTorch port against
face-api.js's own network in TensorFlow.js, descriptors that tell people apart, the pinned
package (hash checked, never random weights), and the face recipes end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import diycnn
from diycnn.cli import main
from diycnn.models import face_weights
from diycnn.models.face_net import MEAN_RGB, FaceRecognitionNet, load_face_recognition_net
from diycnn.models.tfjs_weights import TfjsWeightsError, read_tfjs_weights
from tests.conftest import REPO, SHARED

KPOP = SHARED / "kpop_idols" / "train"
TEST_MODULES = REPO / "tests" / "js" / "node_modules"  # face-api.js runs on the full @tensorflow/tfjs


# --- the TF.js weights reader ----------------------------------------------------------------------
def _manifest(folder: Path, weights: list[dict], paths=("w.bin",)) -> Path:
    path = folder / "m-weights_manifest.json"
    path.write_text(json.dumps([{"paths": list(paths), "weights": weights}]))
    return path


def test_reader_dequantises_as_tfjs_does(tmp_path):
    q = np.array([0, 1, 255, 7], dtype=np.uint8)
    f = np.array([1.5, -2.25], dtype="<f4")
    h = np.array([0.5, 3.0], dtype="<f2")
    (tmp_path / "w.bin").write_bytes(q.tobytes() + f.tobytes() + h.tobytes())
    m = _manifest(tmp_path, [
        {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "b", "shape": [2], "dtype": "float32"},
        {"name": "c", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
    ])
    w = read_tfjs_weights(m)
    np.testing.assert_array_equal(w["a"], np.array([[-1.0, -0.5], [126.5, 2.5]], dtype=np.float32))
    np.testing.assert_array_equal(w["b"], f)
    np.testing.assert_array_equal(w["c"], np.array([0.5, 3.0], dtype=np.float32))


@pytest.mark.parametrize("paths, size, message", [
    (["../w.bin"], 4, "plain files beside it"),
    (["/etc/passwd"], 4, "plain files beside it"),
    (["w.bin"], 5, "describes 4 bytes of weights but its shards hold 5"),
])
def test_reader_refuses_foreign_manifests(tmp_path, paths, size, message):
    (tmp_path / "w.bin").write_bytes(b"\0" * size)
    m = _manifest(tmp_path, [{"name": "a", "shape": [1], "dtype": "float32"}], paths)
    with pytest.raises(TfjsWeightsError, match=message):
        read_tfjs_weights(m)


# --- the port against face-api.js -----------------------------------------------------------------------
def test_face_net_matches_face_api_js_in_tensorflow_js(face_model_dir, tmp_path):
    from diycnn.exports.tfjs_format import find_tfjs

    node, modules = (find_tfjs() or (None, None))[0], TEST_MODULES
    if node is None or not (modules / "@tensorflow" / "tfjs" / "package.json").is_file():
        pytest.skip("needs Node.js and @tensorflow/tfjs (make test installs them into tests/js)")
    with tarfile.open(face_model_dir / face_weights.TARBALL) as tar:  # face-api's own code, from the package
        js = tar.extractfile("package/dist/face-api.node.js").read()
    (tmp_path / "face-api.node.js").write_bytes(js)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 150, 150, 3)).astype(np.float32)
    x[1] = np.asarray(_kpop_faces(1)[0], dtype=np.float32)  # and one real face
    x.tofile(tmp_path / "x.bin")
    subprocess.run([node, str(REPO / "tests" / "js" / "face_api_check.cjs"), str(modules), str(tmp_path / "face-api.node.js"),
                    str(face_model_dir), str(tmp_path / "x.bin"), "2", str(tmp_path / "y.bin")],
                   check=True, capture_output=True, timeout=300)
    expected = np.fromfile(tmp_path / "y.bin", dtype=np.float32).reshape(2, 128)
    net = load_face_recognition_net(face_model_dir / face_weights.RECOGNITION)
    with torch.no_grad():
        got = net(((torch.from_numpy(x) - torch.tensor(MEAN_RGB)) / 255).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(expected).max() > 0.05  # a real descriptor, not zeros


def test_landmark_net_matches_face_api_js(face_model_dir, tmp_path):
    from diycnn.exports.tfjs_format import find_tfjs
    from diycnn.models.face_net import load_face_landmark_net

    node, modules = (find_tfjs() or (None, None))[0], TEST_MODULES
    if node is None or not (modules / "@tensorflow" / "tfjs" / "package.json").is_file():
        pytest.skip("needs Node.js and @tensorflow/tfjs (make test installs them into tests/js)")
    with tarfile.open(face_model_dir / face_weights.TARBALL) as tar:
        (tmp_path / "face-api.node.js").write_bytes(tar.extractfile("package/dist/face-api.node.js").read())
    x = np.asarray(_kpop_faces(1)[0][0].resize((112, 112)), dtype=np.float32)[None]
    x.tofile(tmp_path / "x.bin")
    subprocess.run([node, str(REPO / "tests" / "js" / "face_api_check.cjs"), str(modules), str(tmp_path / "face-api.node.js"),
                    str(face_model_dir), str(tmp_path / "x.bin"), "1", str(tmp_path / "y.bin"), "landmarks"],
                   check=True, capture_output=True, timeout=300)
    expected = np.fromfile(tmp_path / "y.bin", dtype=np.float32).reshape(68, 2)
    net = load_face_landmark_net(face_model_dir / "face_landmark_68_model-weights_manifest.json")
    with torch.no_grad():
        got = net(((torch.from_numpy(x) - torch.tensor(MEAN_RGB)) / 255).permute(0, 3, 1, 2)).numpy()[0]
    assert np.abs(got - expected).max() <= 1e-4
    eyes = expected[36:48]
    assert 0.05 < eyes[:, 0].min() and eyes[:, 0].max() < 0.95  # a face's eyes, inside the photo


def test_alignment_levels_the_eyes_at_fixed_places(face_model_dir):
    from PIL import Image

    from diycnn.data.align import EYES, align_face, landmarks
    from diycnn.models.recipes import FaceLandmarks

    net = FaceLandmarks()
    face = _kpop_faces(1)[0][0]
    tilted = face.rotate(15, resample=Image.BILINEAR, expand=True)
    for im in (face, tilted):
        out = align_face(im, 150, net)
        assert out is not None and out.size == (150, 150)
        p = landmarks(out, net)
        left, right = p[36:42].mean(axis=0) / 150, p[42:48].mean(axis=0) / 150
        assert abs(left[1] - right[1]) < 0.03  # level
        assert abs(left[0] - EYES[0]) < 0.05 and abs(right[0] - EYES[1]) < 0.05 and abs(left[1] - EYES[2]) < 0.05


def _kpop_faces(per_person: int, people: int = 1, start: int = 0):
    from PIL import Image

    out, labels = [], []
    for k, person in enumerate(sorted(p.name for p in KPOP.iterdir() if p.is_dir())[start:start + people]):
        files = sorted(f for f in (KPOP / person).iterdir() if "(1)" not in f.name)[:per_person]
        for f in files:
            out.append(Image.open(f).convert("RGB").resize((150, 150), Image.BILINEAR))
            labels.append(k)
    return out, np.array(labels)


@pytest.mark.skipif(not KPOP.is_dir(), reason="needs $DIYCNN_DATASETS/kpop_idols")
def test_descriptors_of_the_same_person_are_closer_than_of_different_people(face_model_dir):
    images, labels = _kpop_faces(per_person=6, people=4)
    x = torch.tensor(np.stack([np.asarray(im, dtype=np.float32) for im in images]))
    net = load_face_recognition_net(face_model_dir / face_weights.RECOGNITION)
    with torch.no_grad():
        d = net(((x - torch.tensor(MEAN_RGB)) / 255).permute(0, 3, 1, 2))
    dist = torch.cdist(d, d).numpy()
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(labels), dtype=bool)
    assert dist[same & off_diag].mean() < 0.9 * dist[~same].mean()
    np.fill_diagonal(dist, np.inf)
    nearest = labels[dist.argmin(axis=1)]
    assert (nearest == labels).mean() >= 0.75  # leave-one-out nearest neighbour, 4 people


def test_mirror_descriptor_is_the_mean_of_both_views():
    torch.manual_seed(0)
    net = FaceRecognitionNet().eval()
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        both = net(x)
        net.mirror = False
        single, flipped = net(x), net(x.flip(3))
    torch.testing.assert_close(both, (single + flipped) / 2)
    assert both.shape == (2, 128)


# --- the pinned package -------------------------------------------------------------------------------
def test_the_package_is_checked_against_its_pinned_hash_and_installs_offline(face_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIYCNN_WEIGHTS", str(tmp_path / "weights"))
    assert face_weights.installed() is None
    tampered = tmp_path / face_weights.TARBALL
    data = bytearray((face_model_dir / face_weights.TARBALL).read_bytes())
    data[-100] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 .* not the pinned"):
        face_weights.install_from(tampered)
    assert face_weights.installed() is None  # nothing unpacked from it
    assert main(["weights", "fetch", "--from", str(face_model_dir / face_weights.TARBALL)]) == 0
    assert (face_weights.installed() / face_weights.RECOGNITION).is_file()
    assert json.loads((face_weights.installed() / "SOURCE.json").read_text())["tarball_sha256"] == face_weights.TARBALL_SHA256
    # an unpacked model/ folder works too
    monkeypatch.setenv("DIYCNN_WEIGHTS", str(tmp_path / "weights2"))
    assert diycnn.face_weights(source=face_model_dir, fetch=True)["present"]


def test_no_weights_is_a_clear_error_never_random_weights(two_class_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIYCNN_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("DIYCNN_OFFLINE", "1")
    assert main(["weights"]) == 1
    assert "diycnn weights fetch" in capsys.readouterr().out
    assert main(["train", str(two_class_data), "--model", "face-probe", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "face-recognition weights are not in" in err and "--weights PATH" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- the recipes end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faces_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    for person in sorted(p.name for p in KPOP.iterdir() if p.is_dir())[:3]:
        (root / person).mkdir()
        for f in sorted((KPOP / person).iterdir())[:12]:
            shutil.copy(f, root / person / f.name)
    return root


@pytest.mark.slow
@pytest.mark.skipif(not KPOP.is_dir(), reason="needs $DIYCNN_DATASETS/kpop_idols")
def test_face_probe_trains_predicts_exports_and_explains(face_model_dir, faces_data, tmp_path, offline):
    run = diycnn.train(faces_data, model="face-probe", out=tmp_path / "run")
    m = run.metrics
    assert m["model"] == "face-probe" and m["backbone"] == "face_recognition_net"
    assert m["test_accuracy"] >= 0.5 and m["feature_cache"]["misses"] > 0
    info = json.loads((run.dir / "model.json").read_text())
    assert info["model"]["weights_source"] == f"package:{face_weights.PACKAGE}@{face_weights.VERSION}"
    # predictions from the loaded run agree with the test metrics' photos
    photo = next(iter(sorted((faces_data).glob("*/*"))))
    assert run.predict([photo])[0]["label"] in run.class_names
    # every format, each step in its own process, is tests/test_contract.py's; here what is special to faces
    out = diycnn.export(run.dir, "onnx", out=tmp_path / "onnx")
    assert json.loads((out / "export.json").read_text())["check"]["max_abs_diff"] <= 1e-4
    # the ONNX folder aligns faces itself (landmarks.onnx): from raw photos, without torch, it gives the
    # run's probabilities
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["preprocessing"]["align"] and info["landmarks"]["max_abs_diff"] <= 1e-4
    assert any(step.startswith("align the face") for step in info["steps"])
    files = [str(f) for f in sorted(faces_data.glob("*/*"))[::6]]
    want = np.array([[p["probabilities"][c] for c in run.class_names] for p in run.predict(files)])
    code = ("import json, sys\nfrom diycnn.cli import main\n"
            f"rc = main(['predict', {str(tmp_path / 'onnx')!r}, *{files!r}, '--json'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.array([[p["probabilities"][c] for c in run.class_names] for p in json.loads(proc.stdout)])
    np.testing.assert_allclose(got, want, atol=1e-4)
    # TF.js carries the face network with its mirror averaging inside: the same layers on both views
    from diycnn.data.loader import decode_all
    from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict

    if find_tfjs() is not None:
        aligned, ok, _ = decode_all(files, run.preprocessing)
        out = diycnn.export(run.dir, "tfjs", out=tmp_path / "tfjs", check_limit=3)
        layers = {layer["name"]: layer for layer in
                  json.loads((out / "model.json").read_text())["modelTopology"]["config"]["layers"]}
        assert len(layers["conv64_1_conv1"]["inbound_nodes"]) == 2 and "mirror_average" in layers  # shared
        x = (aligned * np.float32(run.preprocessing.input_scale) - np.float32(run.preprocessing.mean)) \
            / np.float32(run.preprocessing.std)
        np.testing.assert_allclose(tfjs_predict(out, x.astype(np.float32))[0], want[ok], atol=1e-4)
    cams = diycnn.explain(run.dir, [photo], out=tmp_path / "cams")
    assert len(cams) == 1 and Path(cams[0]["file"]).is_file() and cams[0]["layer"].startswith("backbone.")
    # a second run reads every descriptor from the feature cache
    again = diycnn.train(faces_data, model="face-probe", out=tmp_path / "run2").metrics
    assert again["feature_cache"]["misses"] == 0 and again["test_accuracy"] == m["test_accuracy"]


def test_face_recipes_have_keras_summaries(capsys):
    assert main(["summary", "face-probe", "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "face-probe-head" in out and "Dense" in out and "Rescaling" in out
