"""Files someone else made (a zip from a friend, a cloned repo): a reused split.json, a run's
model.json, a config file, an export folder. Each hostile variant is refused with one line that
names the file, before anything is leaked, relabelled or allocated."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest

import diycnn
from diycnn.cli import main
from diycnn.data.scan import scan_folder
from diycnn.data.split import check_split, make_split
from tests.conftest import make_dataset


# --- split.json ------------------------------------------------------------------------------
@pytest.fixture
def data_and_split(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 12, "blue": 12})
    scan = scan_folder(data)
    return data, scan, make_split(scan, seed=0).to_dict()


def test_an_honest_split_is_accepted(data_and_split):
    from diycnn.data.split import Split

    _, scan, split = data_and_split
    honest = Split.from_dict(split)
    assert check_split(honest, scan) is None  # no error: every photo once, in its own class, no leak
    assert honest.to_dict() == split  # and the check changes nothing
    assert sum(len(v) for s in honest.assignment.values() for v in s.values()) == len(scan.records)


@pytest.mark.parametrize("tamper, message", [
    # a train photo also listed in test: a leak
    (lambda s: s["splits"]["test"]["red"].append(s["splits"]["train"]["red"][0]), "in both the train and the test"),
    # the test list repeated three times: a confidence interval computed on copies
    (lambda s: s["splits"]["test"]["blue"].extend(s["splits"]["test"]["blue"] * 2), "twice in the test split"),
    # the red and blue lists swapped: every photo relabelled
    (lambda s: s["splits"].update({k: {"red": v["blue"], "blue": v["red"]} for k, v in s["splits"].items()}),
     "in the folder of class"),
])
def test_a_tampered_split_is_refused_naming_the_photo(data_and_split, tamper, message):
    from diycnn.data.split import Split

    _, scan, split = data_and_split
    tamper(split)
    with pytest.raises(ValueError, match=message) as err:
        check_split(Split.from_dict(split), scan, where="split file 'x.json'")
    assert ".png'" in str(err.value) and "x.json" in str(err.value)


def test_byte_identical_copies_on_two_sides_are_refused(tmp_path):
    from diycnn.data.split import Split

    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10})
    scan = scan_folder(data)
    split = make_split(scan, seed=0).to_dict()
    test_photo = split["splits"]["test"]["red"][0]
    shutil.copy(data / test_photo, data / "red" / "zz-copy.png")  # the scan collapses the copy ...
    scan = scan_folder(data)
    split["splits"]["train"]["red"].append("red/zz-copy.png")  # ... which the split puts in train
    split["sha256"]["red/zz-copy.png"] = split["sha256"][test_photo]
    with pytest.raises(ValueError, match="zz-copy.png.*(left out|byte-identical)"):
        check_split(Split.from_dict(split), scan)


def test_a_tampered_split_is_refused_by_train_from_the_cli(data_and_split, tmp_path, tiny_spec, capsys):
    data, _, split = data_and_split
    split["splits"]["train"]["blue"].append(split["splits"]["test"]["blue"][0])
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    assert main(["train", str(data), "--model", str(tiny_spec), "--split", str(path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "split.json" in err and "in both the train and the test split" in err and "Traceback" not in err


# --- run directories: model.json ----------------------------------------------------------------
@pytest.fixture
def run_dir(two_class_data, tiny_spec, tmp_path):
    return diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", epochs=1).dir


def _edit_model_json(run_dir, edit):
    path = run_dir / "model.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def test_a_huge_layer_in_model_json_is_refused_before_any_weight_is_read(run_dir, monkeypatch):
    import diycnn.run as run_mod

    def no_read(*a, **k):
        raise AssertionError("the weights were read before the model was checked against them")

    monkeypatch.setattr(run_mod, "load_tensors", no_read)
    for units in (500_000, 10 ** 9):
        def edit(info, units=units):
            layers = info["model"]["spec"]["layers"]
            conv = next(layer for layer in layers if layer["class_name"] == "Conv2D")
            conv["config"]["filters"] = units
        _edit_model_json(run_dir, edit)
        with pytest.raises(ValueError, match=r"model.safetensors.*do not fit the model in model.json|model.json. would (have [0-9,]+ parameters|need [0-9.]+ GB)"):
            diycnn.load(run_dir)


def test_a_huge_input_size_in_model_json_is_refused(run_dir, capsys):
    _edit_model_json(run_dir, lambda info: info["model"]["preprocessing"].update(size=[100000, 100000]))
    with pytest.raises(ValueError, match="preprocessing size must be .* at most|from 1 to 4096"):
        diycnn.load(run_dir)
    assert main(["predict", str(run_dir), str(run_dir / "curves.png")]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda info: info.update(model="seed-cnn"), "'model' must describe the model"),
    (lambda info: info.update(class_names="ants"), "'class_names' must be a list"),
    (lambda info: info["model"].pop("preprocessing"), "does not describe a model diycnn can build"),
])
def test_malformed_model_json_fields_give_one_line(run_dir, edit, message):
    _edit_model_json(run_dir, edit)
    with pytest.raises(ValueError, match=message):
        diycnn.load(run_dir)


def test_a_deeply_nested_model_json_gives_one_line(run_dir, capsys):
    (run_dir / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        diycnn.load(run_dir)
    assert main(["predict", str(run_dir), str(run_dir / "curves.png")]) == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "Traceback" not in err and "RecursionError" not in err


# --- config files -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("epochs: [30\n", "cannot be read as YAML"),
    ("epochs: !!python/object/apply:os.system ['touch pwned']\n", "cannot be read as YAML.*!!python"),
])
def test_bad_yaml_config_gives_one_line_naming_the_file(two_class_data, tiny_spec, tmp_path, text, message, capsys):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(text)
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "settings.yaml" in err and "Traceback" not in err
    from diycnn.settings import read_config_file

    with pytest.raises(ValueError, match=message):
        read_config_file(cfg)
    assert not (tmp_path / "pwned").exists()


# --- export folders ----------------------------------------------------------------------------
def test_export_json_model_file_must_stay_in_the_export_folder(run_dir, tmp_path):
    out = diycnn.export(run_dir, "onnx", out=tmp_path / "onnx")
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.copy(out / "model.onnx", elsewhere)
    info = json.loads((out / "export.json").read_text())
    for bad in (str(elsewhere), "../elsewhere.onnx"):
        (out / "export.json").write_text(json.dumps({**info, "model_file": bad}))
        with pytest.raises(ValueError, match="plain file name inside the export folder"):
            diycnn.load(out)
    # every format's export.json goes through the same checked reader (the CLI and the web app read it)
    from diycnn.exports.runtime import read_export_info

    (out / "export.json").write_text(json.dumps({**info, "class_names": "<script>"}))
    with pytest.raises(ValueError, match="class_names that are not a list of names"):
        read_export_info(out)
    (out / "export.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ValueError, match="newer|Upgrade diycnn"):
        read_export_info(out)


# --- layouts and class names -------------------------------------------------------------------
def test_a_class_named_train_beside_other_classes_is_a_class(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 6})
    (data / "red").rename(data / "train")
    scan = scan_folder(data)
    assert scan.layout == "class-folders" and scan.class_names == ["blue", "train"]
    assert any("read as classes" in n for n in scan.notes)


def test_split_folders_are_still_used_when_every_folder_is_a_split(tmp_path):
    data = tmp_path / "photos"
    make_dataset(data / "train", {"red": 6, "blue": 6})
    make_dataset(data / "test", {"red": 2, "blue": 2}, seed=1)
    assert scan_folder(data).layout == "split-folders"


def test_class_names_in_two_unicode_forms_are_one_clear_error(tmp_path):
    data = tmp_path / "photos"
    nfc, nfd = unicodedata.normalize("NFC", "été"), unicodedata.normalize("NFD", "été")
    make_dataset(data, {"red": 4, "blue": 4})
    (data / "red").rename(data / nfc)
    (data / "blue").rename(data / nfd)
    with pytest.raises(ValueError, match="two Unicode forms"):
        scan_folder(data)


# --- training on a hostile project: names in the report stay text ----------------------------------
def test_hostile_class_and_file_names_are_escaped_in_the_run_report(tmp_path, tiny_spec):
    evil_class = '<img src=x onerror="alert(1)">'
    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10})
    (data / "red").rename(data / evil_class)
    (data / "blue" / "blue_000.png").rename(data / "blue" / "<script>alert(2)<\\script>.png")
    run = diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run", epochs=1)
    html = (run.dir / "report.html").read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=" in html
    assert "<img src=x" not in html and "<script>alert" not in html


# --- caches, weights and resumes someone else made --------------------------------------------------------
def test_feature_cache_uses_only_entries_this_user_signed(tmp_path, monkeypatch):
    import io

    import numpy as np

    import diycnn.io as dio
    from diycnn.data.features import FeatureCache

    sha = "cd" * 32
    cache = FeatureCache({"k": 1}, root=tmp_path)
    cache.put(sha, np.ones(4, dtype=np.float32), remarks=["no face found"])
    fresh = FeatureCache({"k": 1}, root=tmp_path)
    assert fresh.get(sha).tolist() == [1, 1, 1, 1] and fresh.remarks(sha) == ["no face found"]
    entry = cache.dir / sha[:2] / f"{sha}.npy"
    buf = io.BytesIO()
    np.save(buf, np.full(4, 9, dtype=np.float32))
    entry.write_bytes(buf.getvalue())  # forged features, a valid .npy file
    assert FeatureCache({"k": 1}, root=tmp_path).get(sha) is None
    cache.put(sha, np.ones(4, dtype=np.float32), remarks=["no face found"])
    entry.with_suffix(".notes.json").write_text('["forged remark"]')  # forged remarks
    assert FeatureCache({"k": 1}, root=tmp_path).get(sha) is None
    cache.put(sha, np.ones(4, dtype=np.float32))
    monkeypatch.setattr(dio, "_KEY", b"k" * 32)  # a cache filled by someone else: signed with another key
    assert FeatureCache({"k": 1}, root=tmp_path).get(sha) is None


def test_the_user_key_lives_outside_caches_and_projects(tmp_path, monkeypatch):
    import stat

    import diycnn.io as dio

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(dio, "_KEY", None)
    key = dio.user_key()
    path = tmp_path / "config" / "diycnn" / "cache.key"
    assert len(key) == 32 and path.read_bytes() == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setattr(dio, "_KEY", None)
    assert dio.user_key() == key  # the same key in the next process


def test_altered_face_weights_are_refused_when_loaded(face_model_dir, tmp_path, monkeypatch):
    from diycnn.models import face_weights

    copy = tmp_path / "weights" / face_model_dir.name
    shutil.copytree(face_model_dir, copy, ignore=shutil.ignore_patterns("*.tgz", "*.onnx"))
    monkeypatch.setenv("DIYCNN_WEIGHTS", str(copy.parent))
    assert face_weights.recognition_manifest(allow_fetch=False) == copy / face_weights.RECOGNITION
    assert face_weights.status()["problem"] is None
    shard = copy / "face_landmark_68_model.bin"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(FileNotFoundError, match="face_landmark_68_model.bin' is not the file diycnn installed"):
        face_weights.landmark_manifest()
    assert "face_landmark_68_model.bin" in face_weights.status()["problem"]


def test_resume_on_another_data_folder_is_refused_before_any_photo_is_decoded(run_dir, tmp_path, monkeypatch):
    import diycnn.pipeline as pipeline
    from diycnn.training.trainer import CHECKPOINT

    other = make_dataset(tmp_path / "other", {"red": 12, "blue": 12}, seed=5)
    _edit_model_json(run_dir, lambda info: info.update(status="interrupted", data=str(other)))
    shutil.copy(run_dir / "model.safetensors", run_dir / CHECKPOINT)

    def no_extract(*a, **k):
        raise AssertionError("photos were decoded before the split was checked")

    monkeypatch.setattr(pipeline, "_decode_or_extract", no_extract)
    with pytest.raises(ValueError, match="split.json"):
        diycnn.train(resume=run_dir)


def test_a_run_folder_may_name_only_backbones_timm_registers():
    from diycnn.models.recipes import saved_backbone

    assert saved_backbone("tf_efficientnet_lite0") == "tf_efficientnet_lite0"
    assert saved_backbone("resnet18") == "resnet18"  # any name timm registers
    for name in ("hf-hub:attacker/beacon-model", "local-dir:/etc", "timm/resnet18.a1_in1k", 3):
        with pytest.raises(ValueError, match="not one diycnn builds from a run folder"):
            saved_backbone(name)
