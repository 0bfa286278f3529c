import json

import pytest
from PIL import Image

from diycnn.data.scan import scan_folder
from diycnn.data.split import check_split, make_split, read_split
from tests.conftest import SHARED, make_dataset


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    scan = scan_folder(make_dataset(tmp_path / "d", {"red": 40, "blue": 20}))
    a = make_split(scan, 0.15, 0.15, seed=3)
    b = make_split(scan, 0.15, 0.15, seed=3)
    c = make_split(scan, 0.15, 0.15, seed=4)
    assert a.assignment == b.assignment
    assert a.assignment != c.assignment
    counts = a.counts()
    assert counts["test"] == {"blue": 3, "red": 6} and counts["val"] == {"blue": 3, "red": 6}
    assert counts["train"] == {"blue": 14, "red": 28}
    seen = [p for s in ("train", "val", "test") for p, _ in a.paths(s)]
    assert len(seen) == len(set(seen)) == 60


def test_too_few_images_names_the_class(tmp_path):
    scan = scan_folder(make_dataset(tmp_path / "d", {"red": 10, "blue": 2}))
    with pytest.raises(ValueError, match="Class 'blue' has 2 usable image.*at least 3"):
        make_split(scan)


def test_given_splits_kept_and_missing_test_carved(tmp_path):
    make_dataset(tmp_path / "d" / "train", {"red": 20, "blue": 20}, seed=1)
    make_dataset(tmp_path / "d" / "val", {"red": 4, "blue": 4}, seed=2)
    split = make_split(scan_folder(tmp_path / "d"), 0.15, 0.15, seed=0)
    assert all(p.startswith("val/") for p, _ in split.paths("val"))
    assert all(p.startswith("train/") for p, _ in split.paths("test"))
    assert split.counts()["test"] == {"blue": 3, "red": 3}
    assert any("test carved from train" in n for n in split.notes)


def test_split_round_trip_and_reuse_checks(tmp_path):
    d = make_dataset(tmp_path / "d", {"red": 10, "blue": 10})
    split = make_split(scan_folder(d))
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split.to_dict()))
    again = read_split(path)
    assert again.assignment == split.assignment
    check_split(again, scan_folder(d))  # same data: fine
    # a photo changed since the split was made
    victim = split.paths("test")[0][0]
    Image.new("RGB", (24, 24), (1, 2, 3)).save(d / victim)
    with pytest.raises(ValueError, match="changed since"):
        check_split(again, scan_folder(d))
    (d / victim).unlink()
    with pytest.raises(ValueError, match="missing or unusable"):
        check_split(again, scan_folder(d))


def test_not_a_split_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a diycnn split.json"):
        read_split(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_split(tmp_path / "nope.json")


@pytest.mark.skipif(not (SHARED / "kpop_idols").is_dir(), reason="shared datasets not present")
def test_kpop_split_has_no_leak():
    scan = scan_folder(SHARED / "kpop_idols")
    split = make_split(scan, 0.15, 0.15, seed=0)
    train = {split.sha256[p] for p, _ in split.paths("train")}
    held_out = {split.sha256[p] for s in ("val", "test") for p, _ in split.paths(s)}
    assert train and held_out and not (train & held_out)
    assert all(n >= 1 for n in split.counts()["test"].values())
