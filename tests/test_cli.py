import csv
import io
import json

import pytest

from diycnn.cli import main
from tests.conftest import make_dataset


def test_summary_prints_keras_table(capsys):
    assert main(["summary", "seed-cnn"]) == 0
    out = capsys.readouterr().out
    assert "dense (Dense)" in out and "(None, 135424)" in out and "Total params: 35,900,130" in out
    assert main(["summary", "seed-cnn", "--classes", "15", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][-1]["output_shape"] == [None, 15]


def test_summary_of_a_backbone_recipe_shows_the_backbone_under_the_head(capsys):
    import timm

    assert main(["summary", "tm"]) == 0
    out = capsys.readouterr().out
    lite0 = sum(p.numel() for p in timm.create_model("tf_efficientnet_lite0", num_classes=0).parameters())
    assert f'Backbone: "tf_efficientnet_lite0", {lite0:,} params, input (None, 224, 224, 3) -> 1280 features' in out
    assert "frozen" in out and f"Backbone and head: {lite0 + 128_300:,} params, 128,300 trained" in out
    assert main(["summary", "finetune", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backbone"]["frozen"] is False and data["total_with_backbone"] == data["backbone"]["params"] + 2562


def test_errors_exit_2_with_a_clear_message(capsys, tmp_path):
    assert main(["train", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["summary", "seed-cn"]) == 2
    assert "Did you mean 'seed-cnn'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.jpg"]) == 2
    assert "not a diycnn run directory" in capsys.readouterr().err


@pytest.fixture
def trained(two_class_data, tiny_spec, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(two_class_data), "--model", str(tiny_spec), "--epochs", "5", "--batch-size", "8",
                 "--lr", "0.01", "--precision", "fp32", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Test accuracy:" in text and "Confusion matrix" in text and str(out) in text
    return out


def test_train_predict_evaluate_through_main(trained, tmp_path, capsys):
    fresh = make_dataset(tmp_path / "fresh", {"red": 3, "blue": 3}, seed=9)
    (fresh / "red" / "bad.png").write_text("x")

    assert main(["predict", str(trained), str(fresh), "--json"]) == 0
    captured = capsys.readouterr()
    preds = json.loads(captured.out)
    assert len(preds) == 6 and set(preds[0]) == {"path", "label", "probabilities", "unknown", "unknown_score"}
    assert all(p["path"].startswith(str(fresh)) for p in preds)
    assert "bad.png" in captured.err and "not an image" in captured.err

    assert main(["predict", str(trained), str(fresh / "red"), "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "label", "blue", "red", "unknown_score"] and len(rows) == 4

    assert main(["predict", str(trained), str(fresh / "blue" / "blue_000.png"), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert "blue" in line and "red" in line and "%" in line

    assert main(["predict", str(trained), str(fresh / "red" / "bad.png")]) == 1  # nothing predicted
    assert "Nothing could be predicted" in capsys.readouterr().err

    assert main(["evaluate", str(trained), str(fresh), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "loss", "per_class", "confusion_matrix", "skipped"):
        assert key in result
    assert result["accuracy"] >= 5 / 6


def test_module_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "diycnn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("diycnn ")


def test_config_file_merges_and_unknown_keys_suggest(two_class_data, tiny_spec, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Unknown setting 'epoch'" in err and "Did you mean 'epochs'" in err
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 2\nbatch_size: 8\nprecision: fp32\nlr: 0.5\n")
    out = tmp_path / "cfg-run"
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--config", str(good),
                 "--lr", "0.01", "--out", str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["training"]["epochs"] == 2 and info["training"]["lr"] == 0.01  # the flag beats the file


def test_backbones_lists_offline_weights(capsys, monkeypatch):
    monkeypatch.setenv("DIYCNN_OFFLINE", "1")
    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tf_efficientnet_lite0"]["offline"].startswith("pip package")
    assert main(["backbones"]) == 0
    assert "tf_efficientnet_lite0" in capsys.readouterr().out


def test_the_quick_backbone_listing_agrees_with_the_exact_weight_lookup(tmp_path, monkeypatch):
    """`diycnn backbones` checks weights without timm (models/catalog.py); training asks timm for
    the exact file (models/backbones.py). Both must agree, also for a model in the HF cache."""
    import huggingface_hub.constants

    from diycnn.models import backbones, catalog

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import
    for name, _ in catalog.KNOWN_BACKBONES:
        assert catalog.weights_offline(name) == backbones.weights_available(name), name
    import timm

    hub_id = timm.models.get_pretrained_cfg("resnet18").to_dict()["hf_hub_id"]  # e.g. timm/resnet18.a1_in1k
    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc" / "model.safetensors").write_bytes(b"x")
    assert catalog.weights_offline("resnet18") == backbones.weights_available("resnet18") == "cached"
    assert catalog.weights_offline("resnet50") is None


def test_set_flag_reaches_recipe_knobs(two_class_data, tiny_spec, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--epochs", "1", "--precision", "fp32",
                 "--set", "label_smoothing=0.05", "--set", "optimizer=adamw", "--out", str(out)]) == 0
    training = json.loads((out / "model.json").read_text())["training"]
    assert training["label_smoothing"] == 0.05 and training["optimizer"] == "adamw"
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--set", "label_smothing=0.1"]) == 2
    assert "Did you mean 'label_smoothing'" in capsys.readouterr().err



def test_the_cli_lists_every_built_in_recipe():
    from diycnn.models.recipes import RECIPES
    from diycnn.models.registry import RECIPE_NAMES

    assert tuple(RECIPES) == RECIPE_NAMES


def test_the_help_shows_each_recipes_real_defaults(capsys):
    """--help and the web app read the registry's guide (no PyTorch); it must be what the recipes train with."""
    from diycnn.models.recipes import get_recipe
    from diycnn.models.registry import RECIPE_GUIDE

    assert tuple(RECIPE_GUIDE) == tuple(get_recipe.__globals__["RECIPES"])
    for name, guide in RECIPE_GUIDE.items():
        defaults = get_recipe(name, 2).defaults
        assert {k: defaults[k] for k in ("epochs", "batch_size", "lr", "patience")} == \
            {k: guide[k] for k in ("epochs", "batch_size", "lr", "patience")}, name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "seed-cnn 30" in out and "tm 50" in out and "examples:" in out and "face-probe" in out


def test_every_help_fits_80_columns(capsys, monkeypatch):
    """`diycnn --help` and every command's, at COLUMNS=80: no line wider, and the recipe list keeps
    its names in a column (continuation lines indented under the text, not under the names)."""
    from diycnn.commands import COMMANDS

    monkeypatch.setenv("COLUMNS", "80")
    for argv in ([], *([name] for name in COMMANDS)):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert out.strip(), argv
        assert [line for line in out.splitlines() if len(line) > 80] == [], argv
    main_help = capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    guide = capsys.readouterr().out.split("recipes:\n")[1].split("\n\n")[0].splitlines()
    assert all(line.startswith(("  ", " " * 17)) and len(line) <= 78 for line in guide), guide
    assert main_help.err == ""


@pytest.mark.parametrize("argv, message", [
    (["--help"], None),
    (["train", "--help"], None),
    (["train", "{missing}"], "does not exist"),
    (["train", "{data}", "--model", "tn"], "Did you mean 'tm'"),
    (["train", "{data}", "--model", "{missing}.yaml"], "does not exist"),
    (["compare", "{missing}", "--models", "tm,seed-cnn"], "does not exist"),
    (["compare", "{data}", "--models", "tm,sed-cnn"], "Did you mean 'seed-cnn'"),
    (["cache"], None),
    (["backbones"], None),
    (["summary", "seed-cnn"], None),
    (["summary", "tm"], None),
    (["summary", "face-finetune", "--classes", "3"], None),
    (["summary", "{data}/nope.yaml"], "does not exist"),
    (["predict", "{missing}", "x.jpg"], "does not exist"),
    (["predict", "{data}", "x.jpg"], "not a diycnn run directory"),
])
def test_help_and_wrong_names_or_paths_answer_without_loading_pytorch(argv, message, tmp_path):
    """PyTorch takes seconds to import: help, the cache listing, summaries and the usual mistakes must
    not wait for it (bench/startup.py measures the times)."""
    import subprocess
    import sys

    data = make_dataset(tmp_path / "photos", {"red": 1, "blue": 1})
    argv = [a.format(missing=tmp_path / "nope", data=data) for a in argv]
    code = (f"import sys\nfrom diycnn.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "DIYCNN_CACHE": str(tmp_path / "cache")})
    assert proc.stdout.strip().endswith("NO-TORCH"), proc.stdout[-300:] + proc.stderr[-300:]
    if message:
        assert message in proc.stderr


def test_epoch_lines_fit_80_columns_lead_with_validation_and_have_no_carriage_returns(
        two_class_data, tiny_spec, tmp_path, capsys, monkeypatch):
    """Piped (pytest's capture is not a terminal): one line per epoch, val_loss first, <= 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["train", str(two_class_data), "--model", str(tiny_spec), "--epochs", "3",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("Epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert len(line) <= 80 and line.split()[2] == "val_loss" and "val_acc" in line, line
    assert "ETA" in lines[0] and "ETA" not in lines[-1]


def test_epoch_line_drops_the_least_important_figures_first():
    from diycnn.cli import epoch_line

    logs = {"val_loss": 0.64291, "val_accuracy": 0.4, "loss": 0.67821, "accuracy": 0.4861, "seconds": 27.2}
    full = epoch_line(2, 12, logs, left_seconds=156)
    assert full == "Epoch 3/12  val_loss 0.6429 val_acc 0.400  loss 0.6782 acc 0.486  27s  ETA 2:36"
    assert len(epoch_line(9998, 10000, logs, 1e7, width=200)) <= 80  # never wider than 80
    narrow = epoch_line(2, 12, logs, left_seconds=156, width=50)
    assert narrow == "Epoch 3/12  val_loss 0.6429 val_acc 0.400"


def test_quick_clear_errors(tmp_path, capsys, monkeypatch):
    """A typo in --model is caught before the photos are scanned; a missing run says it does not
    exist; one folder of class folders gets a hint."""
    from diycnn.data import scan as scan_mod

    data = make_dataset(tmp_path / "outer" / "antbee", {"red": 3, "blue": 3})
    scanned = []
    real = scan_mod.scan_folder
    monkeypatch.setattr("diycnn.pipeline.scan_folder", lambda *a, **k: scanned.append(a) or real(*a, **k))
    assert main(["train", str(data), "--model", "tn"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'tn'" in err and "Did you mean 'tm'" in err and scanned == []
    assert main(["train", str(data), "--model", "missing.yaml"]) == 2
    assert "missing.yaml' does not exist" in capsys.readouterr().err and scanned == []
    assert main(["predict", str(tmp_path / "runs" / "nope"), str(data)]) == 2
    assert "nope' does not exist" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "outer"), "--model", "tm"]) == 2
    err = capsys.readouterr().err
    assert "Found 1 class folder(s)" in err and f"pass '{data}' instead" in err
