"""Near-duplicates: detection, group-aware splits, leaks across given splits, and `evaluate`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diycnn.data import neardup
from diycnn.data.scan import scan_folder
from diycnn.data.split import kfold_splits, make_split, separate_near_duplicates

from ..conftest import SHARED, TINY_SPEC

ANTS = SHARED / "hymenoptera" / "train" / "ants"
BEES = SHARED / "hymenoptera" / "train" / "bees"
needs_photos = pytest.mark.skipif(not ANTS.is_dir(), reason="needs $DIYCNN_DATASETS/hymenoptera")


def real_photos(folder: Path, n: int, skip: int = 0) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[skip:skip + n]


def put(photos: list[Path], folder: Path) -> list[Path]:
    """Copy photos (bytes unchanged) into `folder`; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    return photos


def ants_and_bees(data: Path, n: int, skip: int = 0) -> dict[str, list[Path]]:
    """data/ants and data/bees with `n` real photos each; returns the photos by class."""
    return {cls: put(real_photos(folder, n, skip), data / cls) for cls, folder in (("ants", ANTS), ("bees", BEES))}


def copy_of(src: Path, how: str, dst: Path) -> Path:
    """A near-identical copy: resized, re-encoded, re-cropped, blurred or recoloured."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    if how == "resize":
        im = im.resize((int(w * 0.55), int(h * 0.55)))
    elif how == "crop":
        im = im.crop((int(w * 0.05), int(h * 0.03), w - int(w * 0.02), h - int(h * 0.04)))
    elif how == "blur":
        im = im.filter(ImageFilter.GaussianBlur(1.2))
    elif how == "colour":
        im = Image.fromarray(np.clip(np.asarray(im, np.float32) * [1.1, 0.95, 0.9] + 12, 0, 255).astype(np.uint8))
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(dst, "JPEG", quality=35 if how == "jpeg" else 80)
    return dst


@needs_photos
def test_copies_are_found_and_distinct_photos_are_not(tmp_path):
    originals = real_photos(ANTS, 8)
    copies = [copy_of(p, how, tmp_path / f"{how}.jpg")
              for p, how in zip(originals, ("resize", "crop", "blur", "colour", "jpeg"))]
    paths = originals + copies
    sig = neardup.compute_signatures(paths, [str(i) for i in range(len(paths))])
    found = {(p.a, p.b) for p in neardup.find_near_duplicates(sig)}
    assert found == {(i, 8 + i) for i in range(5)}
    # the same photos compared as two sets: each copy pairs with its original only
    cross = neardup.find_near_duplicates(sig.subset(range(8, 13)), sig.subset(range(8)))
    assert sorted((p.a, p.b) for p in cross) == [(i, i) for i in range(5)]
    assert all(p.score >= neardup.MIN_SCORE for p in cross)


def test_views_are_the_documented_crops():
    """View 0 is the plain 16x16 box of the thumbnail; cropped views stretch a part of it."""
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))[None]
    views = neardup._views(ramp)
    assert views.shape == (1, 19, 256)
    plain = ramp[0].reshape(16, 2, 16, 2).mean(axis=(1, 3)).ravel()
    plain = (plain - plain.mean()) / np.linalg.norm(plain - plain.mean())
    assert np.allclose(views[0, 0], plain, atol=1e-5)
    assert np.allclose(np.linalg.norm(views[0], axis=1), 1, atol=1e-3)


def test_groups_union_find():
    assert neardup.groups(6, [(0, 3), (3, 5), (1, 2)]) == [0, 1, 1, 0, 4, 0]


@needs_photos
def test_split_keeps_groups_together_and_kfold_too(tmp_path):
    data = tmp_path / "photos"
    ants_and_bees(data, 14)
    groups = []
    for i, p in enumerate(real_photos(ANTS, 4)):
        copies = [copy_of(p, how, data / "ants" / f"copy{i}-{how}.jpg") for how in ("resize", "crop")]
        groups.append({p.name, *(c.name for c in copies)})
    scan = scan_folder(data)
    pairs = {(n.a, n.b) for n in scan.near}
    assert len(pairs) == 12 and all(n.kind == "within-class" for n in scan.near)
    for seed in range(6):
        split = make_split(scan, 0.2, 0.2, seed)
        side = {Path(p).name: s for s in ("train", "val", "test") for p, _ in split.paths(s)}
        for g in groups:
            assert len({side[name] for name in g}) == 1, (seed, g, {n: side[n] for n in g})
        assert separate_near_duplicates(split, scan) == []
    for fold in kfold_splits(scan, 4, seed=1):
        side = {Path(p).name: s for s in ("train", "val", "test") for p, _ in fold.paths(s)}
        for g in groups:
            assert len({side[name] for name in g}) == 1


@needs_photos
def test_given_test_copies_are_left_out_and_evaluate_lists_them(tmp_path):
    """The case this guards: DATA/{train,test}, test photos re-encoded/resized/re-cropped copies of
    train photos -> listed as near-duplicates across splits, left out of the test figures."""
    import diycnn

    data = tmp_path / "data"
    train = ants_and_bees(data / "train", 12)
    ants_and_bees(data / "test", 3, skip=20)  # genuinely new test photos
    leaked = {f"test/ants/leak-{how}.jpg": f"train/ants/{p.name}"
              for p, how in zip(train["ants"], ("resize", "crop", "jpeg"))}
    leaked.update({f"test/bees/leak-{how}.jpg": f"train/bees/{p.name}"
                   for p, how in zip(train["bees"], ("blur", "colour"))})
    for rel, src in leaked.items():
        copy_of(data / src, rel.split("-")[1][:-4], data / rel)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    run = diycnn.train(data, model=str(spec), epochs=1, out=tmp_path / "run")
    metrics = json.loads((run.dir / "metrics.json").read_text())
    section = metrics["near_duplicates"]
    assert section["checked"] is True
    assert {i["path"]: i["copy_of"] for i in section["left_out"]} == leaked
    assert all(i["split"] == "test" for i in section["left_out"])
    assert metrics["counts"]["test"] == 6  # the 6 new photos, not the 5 copies
    split = json.loads((run.dir / "split.json").read_text())
    assert not set(leaked) & {p for paths in split["splits"]["test"].values() for p in paths}
    report = (run.dir / "report.html").read_text()
    assert "Near-duplicates (5 left out of evaluation" in report
    assert all(path in report for path in leaked)

    # evaluate on a folder of copies of training photos and new photos
    other = tmp_path / "eval"
    copy_of(data / "train/ants" / train["ants"][5].name, "resize", other / "ants" / "again.jpg")
    copy_of(data / "train/bees" / train["bees"][6].name, "crop", other / "bees" / "again.jpg")
    (other / "bees" / "same.jpg").write_bytes((data / "train/bees" / train["bees"][7].name).read_bytes())
    put(real_photos(ANTS, 2, skip=30), other / "ants")
    result = run.evaluate(other)
    assert result["seen_in_training"] == ["bees/same.jpg"]
    near = {n["path"]: n["training_photo"] for n in result["near_duplicates_of_training"]}
    assert near == {"ants/again.jpg": f"train/ants/{train['ants'][5].name}",
                    "bees/again.jpg": f"train/bees/{train['bees'][6].name}"}
    assert result["n"] == 5 and result["unseen"]["n"] == 2
    assert "near_duplicates_of_training" not in run.evaluate(other, near_duplicates=False)


@needs_photos
def test_label_conflict_reported_and_flag_turns_detection_off(tmp_path):
    data = tmp_path / "photos"
    ants_and_bees(data, 6)
    copy_of(data / "ants" / real_photos(ANTS, 1)[0].name, "resize", data / "bees" / "filed-wrong.jpg")
    scan = scan_folder(data)
    assert [(n.kind, n.b, n.classes) for n in scan.near] == [
        ("label-conflict", "bees/filed-wrong.jpg", ("ants", "bees"))]
    off = scan_folder(data, near_duplicates=False)
    assert off.near == [] and off.near_checked is False


def test_signature_cache_is_reused_and_damage_tolerated(tmp_path, monkeypatch):
    monkeypatch.setenv("DIYCNN_CACHE", str(tmp_path / "cache"))
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    store = neardup.SignatureCache(tmp_path)
    first = neardup.compute_signatures([img], ["h1"], store)
    store.save({"h1"})
    again = neardup.SignatureCache(tmp_path)
    assert "h1" in again.known
    img.unlink()  # a cached signature is used without reading the file
    second = neardup.compute_signatures([img], ["h1"], again)
    assert second.ok[0] and second.phash[0] == first.phash[0] and (second.thumbs == first.thumbs).all()
    again.path.write_bytes(b"not a zip")
    assert neardup.SignatureCache(tmp_path).known == {}
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    assert not neardup.compute_signatures([bad], ["h2"]).ok[0]
    with pytest.raises(ValueError, match="not a readable signature file"):
        neardup.Signatures.from_npz(bad, max_rows=10)
    buf = io.BytesIO()
    np.savez(buf, names=np.array(["a"]), phash=np.zeros(2, np.uint64), thumbs=np.zeros((2, 32, 32), np.uint8),
             ok=np.ones(2, bool), version=np.array(neardup.SIGNATURE_VERSION))
    (tmp_path / "short.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="damaged"):
        neardup.Signatures.from_npz(tmp_path / "short.npz", max_rows=10)


@needs_photos
def test_cli_prints_what_was_left_out_and_evaluate_without_copies(tmp_path, capsys):
    from diycnn.cli import main

    data = tmp_path / "data"
    train = ants_and_bees(data / "train", 8)
    ants_and_bees(data / "test", 2, skip=20)
    for cls, photos in train.items():
        copy_of(photos[0], "crop", data / "test" / cls / "copy.jpg")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    assert main(["train", str(data), "--model", str(spec), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "Left out of evaluation: 2 near-identical copies" in out and "test/ants/copy.jpg ~ train/ants/" in out
    assert main(["evaluate", str(tmp_path / "run"), str(data / "test")]) == 0
    captured = capsys.readouterr()
    assert "2 photo(s) are near-identical copies" in captured.err
    assert "Without the photos it has seen (copies): accuracy" in captured.out and "/4)" in captured.out
    assert main(["train", str(data), "--model", str(spec), "--epochs", "1", "--out", str(tmp_path / "off"),
                 "--no-near-duplicates"]) == 0
    metrics = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert metrics["near_duplicates"] == {"checked": False} and metrics["counts"]["test"] == 6


@needs_photos
def test_a_rescan_compares_only_new_photos_and_finds_the_same(tmp_path, monkeypatch):
    data = tmp_path / "photos"
    ants_and_bees(data, 6)
    first = real_photos(ANTS, 1)[0].name
    copy_of(data / "ants" / first, "crop", data / "ants" / "copy1.jpg")
    pairs = lambda scan: sorted((n.a, n.b, n.kind) for n in scan.near)  # noqa: E731
    cold = pairs(scan_folder(data))
    assert cold == [(f"ants/{first}", "ants/copy1.jpg", "within-class")]
    calls = []
    real = neardup.find_near_duplicates
    monkeypatch.setattr(neardup, "find_near_duplicates", lambda *a, **k: calls.append(len(a[0].phash)) or real(*a, **k))
    assert pairs(scan_folder(data)) == cold and calls == []  # nothing new: nothing compared
    copy_of(data / "bees" / real_photos(BEES, 1)[0].name, "blur", data / "bees" / "copy2.jpg")
    warm = pairs(scan_folder(data))
    assert calls == [1, 1]  # the one new photo: with itself, then with the 13 others
    assert warm == pairs(scan_folder(data, cache=False))
    assert (f"bees/{real_photos(BEES, 1)[0].name}", "bees/copy2.jpg", "within-class") in warm
    (data / "ants" / "copy1.jpg").unlink()
    assert [p for p in pairs(scan_folder(data)) if p[0].startswith("ants")] == []
