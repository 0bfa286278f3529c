import io

import pytest
from PIL import Image

from diycnn.data.faces import largest_face
from diycnn.data.images import ImageError, Preprocessing


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_astronaut_face_is_found_and_cropped():
    from skimage import data

    photo = Image.fromarray(data.astronaut())  # 512x512, Eileen Collins' face near the top centre
    left, top, right, bottom = largest_face(photo)
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200
    notes = []
    prep = Preprocessing(size=(64, 64), faces=True)
    assert prep.load(_png(data.astronaut()), notes).shape == (64, 64, 3) and notes == []


def test_photo_without_a_face_is_kept_or_skipped():
    from skimage import data

    coffee = _png(data.coffee())
    notes = []
    assert Preprocessing(size=(32, 32), faces=True).load(coffee, notes).shape == (32, 32, 3)
    assert notes == ["no face found; the whole photo was used"]
    with pytest.raises(ImageError, match="no face found"):
        Preprocessing(size=(32, 32), faces=True, no_face="skip").load(coffee)


@pytest.mark.slow
def test_crop_faces_is_recorded_and_applied_at_predict(tmp_path, tiny_spec):
    from skimage import data

    import diycnn

    for cls, img in (("person", data.astronaut()), ("cup", data.coffee())):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(img).rotate(i * 2).save(tmp_path / "d" / cls / f"{i}.png")
    run = diycnn.train(tmp_path / "d", model=str(tiny_spec), out=tmp_path / "run", epochs=1, crop="faces",
                       precision="fp32")
    assert run.info["model"]["preprocessing"]["faces"] is True
    assert run.preprocessing.faces is True
    no_face = {p["path"] for p in run.metrics["no_face"]}
    assert no_face and all(p.startswith("cup/") for p in no_face)


def test_no_face_notes_come_back_with_cached_features(tmp_path):
    import numpy as np
    from skimage import data

    from diycnn.data.features import FeatureCache, extract_features
    from diycnn.data.scan import scan_folder

    for cls, img in (("person", data.astronaut()), ("cup", data.coffee())):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(img).rotate(i * 3).save(tmp_path / "d" / cls / f"{i}.png")
    records = scan_folder(tmp_path / "d").records
    prep = Preprocessing(size=(32, 32), faces=True)
    cache = FeatureCache({"test": "faces"}, root=tmp_path / "cache")
    first: list = []
    feats, ok, _ = extract_features(records, prep, lambda x: x.reshape(len(x), -1)[:, :4].astype(np.float32),
                                    cache, notes=first)
    assert len(ok) == 4 and sorted(p.path for p in first) == ["cup/0.png", "cup/1.png"]
    again: list = []
    cached, ok2, _ = extract_features(records, prep, lambda x: 1 / 0, FeatureCache({"test": "faces"},
                                      root=tmp_path / "cache"), notes=again)  # every photo a hit
    assert ok2 == ok and np.array_equal(cached, feats)
    assert [(p.path, p.reason) for p in again] == [(p.path, p.reason) for p in first]
