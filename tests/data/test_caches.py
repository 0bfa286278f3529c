"""`diycnn cache`: listing and clearing the decoded-photo and feature caches, and nothing else."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from diycnn.cli import main
from diycnn.data.caches import UNFINISHED_AGE_S, cache_entries, clear_cache
from diycnn.data.features import FeatureCache, extract_features
from diycnn.data.images import Preprocessing
from diycnn.data.loader import decode_cached
from diycnn.data.scan import scan_folder

from ..conftest import make_dataset

DAY = 86400


@pytest.fixture
def filled_cache(tmp_path, monkeypatch):
    """A cache with one feature folder (3 photos), one decoded-photo file (6 photos), the scan
    record of the photo folder, a stale unfinished temporary file, and a folder that is not
    diycnn's (must never be touched)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DIYCNN_CACHE", str(root))
    monkeypatch.setenv("DIYCNN_DECODED", "disk")
    scan = scan_folder(make_dataset(tmp_path / "photos", {"red": 3, "blue": 3}))
    images, ok, failed = decode_cached(scan.records, Preprocessing(size=(8, 8)))
    assert len(ok) == 6 and not failed and images.shape == (6, 8, 8, 3)
    feats = FeatureCache({"backbone": "tiny-net", "preprocessing": {"size": [8, 8]}, "precision": "fp32",
                          "device": "cpu"})
    for r in scan.records[:3]:
        feats.put(r.sha256, np.ones(4, np.float32))
    stale = root / "decoded" / ".abc.123.npy.tmp"
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 2 * DAY,) * 2)
    (root / "bench-keras").mkdir()
    (root / "bench-keras" / "keep.txt").write_text("not diycnn's cache")
    return root, scan, feats


def test_lists_what_the_cache_holds(filled_cache):
    root, _, feats = filled_cache
    entries = {e.kind: e for e in cache_entries(root)}
    assert set(entries) == {"features", "decoded", "scan", "unfinished"}
    assert entries["scan"].about == f"scan of {root.parent / 'photos'}: 6 file(s)"
    assert entries["features"].path == feats.dir and entries["features"].files == 7  # 3 photos (features + signature each) + key.json
    assert "tiny-net features of 3 photo(s) at 8x8" in entries["features"].about
    assert entries["decoded"].about.startswith("6 decoded photo(s) at 8x8") and entries["decoded"].files == 2
    assert all(e.bytes > 0 for e in entries.values())
    assert not any("bench-keras" in str(e.path) for e in cache_entries(root))


def test_clear_by_kind_and_age_leaves_everything_else(filled_cache):
    root, _, feats = filled_cache
    with pytest.raises(ValueError, match="Unknown cache kind"):
        clear_cache(("photos",), root=root)
    would, _ = clear_cache(("decoded",), root=root, dry_run=True)
    assert {e.kind for e in would} == {"decoded", "unfinished"} and (root / "decoded" / ".abc.123.npy.tmp").exists()
    old = time.time() - 10 * DAY
    os.utime(feats.dir / "key.json", (old, old))
    assert clear_cache(older_than_days=30, root=root) == ([], [])  # nothing unused that long
    removed, errors = clear_cache(older_than_days=5, root=root)  # the temp file is 2 days old: kept too
    assert not errors and [e.kind for e in removed] == ["features"] and not feats.dir.exists()
    assert len(list((root / "decoded").glob("*.npy"))) == 1
    removed, _ = clear_cache(("decoded",), root=root)
    assert sorted(e.kind for e in removed) == ["decoded", "unfinished"] and not list((root / "decoded").iterdir())
    assert [e.kind for e in cache_entries(root)] == ["scan"]
    assert [e.kind for e in clear_cache(("scan",), root=root)[0]] == ["scan"]
    assert (root / "bench-keras" / "keep.txt").read_text() == "not diycnn's cache"
    assert cache_entries(root) == []


def test_a_young_unfinished_file_may_belong_to_a_running_job(filled_cache):
    root, _, _ = filled_cache
    young = root / "decoded" / ".def.456.npy.tmp"
    young.write_bytes(b"y")
    removed, _ = clear_cache(root=root, now=time.time() + UNFINISHED_AGE_S / 2)
    assert young.exists() and not (root / "decoded" / ".abc.123.npy.tmp").exists()
    assert {e.kind for e in removed} == {"features", "decoded", "scan", "unfinished"}


def test_using_an_entry_marks_it_used(filled_cache):
    root, scan, feats = filled_cache
    meta = next((root / "decoded").glob("*.json"))
    old = time.time() - 10 * DAY
    os.utime(meta, (old, old))
    os.utime(feats.dir / "key.json", (old, old))
    decode_cached(scan.records, Preprocessing(size=(8, 8)))  # mapped from the cache
    got, ok, _ = extract_features(scan.records[:3], Preprocessing(size=(8, 8)), lambda x: 1 / 0, feats)
    assert ok == [0, 1, 2] and got.shape == (3, 4)  # all hits: the encoder was never called
    assert meta.stat().st_mtime > old + DAY and (feats.dir / "key.json").stat().st_mtime > old + DAY
    removed, _ = clear_cache(older_than_days=1.5, root=root)
    assert [e.kind for e in removed] == ["unfinished"]  # only the 2-day-old temp file


def test_cli_lists_and_clears(filled_cache, capsys):
    root, _, feats = filled_cache
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "tiny-net features of 3 photo(s)" in out and "6 decoded photo(s)" in out and "4 entries" in out
    assert main(["cache", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["root"] == str(root) and len(listed["entries"]) == 4
    assert main(["cache", "clear", "--features", "--dry-run"]) == 0
    assert "Would remove 1 entry" in capsys.readouterr().out and feats.dir.exists()
    assert main(["cache", "clear", "--older-than", "-2"]) == 2
    assert "--older-than must be 0 or more" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 0
    assert "Removed 4 entries" in capsys.readouterr().out
    assert main(["cache"]) == 0
    assert "is empty" in capsys.readouterr().out
