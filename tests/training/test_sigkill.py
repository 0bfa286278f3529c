"""Crash safety: training killed with SIGKILL at random moments never leaves a corrupt run
directory, and --resume finishes with the same final metrics as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import diycnn
from diycnn.io import load_tensors
from diycnn.records import read_run_info

KILLS = 10
EPOCHS = 40
ARGS = ["--epochs", str(EPOCHS), "--batch-size", "8", "--lr", "0.01", "--seed", "0", "--precision", "fp32"]


def start(data, spec, out):
    return subprocess.Popen([sys.executable, "-m", "diycnn", "train", str(data), "--model", str(spec), "--out",
                             str(out), *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_not_corrupt(run_dir) -> dict | None:
    """Every file a reader relies on is whole: model.json valid, safetensors files load."""
    if not (run_dir / "model.json").exists():
        return None
    info = read_run_info(run_dir)  # raises on a half-written or invalid file
    for name in ("checkpoint.safetensors", "best.safetensors", "model.safetensors"):
        if (run_dir / name).exists():
            load_tensors(run_dir / name)
    for name in ("metrics.json", "split.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    return info


def wait_for_run_dir(proc, out, timeout: float = 120) -> float:
    """Seconds until the run directory's model.json appears (the process is importing until then)."""
    t0 = time.perf_counter()
    while not (out / "model.json").exists():
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            raise AssertionError(f"training never wrote {out / 'model.json'} (exit {proc.returncode})")
        time.sleep(0.02)
    return time.perf_counter() - t0


def epochs_done(out) -> int:
    try:
        return max(0, len((out / "history.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait_for_epoch(proc, out, epoch: int, timeout: float = 120) -> None:
    """Until `epoch` epochs are finished (0: the first checkpoint exists) or the process ends."""
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        if (epoch == 0 and (out / "checkpoint.safetensors").exists()) or (epoch and epochs_done(out) >= epoch):
            return
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(two_class_data, tiny_spec, tmp_path):
    ref = start(two_class_data, tiny_spec, tmp_path / "reference")
    wait_for_run_dir(ref, tmp_path / "reference")
    t0 = time.perf_counter()
    assert ref.wait(timeout=300) == 0
    duration = time.perf_counter() - t0  # from the run directory's creation to the finished run
    want = diycnn.load(tmp_path / "reference").metrics
    rng = np.random.default_rng(7)
    resumed = 0
    outcomes = []
    for i in range(KILLS):
        out = tmp_path / f"cut-{i}"
        proc = start(two_class_data, tiny_spec, out)
        wait_for_run_dir(proc, out)
        if i % 3 == 2:  # anywhere from the run directory's creation to writing the results
            time.sleep(rng.uniform(0.0, 1.1) * duration)
        else:  # somewhere inside training: after a random epoch, plus a random part of the next one
            wait_for_epoch(proc, out, int(rng.integers(0, EPOCHS)))
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        info = check_not_corrupt(out)
        assert not any(p.name.endswith(".tmp") and not p.name.startswith(".") for p in out.glob("*"))
        assert info is not None
        if info["status"] != "complete":
            if not (out / "checkpoint.safetensors").exists():
                with pytest.raises(FileNotFoundError, match="before its first checkpoint"):
                    diycnn.train(resume=out)
                outcomes.append("before the first checkpoint")
                continue
            outcomes.append(f"resumed from epoch {json.loads(load_tensors(out / 'checkpoint.safetensors')[1]['loop'])['epoch']}")
            diycnn.train(resume=out)
            resumed += 1
        else:
            outcomes.append("already complete")
        got = diycnn.load(out).metrics
        for key in ("test_accuracy", "epochs_run", "best_epoch"):
            assert got[key] == want[key], (i, key)
        assert got["test_loss"] == pytest.approx(want["test_loss"], abs=1e-6)
        assert not (out / "checkpoint.safetensors").exists()
    assert resumed >= 5, f"only {resumed} of {KILLS} kills landed mid-training: {outcomes}"
