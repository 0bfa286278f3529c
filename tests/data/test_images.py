import numpy as np
import pytest
from PIL import Image

from diycnn.data.images import ImageError, Preprocessing, load_rgb, probe
from tests.conftest import encoded


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_formats_recognised_by_content_not_extension(tmp_path, fmt):
    im = Image.new("RGB", (30, 20), (200, 10, 10))
    path = tmp_path / "photo.dat"  # misleading extension on purpose
    path.write_bytes(encoded(im, fmt))
    assert probe(path)[1] == (30, 20)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    r, g, b = out.getpixel((15, 10))
    assert r > 150 and g < 80 and b < 80


def test_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    r, g, b = load_rgb(path).getpixel((5, 5))
    assert r > 200 and b < 50


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif.tobytes())
    assert load_rgb(path).size == (20, 40)


def test_modes_convert_the_same_way(tmp_path):
    white_bg = (255, 255, 255)
    # RGBA fully transparent -> background
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_rgb(encoded(rgba, "PNG")).getpixel((0, 0)) == white_bg
    # LA half transparent black on white -> mid grey
    la = Image.new("LA", (4, 4), (0, 128))
    assert 120 <= load_rgb(encoded(la, "PNG")).getpixel((0, 0))[0] <= 135
    # palette with a transparent index
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 1
    assert load_rgb(encoded(p, "PNG", transparency=1)).getpixel((0, 0)) == white_bg
    # CMYK JPEG and grey
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert load_rgb(encoded(cmyk, "JPEG")).mode == "RGB"
    assert load_rgb(encoded(Image.new("L", (4, 4), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    # 16-bit greyscale keeps relative brightness instead of clipping to white
    i16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    value = load_rgb(encoded(i16, "PNG")).getpixel((0, 0))[0]
    assert 120 <= value <= 135


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, I am text saved as a jpg", "not an image"),
    (b"<html><body>not a png</body></html>", "not an image"),
])
def test_bad_files_give_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_rgb(path)


def test_truncated_jpeg(tmp_path):
    data = encoded(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|decode"):
        load_rgb(path)


def test_decompression_bomb_refused_from_header(tmp_path):
    # A real 1x1 PNG whose header claims 60000x60000: refused before decoding anything.
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="oversized|decompression bomb"):
        probe(path)


def test_preprocessing_squash_and_normalise():
    import torch

    prep = Preprocessing(size=(8, 12))
    arr = prep.load(encoded(Image.new("RGB", (50, 10), (255, 0, 0)), "PNG"))
    assert arr.shape == (8, 12, 3) and arr.dtype == np.uint8
    x = prep.normalise(torch.from_numpy(arr[None]))
    assert x.shape == (1, 3, 8, 12)
    assert torch.allclose(x[0, 0], torch.ones(8, 12)) and float(x[0, 1].max()) == 0.0
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_the_landmark_network_travels_with_the_preprocessing_and_is_never_saved():
    """Alignment is owned by whoever loaded the run (no process-wide runner): a preprocessing that aligns
    carries its own network, which model.json never holds and which equality ignores."""
    import dataclasses

    from diycnn.data.images import Preprocessing

    bare = Preprocessing(size=(20, 20), align=True)
    mine = dataclasses.replace(bare, landmarks=lambda x: np.full((68, 2), 0.5, dtype=np.float32))
    assert "landmarks" not in mine.to_dict() and Preprocessing.from_dict(mine.to_dict()) == mine
    with pytest.raises(ValueError, match="Unknown preprocessing field"):
        Preprocessing.from_dict({**bare.to_dict(), "landmarks": "x"})
    with pytest.raises(RuntimeError, match="carries no landmark network"):
        bare.load(encoded(Image.new("RGB", (30, 30), (90, 90, 90)), "PNG"))
    # every eye at one point is not a face: the photo is kept as it is, with the runner's answer used
    notes: list[str] = []
    assert mine.load(encoded(Image.new("RGB", (30, 30), (90, 90, 90)), "PNG"), notes).shape == (20, 20, 3)
    assert notes == ["no face landmarks found; the photo was used without alignment"]


def test_two_face_runs_each_own_their_landmark_network():
    from diycnn.models.recipes import get_recipe, recipe_from_saved

    a, b = get_recipe("face-probe", 2), get_recipe("face-finetune", 3)
    assert a.preprocessing.landmarks is not None and a.preprocessing.landmarks is not b.preprocessing.landmarks
    saved = recipe_from_saved({"name": "face-probe", "spec": a.spec.get_config(),
                               "preprocessing": a.preprocessing.to_dict(), "kind": a.kind, "backbone": a.backbone}, 2)
    assert saved.preprocessing.landmarks is not None and saved.preprocessing.landmarks is not a.preprocessing.landmarks
