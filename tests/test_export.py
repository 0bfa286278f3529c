"""Exports predict what the run predicts: ONNX, TorchScript, Keras, TensorFlow.js and Teachable Machine's files,
for the blog's seed-cnn, a spec with BatchNormalization/GlobalAveragePooling2D and a timm backbone."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import diycnn
from diycnn import exports
from diycnn.data.loader import decode_all
from tests.conftest import REPO, make_dataset, offline_env

BN_GAP_SPEC = """
name: bn-gap
layers:
  - Input: {shape: [20, 20, 3]}
  - Conv2D: {filters: 8, kernel_size: 3, strides: 2, padding: same, use_bias: false}
  - BatchNormalization: {}
  - Activation: relu
  - AveragePooling2D: {pool_size: 3, strides: 1, padding: same}
  - Conv2D: {filters: 16, kernel_size: 3, padding: same, activation: swish}
  - BatchNormalization: {}
  - GlobalAveragePooling2D
  - Dropout: {rate: 0.2}
  - Dense: {units: num_classes}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three trained runs (a few epochs each) on 3 classes of generated photos."""
    root = tmp_path_factory.mktemp("export")
    with offline_env(root / "cache"):
        data = make_dataset(root / "photos", {"red": 10, "blue": 10, "green": 10}, seed=5)
        (root / "bn-gap.yaml").write_text(BN_GAP_SPEC)
        out = {
            "seed-cnn": diycnn.train(data, model="seed-cnn", out=root / "seed-cnn", epochs=1, batch_size=8),
            "bn-gap": diycnn.train(data, model=str(root / "bn-gap.yaml"), out=root / "bn-gap", epochs=3,
                                   batch_size=8, tta=True),  # mirror test-time augmentation inside the graph
            "tm": diycnn.train(data, model="tm", out=root / "tm", epochs=3),
        }
        yield {k: r.dir for k, r in out.items()} | {"data": data, "root": root}


def held_out(run_dir):
    split = json.loads((run_dir / "split.json").read_text())
    data = json.loads((run_dir / "model.json").read_text())["data"]
    return [os.path.join(data, p) for c in sorted(split["splits"]["test"]) for p in split["splits"]["test"][c]]


def torch_fp32(run_dir, files):
    """The run's own probabilities in fp32 (diycnn's predict path, not the export code)."""
    run = diycnn.load(run_dir, device="cpu")
    run.precision = "fp32"
    return np.array([[p["probabilities"][c] for c in run.class_names] for p in run.predict(files)])


def test_photos_are_found(runs):
    assert len(held_out(runs["seed-cnn"])) == 6  # 15% of 10 per class, rounded up


@pytest.mark.slow
# seed-cnn and tm go through every format as users run them in tests/test_contract.py; bn-gap (BatchNorm,
# global pooling, mirror averaging in the graph) is a spec no recipe has
@pytest.mark.parametrize("kind", ["bn-gap"])
def test_onnx_round_trip_equals_the_run(runs, kind, tmp_path):
    out = diycnn.export(runs[kind], "onnx", out=tmp_path / "onnx")
    info = json.loads((out / "export.json").read_text())
    assert info["check"]["max_abs_diff"] <= 1e-4 and info["check"]["photos"] == 6
    assert "test photos" in info["check"]["source"] and info["opset"] == exports.OPSET
    assert info["tta"] is (kind == "bn-gap")
    files = held_out(runs[kind])
    onnx_run = diycnn.load(out)
    assert type(onnx_run).__name__ == "OnnxRun"
    got = np.array([[p["probabilities"][c] for c in onnx_run.class_names] for p in onnx_run.predict(files)])
    np.testing.assert_allclose(got, torch_fp32(runs[kind], files), atol=1e-4)
    # dynamic batch: one photo at a time gives the same numbers as a batch
    images, _, _ = decode_all(files, onnx_run.preprocessing)
    one = np.concatenate([onnx_run.predict_arrays(images[i:i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(one, got, atol=1e-5)
    result = onnx_run.evaluate(runs["data"])
    assert result["n"] == 30 and "seen_in_training" not in result


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", ["bn-gap"])
def test_torchscript_round_trip_equals_the_run(runs, kind, tmp_path):
    import torch

    out = diycnn.export(runs[kind], "torchscript", out=tmp_path / "ts")
    files = held_out(runs[kind])
    info = json.loads((out / "export.json").read_text())
    assert info["check"]["max_abs_diff"] <= 1e-4
    model = torch.jit.load(str(out / "model.torchscript.pt")).eval()
    images, _, _ = decode_all(files, diycnn.load(runs[kind]).preprocessing)
    with torch.no_grad():
        got = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, torch_fp32(runs[kind], files), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["seed-cnn", "bn-gap"])
def test_keras_round_trip_equals_the_run(runs, kind, tmp_path):
    from diycnn.exports.keras_format import load_keras

    if importlib.util.find_spec("keras") is None:
        pytest.skip("Keras 3 is an optional extra (pip install 'diycnn[keras]'); CI installs it")

    out = diycnn.export(runs[kind], "keras", out=tmp_path / "keras")
    model = load_keras(out / "model.keras")
    run = diycnn.load(runs[kind])
    names = [layer.name for layer in model.layers]
    assert names[:len(run.recipe.spec.layers)] == [layer.name for layer in run.recipe.spec.layers]
    assert model.count_params() == run.recipe.spec.count_params()
    files = held_out(runs[kind])
    images, _, _ = decode_all(files, run.preprocessing)
    x = images.astype(np.float32) * run.preprocessing.input_scale
    got = np.asarray(model.predict(x, verbose=0))
    if run.tta:  # the Keras model is the bare spec; export.json tells users to average with the mirror image
        assert "mirror" in json.loads((out / "export.json").read_text())["tta_note"]
        got = (got + np.asarray(model.predict(x[:, :, ::-1].copy(), verbose=0))) / 2
    np.testing.assert_allclose(got, torch_fp32(runs[kind], files), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["seed-cnn", "bn-gap"])
def test_tfjs_export_predicts_the_same_in_tensorflow_js(runs, kind, tmp_path):
    from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict

    if find_tfjs() is None:
        pytest.skip("TensorFlow.js export checks need Node.js and the TF.js packages (make test installs them)")
    # the blog's model runs at ~10 s per photo in TF.js' pure-JavaScript CPU backend: 3 photos
    out = diycnn.export(runs[kind], "tfjs", out=tmp_path / "tfjs", check_limit=3 if kind == "seed-cnn" else 1000)
    info = json.loads((out / "export.json").read_text())
    assert info["check"]["engine"].startswith("TensorFlow.js 4.22.0") and info["check"]["max_abs_diff"] <= 1e-4
    assert info["check"]["photos"] == (3 if kind == "seed-cnn" else 6)  # bn-gap: TFJS_CHECK_LIMIT caps nothing
    run = diycnn.load(runs[kind])
    model = json.loads((out / "model.json").read_text())
    layers = [layer["config"]["name"] for layer in model["modelTopology"]["config"]["layers"]]
    assert layers[:len(run.recipe.spec.layers)] == [layer.name for layer in run.recipe.spec.layers]
    specs = model["weightsManifest"][0]["weights"]
    assert sum(int(np.prod(w["shape"])) for w in specs) * 4 == (out / "weights.bin").stat().st_size
    assert sum(int(np.prod(w["shape"])) for w in specs) == run.recipe.spec.count_params()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["modelFile"] == "model.json" and meta["labels"] == run.class_names and meta["tfjsVersion"] == "4.22.0"
    if kind == "seed-cnn":
        return  # its check above ran TF.js on the run's test photos already
    # independently of the export's own check: the held-out photos through TF.js against the run
    files = held_out(runs[kind])
    images, _, _ = decode_all(files, run.preprocessing)
    from diycnn.exports.job import normalised

    x = normalised(run.preprocessing, images)
    got, _ = tfjs_predict(out, x)
    if run.tta:
        assert "mirror" in info["tta_note"]
        got = (got + tfjs_predict(out, x[:, :, ::-1].copy())[0]) / 2
    np.testing.assert_allclose(got, torch_fp32(runs[kind], files), atol=1e-4)


@pytest.mark.slow
def test_tfjs_export_of_the_tm_recipe_runs_as_teachable_machine_feeds_it(runs, tmp_path):
    """The tm recipe (EfficientNet-Lite0 + head) as a TF.js functional layers model: checked at
    export, and independently fed as Teachable Machine's library feeds a model (a centred square
    at 224 px, pixels / 127.5 - 1)."""
    from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict

    if find_tfjs() is None:
        pytest.skip("TensorFlow.js export checks need Node.js and the TF.js packages (make test installs them)")
    out = diycnn.export(runs["tm"], "tfjs", out=tmp_path / "tfjs")
    info = json.loads((out / "export.json").read_text())
    assert info["check"]["engine"].startswith("TensorFlow.js") and info["check"]["max_abs_diff"] <= 1e-4
    run = diycnn.load(runs["tm"])
    model = json.loads((out / "model.json").read_text())
    topology = model["modelTopology"]
    assert topology["class_name"] == "Model" and topology["config"]["layers"][0]["config"]["batch_input_shape"] == \
        [None, 224, 224, 3]
    kinds = {layer["class_name"] for layer in topology["config"]["layers"]}
    assert {"DepthwiseConv2D", "BatchNormalization", "Add", "GlobalAveragePooling2D", "Dense"} <= kinds
    stored = sum(int(np.prod(w["shape"])) for w in model["weightsManifest"][0]["weights"])
    want = sum(p.numel() for p in run.module.parameters()) + sum(
        b.numel() for n, b in run.module.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert stored == want and stored * 4 == (out / "weights.bin").stat().st_size
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["imageSize"] == 224 and meta["labels"] == run.class_names and meta["modelFile"] == "model.json"
    files = held_out(runs["tm"])
    images, _, _ = decode_all(files, run.preprocessing)
    got, _ = tfjs_predict(out, images.astype(np.float32) / 127.5 - 1)
    np.testing.assert_allclose(got, torch_fp32(runs["tm"], files), atol=1e-4)


@pytest.mark.slow
def test_tfjs_export_of_a_finetuned_backbone_with_mirror_averaging(runs, tmp_path):
    from diycnn.exports.tfjs_format import find_tfjs

    if find_tfjs() is None:
        pytest.skip("TensorFlow.js export checks need Node.js and the TF.js packages (make test installs them)")
    with offline_env(tmp_path / "cache"):
        run = diycnn.train(runs["data"], model="finetune", out=tmp_path / "ft", epochs=1, batch_size=8)
    assert run.tta  # finetune averages each photo with its mirror image; TF.js is told to do the same
    out = diycnn.export(run.dir, "tfjs", out=tmp_path / "tfjs", check_limit=2)
    info = json.loads((out / "export.json").read_text())
    assert info["check"]["max_abs_diff"] <= 1e-4 and info["check"]["photos"] == 2 and "mirror" in info["tta_note"]
    layers = json.loads((out / "model.json").read_text())["modelTopology"]["config"]["layers"]
    assert layers[0]["config"]["batch_input_shape"] == [None, *run.preprocessing.output_size, 3]


def test_tfjs_export_refuses_what_it_cannot_write():
    from diycnn.exports.tfjs_backbone import write_tfjs_backbone
    from diycnn.models.recipes import get_recipe
    from diycnn.settings import export_formats_for

    with pytest.raises(ValueError, match="EfficientNet-Lite backbones and the face network .*not 'resnet18'.*Use ONNX"):
        write_tfjs_backbone(get_recipe("tm", 2, backbone="resnet18"), None, (224, 224, 3), None, "test")
    assert "tfjs" in export_formats_for("backbone", "face_recognition_net")
    assert "tfjs" not in export_formats_for("backbone", "resnet18")
    assert export_formats_for("spec") == ["onnx", "torchscript", "keras", "tm", "tfjs", "webpage"]


def test_tfjs_layer_vocabulary_matches_diycnn(tmp_path):
    """Every layer and activation the TF.js writer maps, in one model, against diycnn's forward."""
    import torch

    from diycnn.exports.tfjs_format import TFJS_ACTIVATIONS, find_tfjs, tfjs_predict, write_tfjs
    from diycnn.layers import Activation, AveragePooling2D, Conv2D, Dense, Flatten, Input, MaxPooling2D, Rescaling
    from diycnn.models.sequential import Sequential

    if find_tfjs() is None:
        pytest.skip("TensorFlow.js export checks need Node.js and the TF.js packages (make test installs them)")
    acts = ["elu", "selu", "softplus", "sigmoid", "tanh", "swish", "silu"]
    assert set(acts) | {"relu6", "gelu", "relu", "softmax", "linear"} == set(TFJS_ACTIVATIONS)
    spec = Sequential([Input((12, 12, 3)), Rescaling(0.5, 0.1), Conv2D(4, 3, activation="relu6", padding="same"),
                       *[Activation(a) for a in acts[:4]], MaxPooling2D(2, padding="same"),
                       Conv2D(6, 2, activation="gelu"), *[Activation(a) for a in acts[4:]],
                       AveragePooling2D(2), Flatten(), Dense(5, activation="relu"), Dense(3, activation="softmax")],
                      name="vocabulary")
    module = spec.build(seed=0).eval()
    write_tfjs(spec, module, tmp_path, "test")
    x = np.random.default_rng(0).standard_normal((4, 12, 12, 3)).astype(np.float32)
    with torch.no_grad():
        want = module.predict_proba(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got, _ = tfjs_predict(tmp_path, x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    leaky = Sequential([Input((4, 4, 3)), Flatten(), Dense(3, activation="leaky_relu"), Dense(2)], name="leaky")
    with pytest.raises(ValueError, match="activation 'leaky_relu' has no TensorFlow.js equivalent.*Use ONNX"):
        write_tfjs(leaky, leaky.build(seed=0), tmp_path, "test")


def test_tfjs_export_without_node_is_written_unchecked_and_says_how_to_check(runs, tmp_path, monkeypatch, capsys):
    from diycnn.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "no-node-here"))  # as on a machine without Node.js
    assert main(["export", str(runs["bn-gap"]), "--format", "tfjs", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "Not checked: Node.js (node) is not on the PATH" in out and "diycnn weights fetch" in out
    info = json.loads((tmp_path / "t" / "export.json").read_text())
    assert info["check"]["status"] == "unchecked" and (tmp_path / "t" / "weights.bin").is_file()
    assert "Not checked" in (tmp_path / "t" / "README.txt").read_text()


def test_keras_torch_backend_quirk_is_named_before_export():
    from diycnn.exports.keras_format import backend_problems
    from diycnn.models.layers import AveragePooling2D, Dense, Flatten, Input
    from diycnn.models.sequential import Sequential

    uneven = Sequential([Input((10, 10, 3)), AveragePooling2D(3, strides=2, padding="same"), Flatten(), Dense(2)])
    assert backend_problems(uneven, "torch") == ["average_pooling2d (AveragePooling2D) on input (10, 10) pads "
                                                 "unevenly [(0, 1), (0, 1)]"]
    assert backend_problems(uneven, "tensorflow") == []
    even = Sequential([Input((10, 10, 3)), AveragePooling2D(3, strides=1, padding="same"), Flatten(), Dense(2)])
    assert backend_problems(even, "torch") == []


def test_formats_that_do_not_apply_are_refused_with_the_ones_that_do(runs, tmp_path):
    with pytest.raises(ValueError, match=r"backbone tf_efficientnet_lite0; Keras exports cover Keras-style spec "
                                         r"models .*Formats for this run: onnx, torchscript, tm, tfjs, webpage\.$"):
        diycnn.export(runs["tm"], "keras", out=tmp_path / "k")
    with pytest.raises(ValueError, match="Unknown export format 'tflite'. Formats: onnx, torchscript, keras, tm, tfjs"):
        diycnn.export(runs["tm"], "tflite", out=tmp_path / "k")
    with pytest.raises(ValueError, match="--int8 applies to ONNX exports only"):
        diycnn.export(runs["bn-gap"], "keras", out=tmp_path / "k", int8=True)
    assert not (tmp_path / "k").exists()


@pytest.mark.slow
def test_predict_on_an_onnx_export_never_imports_torch(runs, tmp_path):
    out = diycnn.export(runs["tm"], "onnx", out=tmp_path / "onnx")
    files = held_out(runs["tm"])
    code = ("import json, sys\nfrom diycnn.cli import main\n"
            f"rc = main(['predict', {str(out)!r}, *{files!r}, '--json'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)
    want = torch_fp32(runs["tm"], files)
    got = np.array([[p["probabilities"][c] for c in ("blue", "green", "red")] for p in preds])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_standalone_predict_py_matches_diycnn(runs, tmp_path):
    out = diycnn.export(runs["bn-gap"], "onnx", out=tmp_path / "onnx")
    app = tmp_path / "my-app"  # the user copies the folder into their app
    shutil.copytree(out, app)
    files = held_out(runs["bn-gap"])
    proc = subprocess.run([sys.executable, str(app / "predict.py"), *files, "--top-k", "2"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    standalone = json.loads(proc.stdout)
    ours = diycnn.load(out).predict(files, top_k=2)
    assert [p["label"] for p in standalone] == [p["label"] for p in ours]
    for a, b in zip(standalone, ours):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
        assert [k for k, _ in a["top_k"]] == [k for k, _ in b["top_k"]]


@pytest.mark.slow
def test_tm_format_is_tfjs_taking_teachable_machines_pixels(runs, tmp_path):
    """The tm format is Teachable Machine's own: TF.js files + metadata.json + labels.txt, the model
    fed as its library feeds one (a centred square, pixels / 127 - 1), checked in TF.js."""
    from diycnn.exports.snippets import snippets
    from diycnn.exports.tfjs_format import find_tfjs, tfjs_predict

    if find_tfjs() is None:
        pytest.skip("TensorFlow.js export checks need Node.js and the TF.js packages (make test installs them)")
    out = diycnn.export(runs["bn-gap"], "tm", out=tmp_path / "tm")
    assert (out / "labels.txt").read_text() == "0 blue\n1 green\n2 red\n"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["labels"] == ["blue", "green", "red"] and meta["imageSize"] == 20 and meta["modelFile"] == "model.json"
    for field in ("tfjsVersion", "tmVersion", "packageVersion", "packageName", "timeStamp", "modelName"):
        assert isinstance(meta[field], str) and meta[field]
    assert meta["tfjsVersion"][0].isdigit()  # the TF.js version it was checked with
    info = json.loads((out / "export.json").read_text())
    assert info["model_file"] == "model.json" and info["check"]["max_abs_diff"] <= 1e-4
    assert "pixels / 127 - 1" in info["steps"][-1] and not (out / "model.onnx").exists()
    layers = json.loads((out / "model.json").read_text())["modelTopology"]["config"]["layers"]
    assert layers[0]["config"]["name"] == "teachable_machine_pixels"
    run = diycnn.load(runs["bn-gap"])
    files = held_out(runs["bn-gap"])
    images, _, _ = decode_all(files, run.preprocessing)
    x = images.astype(np.float32) / 127 - 1
    got = (tfjs_predict(out, x)[0] + tfjs_predict(out, x[:, :, ::-1].copy())[0]) / 2  # the run's mirror TTA
    np.testing.assert_allclose(got, torch_fp32(runs["bn-gap"], files), atol=1e-4)
    (code,) = [s["code"] for s in snippets(info)]  # TM's own JavaScript: tmImage.load, no Python
    assert "tmImage.load('model.json', 'metadata.json')" in code and code in "".join(
        line[4:] + "\n" for line in (out / "README.txt").read_text().splitlines())
    with pytest.raises(ValueError, match="--int8 applies to ONNX exports only .*--format onnx --int8"):
        diycnn.export(runs["bn-gap"], "tm", out=tmp_path / "tm8", int8=True)
    with pytest.raises(ValueError, match="tm export; diycnn predicts with run directories and ONNX .*model.json"):
        diycnn.load(out)


@pytest.mark.slow
def test_int8_report(runs, tmp_path):
    out = diycnn.export(runs["seed-cnn"], "onnx", out=tmp_path / "onnx", int8=True)
    q = json.loads((out / "export.json").read_text())["int8"]
    assert (out / q["file"]).is_file() and q["size_bytes"] < q["fp32_size_bytes"] / 3  # 35.9M weights to 1 byte
    assert q["photos"] == 6 and -1 <= q["accuracy_change"] <= 1
    assert q["calibrated_on"] == "18 training photos"  # calibration never sees the test photos
    int8 = diycnn.OnnxRun(out, model_file=q["file"])
    assert len(int8.predict(held_out(runs["seed-cnn"]))) == 6


def test_failed_check_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(exports.job, "TOLERANCE", -1.0)
    with pytest.raises(exports.ExportError, match="does not predict the same"):
        diycnn.export(runs["bn-gap"], "onnx", out=tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_existing_export_is_kept_unless_forced(runs, tmp_path):
    out = diycnn.export(runs["bn-gap"], "torchscript", out=tmp_path / "ts")
    with pytest.raises(FileExistsError, match="--force"):
        diycnn.export(runs["bn-gap"], "torchscript", out=out)
    first = (out / "export.json").read_text()
    diycnn.export(runs["bn-gap"], "torchscript", out=out, force=True)
    assert (out / "export.json").read_text() != first  # new timestamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ts"]


def test_export_without_the_data_checks_on_synthetic_photos(runs, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(runs["bn-gap"], run_copy)
    info = json.loads((run_copy / "model.json").read_text())
    info["data"] = str(tmp_path / "gone")
    (run_copy / "model.json").write_text(json.dumps(info))
    out = diycnn.export(run_copy, "onnx")
    assert out == run_copy / "export-onnx"
    check = json.loads((out / "export.json").read_text())["check"]
    assert "synthetic" in check["source"] and check["photos"] == exports.SYNTHETIC_PHOTOS


def test_damaged_or_foreign_exports_give_clear_errors(runs, tmp_path):
    out = diycnn.export(runs["bn-gap"], "onnx", out=tmp_path / "onnx")
    info = json.loads((out / "export.json").read_text())
    (out / "export.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ValueError, match="newer diycnn"):
        diycnn.load(out)
    (out / "export.json").write_text(json.dumps(info))
    (out / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        diycnn.load(out)
    ts = diycnn.export(runs["bn-gap"], "torchscript", out=tmp_path / "ts")
    with pytest.raises(ValueError, match="torchscript export; diycnn predicts with run directories and ONNX"):
        diycnn.load(ts)


def test_cli_export(runs, tmp_path, capsys):
    from diycnn.cli import main

    assert main(["export", str(runs["bn-gap"]), "--format", "onnx", "--out", str(tmp_path / "e")]) == 0
    text = capsys.readouterr().out
    assert "max probability difference from the run" in text and "model.onnx" in text
    assert main(["export", str(runs["tm"]), "--format", "keras", "--out", str(tmp_path / "k")]) == 2
    assert "Formats for this run: onnx, torchscript, tm" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind, fmt", [("tm", "onnx"), ("seed-cnn", "torchscript")])
def test_the_python_snippet_predicts_what_the_run_predicts(runs, kind, fmt, tmp_path):
    """The export dialog's (and README's) copy-paste code, run as a user would, beside the unzipped files."""
    from diycnn.exports.snippets import snippets

    out = diycnn.export(runs[kind], fmt, out=tmp_path / fmt)
    (code,) = [s["code"] for s in snippets(json.loads((out / "export.json").read_text())) if s["language"] == "Python"]
    assert code.splitlines()[-1].strip() in (out / "README.txt").read_text()
    photo = held_out(runs[kind])[0]
    shutil.copyfile(photo, out / "photo.jpg")  # the snippet opens photo.jpg (Pillow reads it by content)
    proc = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = eval(proc.stdout.strip().splitlines()[-1], {})  # {class: probability}
    want = torch_fp32(runs[kind], [photo])[0]
    assert list(got) == diycnn.load(runs[kind]).class_names
    np.testing.assert_allclose(list(got.values()), want, atol=2e-3)


def test_snippets_quote_numbers_and_names_only(runs, tmp_path):
    from diycnn.exports.snippets import snippets

    info = json.loads((diycnn.export(runs["seed-cnn"], "onnx", out=tmp_path / "onnx") / "export.json").read_text())
    for fmt in ("keras", "torchscript", "tfjs"):
        for s in snippets({**info, "export_format": fmt}):
            if s["language"] == "Python":
                compile(s["code"], fmt, "exec")  # valid Python
            elif shutil.which("node"):
                (tmp_path / "s.mjs").write_text(s["code"])
                check = subprocess.run(["node", "--check", str(tmp_path / "s.mjs")], capture_output=True, text=True)
                assert check.returncode == 0, check.stderr
    hostile = json.loads(json.dumps(info))
    hostile["preprocessing"]["mean"] = ["__import__('os').system('x')", 0, 0]
    with pytest.raises(ValueError):
        snippets(hostile)
    hostile = json.loads(json.dumps(info))
    hostile["preprocessing"]["interpolation"] = "bilinear\nimport os"
    with pytest.raises(ValueError):
        snippets(hostile)
    odd = {**info, "class_names": ["a'); import os; ('", "b"], "export_format": "torchscript"}
    (code,) = [s["code"] for s in snippets(odd)]
    assert "labels = [\"a'); import os; ('\", 'b']" in code  # a Python literal, never code


def test_every_export_format_has_one_writer():
    from diycnn.settings import EXPORT_FORMATS

    assert set(exports.WRITERS) == set(EXPORT_FORMATS) == set(exports.MODEL_FILES)


@pytest.mark.slow
def test_teachable_machines_own_library_loads_the_tm_export_and_predicts_the_runs_probabilities(runs, tmp_path):
    """The tm format in Teachable Machine's own JavaScript library (@teachablemachine/image 0.8.5,
    installed by make test), in Chromium: tmImage.load + model.predict(img), as TM's export dialog
    tells its users. The photos are the run's own 224x224 squares, so TM's centre crop is exact."""
    from PIL import Image
    from starlette.staticfiles import StaticFiles

    from tests.conftest import serving
    from tests.test_reports_browser import CHROMIUM, FLAGS

    modules = REPO / "tests" / "js" / "node_modules"
    libraries = [modules / "@tensorflow" / "tfjs" / "dist" / "tf.min.js",
                 modules / "@teachablemachine" / "image" / "dist" / "teachablemachine-image.min.js"]
    if importlib.util.find_spec("playwright") is None or not os.path.exists(CHROMIUM):
        pytest.skip("needs Playwright and Chromium")
    if not all(f.is_file() for f in libraries):
        pytest.skip("needs the TF.js and Teachable Machine packages (make test installs them into tests/js)")
    out = diycnn.export(runs["tm"], "tm", out=tmp_path / "tm")
    run = diycnn.load(runs["tm"])
    files = held_out(runs["tm"])[:3]
    images, _, _ = decode_all(files, run.preprocessing)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"photo{i}.png")
    for library in libraries:
        shutil.copy(library, out)
    (out / "index.html").write_text("<!doctype html><meta charset='utf-8'>"
                                    + "".join(f"<script src='{f.name}'></script>" for f in libraries)
                                    + "".join(f"<img src='photo{i}.png'>" for i in range(len(images))))
    from playwright.sync_api import sync_playwright

    with serving(StaticFiles(directory=out, html=True)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(f"{url}/index.html")
        got = page.evaluate("""async () => {
            const model = await tmImage.load('model.json', 'metadata.json');
            const out = [];
            for (const img of document.images) {
                await img.decode();
                out.push((await model.predict(img)).map(p => [p.className, p.probability]));
            }
            return {labels: model.getClassLabels(), backend: tf.getBackend(), out};
        }""")
        browser.close()
    assert got["labels"] == run.class_names
    probs = np.array([[p for _, p in row] for row in got["out"]])
    assert [c for c, _ in got["out"][0]] == run.class_names
    np.testing.assert_allclose(probs, torch_fp32(runs["tm"], files), atol=2e-3)  # TF.js in a browser: float32


def test_a_run_predicts_in_fp32_like_its_export_also_where_auto_would_pick_bf16(runs, tmp_path, monkeypatch):
    """One prediction everywhere: `diycnn predict RUN` and `RUN/export-onnx` agree on a CPU with bf16 (emulated
    here), because a loaded run predicts in fp32 unless asked; bf16, when asked, really runs and differs."""
    from diycnn.training import device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)  # as on an AVX512-BF16 or AMX CPU
    files = held_out(runs["seed-cnn"])

    def probs(model):
        return np.array([[p["probabilities"][c] for c in model.class_names] for p in model.predict(files)])

    run = diycnn.load(runs["seed-cnn"], device="cpu")
    assert run.precision == "fp32"
    exported = diycnn.load(diycnn.export(runs["seed-cnn"], "onnx", out=tmp_path / "onnx"))
    np.testing.assert_allclose(probs(run), probs(exported), atol=1e-4)
    fast = diycnn.load(runs["seed-cnn"], device="cpu", precision="auto")
    assert fast.precision == "bf16"
    assert np.abs(probs(fast) - probs(run)).max() > 1e-4  # why bf16 is not the default
    with pytest.raises(ValueError, match="ONNX export, which predicts in fp32"):
        diycnn.load(tmp_path / "onnx", precision="bf16")
