"""Folders larger than memory: scanning reads headers only, decoded photos can live in a
memory-mapped file in the cache (read batch by batch), and training on it gives exactly the
in-memory result."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFile
from safetensors.numpy import load_file

import diycnn
from diycnn.data.loader import ArrayBatches, Rows
from diycnn.data.scan import scan_folder
from tests.conftest import encoded, make_dataset, photo


def test_scanning_never_decodes_pixels(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "photos", {"red": 5, "blue": 5}, fmt="JPEG")

    def no_decoding(self, *a, **k):
        raise AssertionError("scan decoded an image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    scan = scan_folder(data)
    assert len(scan.records) == 10 and not scan.skipped


def test_rows_read_lazily_in_the_order_asked():
    base = np.arange(20 * 2).reshape(20, 2)
    rows = Rows(base, [5, 3, 9, 1])
    assert rows.shape == (4, 2) and len(rows) == 4
    np.testing.assert_array_equal(rows[np.array([2, 0, 3])], base[[9, 5, 1]])
    np.testing.assert_array_equal(rows[1:3], base[[3, 9]])
    np.testing.assert_array_equal(rows.take([3, 0])[np.arange(2)], base[[1, 5]])
    batches = ArrayBatches(rows, np.zeros(4), 3, shuffle=True, seed=1)
    seen = np.concatenate([x.numpy() for x, _ in batches.iterate(0)])
    assert sorted(seen[:, 0].tolist()) == [2, 6, 10, 18]


def test_memory_mapped_photos_train_exactly_like_in_memory(tmp_path, tiny_spec, monkeypatch):
    data = make_dataset(tmp_path / "photos", {"red": 15, "blue": 15})
    good = encoded(photo("red", np.random.default_rng(5), size=64), "JPEG")
    (data / "red" / "truncated.jpg").write_bytes(good[: len(good) * 2 // 3])  # header fine, pixels cut off
    monkeypatch.setenv("DIYCNN_OFFLINE", "1")
    monkeypatch.setenv("DIYCNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIYCNN_DECODED", "memory")
    in_memory = diycnn.train(data, model=str(tiny_spec), epochs=2, batch_size=4, out=tmp_path / "mem")
    monkeypatch.setenv("DIYCNN_DECODED", "disk")
    stages: list[str] = []
    on_disk = diycnn.train(data, model=str(tiny_spec), epochs=2, batch_size=4, out=tmp_path / "disk",
                           on_stage=stages.append)
    assert any("memory-mapped" in s for s in stages)
    files = list((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(files) == 1 and np.load(files[0], mmap_mode="r").shape == (31, 16, 16, 3)
    assert on_disk.metrics["skipped"] == in_memory.metrics["skipped"] != []
    a, b = load_file(str(in_memory.dir / "model.safetensors")), load_file(str(on_disk.dir / "model.safetensors"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert on_disk.metrics["test_loss"] == pytest.approx(in_memory.metrics["test_loss"], abs=1e-7)
    stamp = files[0].stat().st_mtime_ns
    again = diycnn.train(data, model=str(tiny_spec), epochs=1, batch_size=4, out=tmp_path / "again")
    assert files[0].stat().st_mtime_ns == stamp  # mapped from the cache, not decoded again
    assert again.metrics["skipped"] == in_memory.metrics["skipped"]
