import json
import os
import shutil
from pathlib import Path

import pytest

from diycnn.data.scan import find_images, scan_folder
from tests.conftest import SHARED, make_dataset


def reasons(scan):
    return {p.path: p.reason for p in scan.skipped}


def test_class_folder_layout(two_class_data):
    scan = scan_folder(two_class_data)
    assert scan.layout == "class-folders"
    assert scan.class_names == ["blue", "red"]
    assert scan.count_by_class() == {"blue": 20, "red": 20}
    assert all(r.given_split is None for r in scan.records)


def test_split_folder_layout_with_validation_name(tmp_path):
    make_dataset(tmp_path / "d" / "train", {"red": 6, "blue": 6}, seed=1)
    make_dataset(tmp_path / "d" / "validation", {"red": 2, "blue": 2}, seed=2)
    scan = scan_folder(tmp_path / "d")
    assert scan.layout == "split-folders"
    splits = {r.given_split for r in scan.records}
    assert splits == {"train", "val"}


def test_junk_is_ignored_and_bad_files_are_reported(two_class_data):
    d = two_class_data
    (d / "red" / ".DS_Store").write_bytes(b"junk")
    (d / "red" / "Thumbs.db").write_bytes(b"junk")
    (d / "__MACOSX").mkdir()
    (d / "__MACOSX" / "x.png").write_bytes(b"junk")
    (d / "red" / "empty.jpg").write_bytes(b"")
    (d / "red" / "notes.jpg").write_text("not an image")
    (d / "blue" / "loop").symlink_to(d / "blue" / "loop")
    scan = scan_folder(d)
    r = reasons(scan)
    assert r["red/empty.jpg"].startswith("empty file")
    assert r["red/notes.jpg"].startswith("not an image")
    assert "symbolic link" in r["blue/loop"]
    assert not any("DS_Store" in p or "Thumbs" in p or "MACOSX" in p for p in r)
    assert scan.class_names == ["blue", "red"]  # __MACOSX is not a class


def test_duplicates_collapsed_and_label_conflicts_left_out(two_class_data):
    d = two_class_data
    shutil.copy(d / "red" / "red_000.png", d / "red" / "copy of red.png")
    shutil.copy(d / "red" / "red_001.png", d / "blue" / "looks_red.png")
    scan = scan_folder(d)
    rels = {r.rel for r in scan.records}
    dups = {p.path: p.reason for p in scan.duplicates}
    pair = {"red/copy of red.png", "red/red_000.png"}
    assert len(pair & rels) == 1  # one copy kept (deterministically), the other reported
    assert dups[(pair - rels).pop()].startswith("duplicate")
    assert "red/red_001.png" not in rels and "blue/looks_red.png" not in rels
    assert "label conflict" in dups["blue/looks_red.png"]
    assert scan.count_by_class() == {"blue": 20, "red": 19}


def test_leak_across_given_splits_removed_from_evaluation_side(tmp_path):
    make_dataset(tmp_path / "d" / "train", {"red": 5, "blue": 5}, seed=1)
    make_dataset(tmp_path / "d" / "test", {"red": 2, "blue": 2}, seed=2)
    shutil.copy(tmp_path / "d/train/red/red_000.png", tmp_path / "d/test/red/leaked.png")
    scan = scan_folder(tmp_path / "d")
    dups = {p.path: p.reason for p in scan.duplicates}
    assert dups["test/red/leaked.png"].startswith("leak")
    kept = {r.rel: r.given_split for r in scan.records}
    assert kept["train/red/red_000.png"] == "train" and "test/red/leaked.png" not in kept


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    make_dataset(tmp_path / "one", {"red": 3})
    with pytest.raises(ValueError, match="at least 2 are needed"):
        scan_folder(tmp_path / "one")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="No files found"):
        scan_folder(tmp_path / "empty")
    make_dataset(tmp_path / "case", {"red": 3, "blue": 3})
    os.rename(tmp_path / "case" / "blue", tmp_path / "case" / "Red")
    with pytest.raises(ValueError, match="differ only by letter case"):
        scan_folder(tmp_path / "case")
    make_dataset(tmp_path / "hollow", {"red": 3})
    (tmp_path / "hollow" / "blue").mkdir()
    with pytest.raises(ValueError, match="Class 'blue'.*no usable images"):
        scan_folder(tmp_path / "hollow")


def test_find_images_expands_files_folders_and_globs(two_class_data):
    files, problems = find_images([str(two_class_data / "red"), str(two_class_data / "blue" / "blue_000.png"),
                                   str(two_class_data / "blue" / "blue_00*.png"), "missing.jpg"])
    assert len(files) == 20 + 1 + 10
    assert [p.path for p in problems] == ["missing.jpg"]


