"""An output folder that cannot be written fails before training; a full disk while saving keeps
the previous checkpoint whole, and the run resumes once there is space again."""

from __future__ import annotations

import errno
import json
import os

import pytest

import diycnn
from diycnn import io as dio
from diycnn.cli import main
from diycnn.io import load_tensors

FAST = dict(epochs=4, batch_size=8, lr=0.01, seed=0, precision="fp32")


def test_unwritable_output_fails_before_training(two_class_data, tiny_spec, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="Cannot write to output folder .*writable --out"):
        diycnn.train(two_class_data, model=str(tiny_spec), out=blocker / "run", **FAST)
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "Cannot write to output folder" in err and "Epoch" not in err  # refused before any training


def test_full_disk_keeps_the_previous_checkpoint_and_resume_finishes(two_class_data, tiny_spec, tmp_path,
                                                                      monkeypatch, capsys):
    straight = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "straight", **FAST)
    real_fsync, saves = dio.os.fsync, []

    def fsync_until_full(fd):  # the 3rd checkpoint write (after epoch 2) finds the disk full
        if "checkpoint" in os.readlink(f"/proc/self/fd/{fd}"):
            saves.append(fd)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(dio.os, "fsync", fsync_until_full)
    out = tmp_path / "full"
    with pytest.raises(OSError, match="No space left on device while writing .*previous version .* is intact"):
        diycnn.train(two_class_data, model=str(tiny_spec), out=out, **FAST)
    monkeypatch.setattr(dio.os, "fsync", real_fsync)
    _, meta = load_tensors(out / "checkpoint.safetensors")  # the previous checkpoint, whole
    assert json.loads(meta["loop"])["epoch"] == 1  # written after epoch 1, before the failed one
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written leftovers
    resumed = diycnn.train(resume=out)
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]
    assert resumed.metrics["test_loss"] == pytest.approx(straight.metrics["test_loss"], abs=1e-6)
