"""Untrusted model files: nothing is ever unpickled, and damaged or foreign files give readable errors."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

import diycnn
from diycnn.cli import main


class Payload:
    """Unpickling this writes a marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def run_dir(two_class_data, tiny_spec, tmp_path):
    return diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", epochs=1).dir


def test_pickle_in_place_of_the_weights_is_refused_and_never_runs(run_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (run_dir / "model.safetensors").write_bytes(pickle.dumps({"conv2d.weight": Payload(marker)}))
    with pytest.raises(ValueError, match="not the file this run wrote"):  # the manifest notices first
        diycnn.load(run_dir)
    (run_dir / "manifest.json").unlink()  # an attacker can drop the manifest: the loader still refuses
    with pytest.raises(ValueError, match="not a valid safetensors file.*never unpickles"):
        diycnn.load(run_dir)
    assert main(["predict", str(run_dir), str(run_dir / "curves.png")]) == 2
    assert "never unpickles" in capsys.readouterr().err
    assert not marker.exists()


def test_pickle_in_place_of_an_onnx_model_is_refused_and_never_runs(run_dir, tmp_path):
    out = diycnn.export(run_dir, "onnx", out=tmp_path / "onnx")
    marker = tmp_path / "pwned"
    (out / "model.onnx").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        diycnn.load(out)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda info: {**info, "format_version": 99}, "newer diycnn .*Upgrade diycnn"),
    (lambda info: {k: v for k, v in info.items() if k != "status"}, "missing the 'status' field"),
    (lambda info: {**info, "format": "something-else"}, "not a diycnn model.json"),
    (lambda info: [1, 2, 3], "not a diycnn model.json"),
    (lambda info: {**info, "model": {**info["model"], "spec": {"layers": [{"Conv3D": {}}]}}}, "Unknown layer 'Conv3D'"),
])
def test_damaged_model_json_gives_a_readable_error(run_dir, tmp_path, change, message, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    info = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps(change(info)))
    with pytest.raises(ValueError, match=message):
        diycnn.load(copy)
    assert main(["evaluate", str(copy), str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_model_json_that_is_not_json(run_dir):
    (run_dir / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*damaged"):
        diycnn.load(run_dir)


def test_weights_changed_after_training_are_caught_by_the_manifest(run_dir):
    from diycnn.io import atomic_save_tensors, load_tensors

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "split.json", "history.csv", "metrics.json",
                                     "unknown.safetensors"}
    tensors, meta = load_tensors(run_dir / "model.safetensors")
    tensors = {k: v + 1.0 for k, v in tensors.items()}  # still a valid safetensors file, not the run's weights
    atomic_save_tensors(run_dir / "model.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="not the file this run wrote .*manifest.json"):
        diycnn.load(run_dir)
