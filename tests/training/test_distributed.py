"""torchrun / DistributedDataParallel on this CPU (gloo): two processes with the same global
batch and seed take the same steps as one process, only process 0 writes the run directory,
and frozen-backbone features are extracted once, shared between the processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import diycnn
from diycnn.data.loader import ArrayBatches, ShardedBatches
from tests.conftest import TINY_SPEC, make_dataset


def launch(args: list[str], cwd, env_extra=None, torchrun=False):
    env = {**os.environ, "DIYCNN_OFFLINE": "1", **(env_extra or {})}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "diycnn", "train", *args]
    else:
        cmd = [sys.executable, "-m", "diycnn", "train", *args, "--devices", "2"]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def history(run_dir):
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_sharded_batches_reassemble_the_single_process_batches():
    x = np.arange(30)[:, None]
    labels = np.zeros(30)
    one = ArrayBatches(x, labels, 6, shuffle=True, seed=3)
    parts = [ShardedBatches(x, labels, 6, shuffle=True, seed=3, rank=r, world=3) for r in range(3)]
    for epoch in (0, 1):
        whole = [b[0].flatten().tolist() for b in one.iterate(epoch)]
        pieces = list(zip(*[[b[0].flatten().tolist() for b in p.iterate(epoch)] for p in parts]))
        assert len(pieces) == len(whole) == len(parts[0])
        for batch, chunks in zip(whole, pieces):
            assert sorted(batch) == sorted(sum(chunks, []))  # step b holds exactly batch b
    assert [b[0].flatten().tolist() for b in one.iterate(0)] != [b[0].flatten().tolist() for b in one.iterate(1)]
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        ShardedBatches(x, labels, 5, rank=0, world=2)
    odd = [ShardedBatches(np.arange(7)[:, None], np.zeros(7), 4, rank=r, world=2) for r in range(2)]
    assert [len(list(o.iterate())) for o in odd] == [2, 2]  # padded like DistributedSampler: equal steps


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 20, "blue": 20})  # 28 train photos: 7 batches of 4
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    common = [str(data), "--model", str(spec), "--epochs", "3", "--batch-size", "4", "--precision", "fp32"]
    single = diycnn.train(data, model=str(spec), epochs=3, batch_size=4, precision="fp32", out=tmp_path / "one")
    launch(common + ["--out", str(tmp_path / "two")], cwd=tmp_path)
    two = tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in single.dir.iterdir())
    assert diycnn.load(two).info["status"] == "complete"
    a, b = load_file(str(single.dir / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=2e-5, err_msg=key)
    for h1, h2 in zip(history(single.dir), history(two)):  # training loss all-reduced over both processes
        assert float(h1["loss"]) == pytest.approx(float(h2["loss"]), abs=1e-5)
        assert float(h1["val_loss"]) == pytest.approx(float(h2["val_loss"]), abs=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("runs")] == []  # nothing written elsewhere


@pytest.mark.slow
def test_frozen_backbone_features_are_extracted_once_across_processes(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 20, "blue": 20})
    cache = tmp_path / "cache"
    out = launch([str(data), "--model", "tm", "--epochs", "3", "--batch-size", "4", "--precision", "fp32", "--calibrate", "off",
                  "--out", str(tmp_path / "two")], cwd=tmp_path, env_extra={"DIYCNN_CACHE": str(cache)},
                 torchrun=True)
    assert len(list(cache.rglob("*.npy"))) == 40
    assert "Feature cache: 40 hit(s), 0 extracted" in out.stderr  # process 0 read every photo from the cache
    metrics = diycnn.load(tmp_path / "two").metrics
    assert {k: metrics["feature_cache"][k] for k in ("hits", "misses")} == {"hits": 40, "misses": 0}
    assert metrics["test_accuracy"] > 0.5
    env = {"DIYCNN_OFFLINE": "1", "DIYCNN_CACHE": str(cache)}
    os.environ.update(env)
    try:
        single = diycnn.train(data, model="tm", epochs=3, batch_size=4, precision="fp32", out=tmp_path / "one",
                              calibrate=False)  # under torchrun a small validation split is not calibrated
    finally:
        for k in env:
            os.environ.pop(k)
    assert single.metrics["test_loss"] == pytest.approx(metrics["test_loss"], abs=1e-4)


@pytest.mark.slow
def test_auto_is_refused_under_torchrun(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 6})
    env = {**os.environ, "DIYCNN_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "diycnn",
           "train", str(data), "--model", "auto"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "not supported under torchrun" in out.stderr