@pytest.mark.skipif(not (SHARED / "kpop_idols").is_dir(), reason="shared datasets not present")
def test_kpop_validation_copies_are_caught():
    scan = scan_folder(SHARED / "kpop_idols")
    assert scan.layout == "split-folders"
    assert len(scan.class_names) == 15
    leaks = [p for p in scan.duplicates if p.reason.startswith("leak")]
    assert len(leaks) >= 25  # every validation image is a copy of a train image
    assert not any(r.given_split == "val" for r in scan.records)
    # the non-ASCII file name survives
    assert any(not r.rel.isascii() for r in scan.records)


@pytest.mark.skipif(not (SHARED / "hymenoptera").is_dir(), reason="shared datasets not present")
def test_hymenoptera_quirky_names_are_read():
    scan = scan_folder(SHARED / "hymenoptera")
    rels = {r.rel for r in scan.records}
    assert any(" " in p for p in rels) and any(p.endswith(".jpeg") for p in rels)
    # the placeholder GIF is a valid GIF by content, so it is used (a known limitation)
    assert "train/ants/imageNotFound.gif" in rels
    assert scan.count_by_class() == {"ants": 194, "bees": 204}


def _counting_inspect(monkeypatch):
    from diycnn.data import scan as scan_module

    read: list[str] = []
    real = scan_module._inspect

    def counting(path):
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(scan_module, "_inspect", counting)
    return read


def _view(scan):
    return ([(r.rel, r.label, r.sha256) for r in scan.records], reasons(scan),
            [(p.path, p.reason) for p in scan.duplicates])


def test_a_second_scan_reads_only_new_or_changed_files(two_class_data, monkeypatch):
    from PIL import Image

    d = two_class_data
    (d / "red" / "notes.jpg").write_text("not an image")
    shutil.copy(d / "red" / "red_000.png", d / "red" / "copy.png")
    read = _counting_inspect(monkeypatch)
    first = scan_folder(d)
    assert len(read) == 42
    read.clear()
    again = scan_folder(d)
    assert read == [] and _view(again) == _view(first)  # same records, skips and duplicates, nothing read

    Image.new("RGB", (24, 24), (1, 2, 3)).save(d / "red" / "red_005.png")  # new content, same name
    (d / "blue" / "blue_000.png").unlink()
    shutil.copy(d / "blue" / "blue_001.png", d / "blue" / "new.png")
    read.clear()
    changed = scan_folder(d)
    assert sorted(read) == ["new.png", "red_005.png"]
    fresh = scan_folder(d, cache=False)
    assert _view(changed) == _view(fresh)  # the cache never changes the result
    assert {r.rel: r.sha256 for r in changed.records}["red/red_005.png"] != \
        {r.rel: r.sha256 for r in first.records}["red/red_005.png"]
    saved = next((Path(os.environ["DIYCNN_CACHE"]) / "scan").glob("*.json"))
    files = json.loads(saved.read_text())["files"]
    assert "blue/blue_000.png" not in files and len(files) == 42  # the deleted file is forgotten
    from diycnn.data import scan as scan_module

    monkeypatch.setattr(scan_module, "PILLOW_VERSION", "0.0-other")
    read.clear()
    scan_folder(d)
    assert len(read) == 42  # another Pillow may judge the files differently: all read again


def test_read_errors_are_not_remembered_and_a_broken_cache_is_ignored(two_class_data, monkeypatch):
    from diycnn.data import scan as scan_module

    d = two_class_data
    real = scan_module._inspect
    monkeypatch.setattr(scan_module, "_inspect", lambda p: (None, "cannot read file (I/O error)", False)
                        if p.name == "red_003.png" else real(p))
    assert reasons(scan_folder(d)) == {"red/red_003.png": "cannot read file (I/O error)"}
    monkeypatch.setattr(scan_module, "_inspect", real)
    assert reasons(scan_folder(d)) == {}  # read again once it can be read
    for f in (Path(os.environ["DIYCNN_CACHE"]) / "scan").glob("*.json"):
        f.write_text("{damaged")
    assert len(scan_folder(d).records) == 40
    blocked = Path(os.environ["DIYCNN_CACHE"]) / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DIYCNN_CACHE", str(blocked))
    assert len(scan_folder(d).records) == 40  # an unwritable cache costs speed only


def test_photos_in_a_class_sub_folder_are_used_and_said(tmp_path):
    d = make_dataset(tmp_path / "d", {"red": 4, "blue": 4}, seed=3)
    for src in sorted((d / "blue").iterdir())[:3]:  # red/2019/*.png: blue-ish photos, filed under red
        (d / "red" / "2019").mkdir(exist_ok=True)
        shutil.move(src, d / "red" / "2019" / src.name)
    scan = scan_folder(d, near_duplicates=False)
    assert scan.count_by_class() == {"blue": 1, "red": 7}
    said = [n for n in scan.notes if "sub-folder" in n]
    assert len(said) == 1 and "'red'" in said[0] and "2019" in said[0]
    flat = scan_folder(make_dataset(tmp_path / "flat", {"red": 4, "blue": 4}, seed=3), near_duplicates=False)
    assert not any("sub-folder" in n for n in flat.notes)
