"""A generated corpus of hostile and odd inputs; each file has one defined behaviour (used,
converted, or skipped with a reason) and scan, train, predict and evaluate all agree on it."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diycnn
from diycnn.cli import main
from diycnn.data.scan import scan_folder
from tests.conftest import make_dataset

RED = (200, 40, 40)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny (wrong) data chunk: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red(size=(24, 24), mode="RGB") -> Image.Image:
    return Image.new("RGB", size, RED).convert(mode)


def corpus() -> dict[str, tuple[bytes, str | None]]:
    """file name -> (bytes, reason it is skipped, or None when it is used)."""
    jpeg = _save(red((64, 64)), "JPEG")
    frames = [red(), Image.new("RGB", (24, 24), (40, 40, 200))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    palette = Image.new("P", (24, 24), 1)
    palette.putpalette([0, 0, 0, *RED] + [0] * 762)
    palette.paste(0, (0, 0, 12, 24))  # left half: index 0, the transparent one
    rotated = red((30, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    sixteen = Image.fromarray(np.full((24, 24), 200 * 257, dtype=np.uint16))
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "zero-bytes.jpg": (b"", "empty file"),
        "text.jpg": (b"just some text, not a photo\n" * 5, "not an image"),
        "page.png": (b"<!doctype html><html><body>not a png</body></html>", "not an image"),
        "bomb.png": (_png_header_only(60000, 60000), "oversized image"),
        "animated.gif": (gif.getvalue(), None),
        "sixteen-bit.png": (_save(sixteen, "PNG"), None),
        "cmyk.jpg": (_save(red(mode="CMYK"), "JPEG"), None),
        "palette-transparent.png": (_save(palette, "PNG", transparency=0), None),
        "exif-rotated.jpg": (_save(rotated, "JPEG", exif=exif), None),
        "one-pixel.png": (_save(red((1, 1)), "PNG"), None),
        "very-wide.png": (_save(red((4000, 10)), "PNG"), None),
        "name with spaces.png": (_save(red(), "PNG"), None),
        "비-ASCII-名前-é.png": (_save(red((25, 24)), "PNG"), None),
        "new\nline.png": (_save(red((26, 24)), "PNG"), None),
    }


@pytest.fixture
def hostile_data(tmp_path):
    """Two good classes with the corpus inside 'red', plus a symlink loop and an empty folder."""
    data = make_dataset(tmp_path / "photos", {"red": 12, "blue": 12})
    for name, (content, _) in corpus().items():
        (data / "red" / name).write_bytes(content)
    os.symlink(data / "red", data / "red" / "loop")  # a folder symlink pointing at its own parent
    (data / "red" / "empty-sub").mkdir()
    return data


def test_scan_uses_or_skips_each_file_with_its_reason(hostile_data):
    scan = scan_folder(hostile_data)
    used = {Path(r.rel).name for r in scan.records}
    skipped = {Path(p.path).name: p.reason for p in scan.skipped}
    for name, (_, reason) in corpus().items():
        if reason is None:
            assert name in used, name
        else:
            assert reason in skipped.get(name, ""), (name, skipped.get(name))
    assert "loop" not in " ".join(used)  # the symlink loop is not followed


def test_every_used_file_decodes_to_a_photo(hostile_data):
    from diycnn.data.images import Preprocessing, load_rgb

    prep = Preprocessing(size=(16, 16))
    for name, (content, reason) in corpus().items():
        if reason is None:
            out = prep.load(hostile_data / "red" / name)
            assert out.shape == (16, 16, 3), name
    gif = prep.load(hostile_data / "red" / "animated.gif")
    assert gif[..., 0].mean() > gif[..., 2].mean()  # first frame (red), not the blue second one
    rotated = load_rgb(hostile_data / "red" / "exif-rotated.jpg")
    assert rotated.size == (20, 30)  # EXIF orientation applied
    palette = load_rgb(hostile_data / "red" / "palette-transparent.png")
    assert palette.getpixel((0, 0)) == (255, 255, 255) and palette.getpixel((20, 0)) == RED  # transparent on white
    grey = load_rgb(hostile_data / "red" / "sixteen-bit.png").getpixel((0, 0))
    assert 195 <= grey[0] <= 205  # 16-bit scaled, not clipped


def test_train_predict_evaluate_agree_on_the_corpus(hostile_data, tiny_spec, tmp_path, capsys):
    run = diycnn.train(hostile_data, model=str(tiny_spec), out=tmp_path / "run", epochs=2)
    m = run.metrics
    skipped = {Path(p["path"]).name: p["reason"] for p in m["skipped"]}
    expected_skips = {n: r for n, (_, r) in corpus().items() if r is not None}
    for name, reason in expected_skips.items():
        assert reason in skipped[name]
    used = len([n for n, (_, r) in corpus().items() if r is None])
    assert m["counts"]["train"] + m["counts"]["val"] + m["counts"]["test"] == 24 + used

    preds = run.predict([hostile_data / "red"])
    got = {Path(p["path"]).name for p in preds}
    problems = {Path(p.path).name: p.reason for p in preds.problems}
    for name, (_, reason) in corpus().items():
        if reason is None:
            assert name in got
        else:
            assert reason in problems[name]

    result = run.evaluate(hostile_data)
    assert result["n"] == 24 + used
    assert {Path(p["path"]).name for p in result["skipped"]} >= set(expected_skips)

    capsys.readouterr()
    assert main(["predict", str(run.dir), str(hostile_data / "red"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 12 + used
    assert "skipped" in err and "truncated" in err and "Traceback" not in err


def test_empty_class_and_one_photo_class_get_clear_errors(tmp_path, tiny_spec):
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 1})
    with pytest.raises(ValueError, match="Class 'blue' has 1 usable image.*at least 3"):
        diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run")
    (data / "blue" / "blue_000.png").unlink()
    with pytest.raises(ValueError, match="blue"):
        diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run2")
    assert not (tmp_path / "run2" / "model.json").exists()


def test_unreadable_file_is_skipped_with_its_reason(two_class_data, monkeypatch):
    target = two_class_data / "red" / "red_000.png"
    if os.geteuid() != 0:  # a real unreadable file where permissions apply
        target.chmod(0)
    else:  # root reads everything: make the open fail the way it does for other users
        real_open = Image.open
        monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied"))
                            if str(fp) == str(target) else real_open(fp, *a, **k))
    scan = scan_folder(two_class_data)
    assert {Path(p.path).name: p.reason for p in scan.skipped}["red_000.png"] == "cannot read file (permission denied)"
