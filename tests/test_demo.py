import json
import signal
import subprocess
import sys
import time

import pytest

from diycnn.cli import main
from diycnn.demo import write_demo_data


def test_demo_data_is_the_bundled_lfw_subset(tmp_path):
    root = write_demo_data(tmp_path / "d")
    assert sorted(p.name for p in root.iterdir()) == ["face", "not_face"]
    assert len(list((root / "face").iterdir())) == 100 and len(list((root / "not_face").iterdir())) == 100


@pytest.mark.slow
def test_demo_trains_the_blogs_model_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    run = tmp_path / "demo" / "run"
    info = json.loads((run / "model.json").read_text())
    assert info["model"]["name"] == "seed-cnn" and info["model"]["params"] == 35_900_130
    assert (run / "report.html").is_file()
    m = json.loads((run / "metrics.json").read_text())
    assert m["counts"] == {"train": 140, "val": 30, "test": 30} and m["epochs_run"] == 1
    lo, hi = m["test_accuracy_ci95"]
    # what it prints is what metrics.json holds (the figure and its interval), not a stock sentence
    assert f"{m['test_accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(two_class_data, tiny_spec, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "diycnn", "train", str(two_class_data), "--model", str(tiny_spec),
           "--epochs", "150", "--batch-size", "4", "--precision", "fp32", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    info = json.loads((out / "model.json").read_text())
    assert info["status"] == "interrupted" and (out / "checkpoint.safetensors").is_file()
    assert main(["train", "--resume", str(out)]) == 0
    done = json.loads((out / "model.json").read_text())
    assert done["status"] == "complete" and not (out / "checkpoint.safetensors").exists()
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 150
