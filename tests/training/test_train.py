import csv
import json

import pytest
import torch

import diycnn
from diycnn.io import load_tensors
from diycnn.training.trainer import Callback
from tests.conftest import make_dataset

FAST = dict(epochs=6, batch_size=8, lr=0.01, seed=0, precision="fp32")


def test_learns_a_separable_task_and_writes_a_complete_run(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", **FAST)
    m = run.metrics
    assert m["test_accuracy"] >= 0.9  # chance is 0.5
    for name in ("model.safetensors", "model.json", "history.csv", "metrics.json", "split.json",
                 "curves.png", "confusion.png", "report.html"):
        assert (run.dir / name).is_file(), name
    assert not (run.dir / "checkpoint.safetensors").exists()
    info = json.loads((run.dir / "model.json").read_text())
    assert info["status"] == "complete" and info["class_names"] == ["blue", "red"]
    assert info["model"]["preprocessing"]["size"] == [16, 16] and "torch" in info["versions"]
    with open(run.dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    assert len(rows) == 6 and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    for key in ("test_accuracy", "test_accuracy_ci95", "test_loss", "per_class", "confusion_matrix",
                "class_names", "counts", "skipped", "duplicates", "train_seconds"):
        assert key in m, key
    assert m["counts"] == {"train": 28, "val": 6, "test": 6}
    assert sum(map(sum, m["confusion_matrix"])) == 6
    lo, hi = m["test_accuracy_ci95"]
    assert lo <= m["test_accuracy"] <= hi
    html = (run.dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "Test accuracy" in html
    tensors, _ = load_tensors(run.dir / "model.safetensors")
    assert "body.conv2d.weight" in tensors


def test_same_seed_same_result(two_class_data, tiny_spec, tmp_path):
    a = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "a", **FAST)
    b = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "b", **FAST)
    wa, _ = load_tensors(a.dir / "model.safetensors")
    wb, _ = load_tensors(b.dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics["test_loss"] == b.metrics["test_loss"]


def test_bad_files_are_skipped_and_reported_not_fatal(two_class_data, tiny_spec, tmp_path):
    (two_class_data / "red" / "zero.jpg").write_bytes(b"")
    good = (two_class_data / "red" / "red_000.png").read_bytes()
    (two_class_data / "red" / "cut.png").write_bytes(good[: len(good) // 2])
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", **FAST)
    skipped = {p["path"]: p["reason"] for p in run.metrics["skipped"]}
    assert skipped["red/zero.jpg"].startswith("empty file")
    assert "red/cut.png" in skipped


def test_split_reuse_gives_identical_test_photos(two_class_data, tiny_spec, tmp_path):
    a = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "a", **FAST)
    b = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "b", split=a.dir / "split.json",
                     **{**FAST, "seed": 5})
    sa = json.loads((a.dir / "split.json").read_text())
    sb = json.loads((b.dir / "split.json").read_text())
    assert sa["splits"] == sb["splits"]


def test_early_stopping_restores_best(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run",
                       **{**FAST, "epochs": 40, "lr": 0.05, "patience": 2})
    m = run.metrics
    assert m["stopped_early"] and m["epochs_run"] < 40
    losses = [h for h in csv.DictReader(open(run.dir / "history.csv"))]
    best = min(range(len(losses)), key=lambda i: float(losses[i]["val_loss"]))
    assert m["best_epoch"] == best + 1


class _InterruptAt(Callback):
    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, num_batches, start_batch):
        self.current = epoch

    def on_batch_end(self, batch, logs):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("epoch, batch", [(0, 2), (2, 1)])
def test_interrupted_run_resumes_to_the_same_result(two_class_data, tiny_spec, tmp_path, epoch, batch):
    settings = {**FAST, "epochs": 4}
    straight = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "straight", **settings)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "cut",
                     callbacks=[_InterruptAt(epoch, batch)], **settings)
    info = json.loads((tmp_path / "cut" / "model.json").read_text())
    assert info["status"] == "interrupted" and (tmp_path / "cut" / "checkpoint.safetensors").is_file()
    with pytest.raises(ValueError, match="not complete"):
        diycnn.load(tmp_path / "cut")
    resumed = diycnn.train(resume=tmp_path / "cut")
    wa, _ = load_tensors(straight.dir / "model.safetensors")
    wb, _ = load_tensors(resumed.dir / "model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]
    assert resumed.metrics["epochs_run"] == 4


def test_out_dir_is_never_overwritten(two_class_data, tiny_spec, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="never overwrites"):
        diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "taken", **FAST)


def test_default_run_dirs_are_numbered(two_class_data, tiny_spec):
    a = diycnn.train(two_class_data, model=str(tiny_spec), **{**FAST, "epochs": 1})
    b = diycnn.train(two_class_data, model=str(tiny_spec), **{**FAST, "epochs": 1})
    assert a.dir.name == "photos-tiny" and b.dir.name == "photos-tiny-2"


def test_predict_and_evaluate(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", **FAST)
    fresh = make_dataset(tmp_path / "fresh", {"red": 5, "blue": 5}, seed=42)
    (fresh / "red" / "broken.jpg").write_text("nope")
    preds = run.predict([fresh / "red", str(fresh / "blue" / "*.png")], top_k=1)
    assert len(preds) == 10
    assert [p.path for p in preds.problems] == [str(fresh / "red" / "broken.jpg")]
    assert sum(p["label"] == ("red" if "/red/" in p["path"] else "blue") for p in preds) >= 9
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)
    result = run.evaluate(fresh)
    assert result["accuracy"] >= 0.9 and result["n"] == 10
    assert result["skipped"][0]["path"] == "red/broken.jpg"
    (fresh / "green").mkdir()
    make_dataset(tmp_path / "more", {"green": 1}, seed=7)
    (tmp_path / "more" / "green" / "green_000.png").rename(fresh / "green" / "g.png")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['green'\].*does not know"):
        run.evaluate(fresh)


def test_evaluate_flags_photos_seen_in_training(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "run", **FAST)
    result = run.evaluate(two_class_data)
    assert len(result["seen_in_training"]) == 34  # train + val photos


def test_max_minutes_stops_after_the_epoch_that_passes_it(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "r", epochs=6, max_minutes=1e-9)
    m = run.metrics
    assert m["stopped_by_time"] and m["epochs_run"] == 1 and m["test_accuracy"] is not None
    full = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "f", epochs=3)
    assert not full.metrics["stopped_by_time"] and full.metrics["epochs_run"] == 3


def test_val_as_test_uses_the_given_val_folder_as_the_test_split(tmp_path, tiny_spec):
    make_dataset(tmp_path / "d" / "train", {"red": 12, "blue": 12}, seed=1)
    make_dataset(tmp_path / "d" / "val", {"red": 4, "blue": 4}, seed=2)
    run = diycnn.train(tmp_path / "d", model=str(tiny_spec), out=tmp_path / "r", epochs=1, val_as_test=True)
    split = json.loads((run.dir / "split.json").read_text())["splits"]
    test = sorted(p for c in split["test"].values() for p in c)
    assert test == sorted(f"val/{c}/{c}_{i:03d}.png" for c in ("red", "blue") for i in range(4))
    assert all(p.startswith("train/") for c in split["val"].values() for p in c)  # val comes out of train
    assert run.metrics["counts"]["test"] == 8


def test_layer_decay_gives_earlier_backbone_layers_smaller_learning_rates():
    from diycnn.models.recipes import get_recipe
    from diycnn.training.trainer import FitConfig, _param_groups

    module = get_recipe("finetune", 2).build(seed=0)
    groups = _param_groups(module, FitConfig(epochs=1, lr=1e-3, patience=None, seed=0, layer_decay=0.8))
    scales = [g["lr_scale"] for g in groups]
    assert scales[-1] == 1.0 and groups[-1]["params"] == [p for p in module.head.parameters() if p.requires_grad]
    backbone = scales[:-1]
    assert min(backbone) < 0.2 and max(backbone) <= 1.0 and backbone == sorted(backbone)  # the stem learns slowest
    assert all(any(s == pytest.approx(0.8 ** k) for k in range(30)) for s in backbone)  # powers of the decay
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-3 * s for s in scales])
    plain = _param_groups(module, FitConfig(epochs=1, lr=1e-3, patience=None, seed=0))
    assert len(plain) == 1 and plain[0]["lr_scale"] == 1.0


def test_metrics_json_is_read_through_one_checked_reader(two_class_data, tiny_spec, tmp_path):
    from diycnn.records import read_metrics

    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "r", epochs=1)
    assert read_metrics(run.dir)["test_accuracy"] == run.metrics["test_accuracy"]
    path = run.dir / "metrics.json"
    m = json.loads(path.read_text())
    del m["confusion_matrix"]
    path.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="lacks confusion_matrix; the run directory is damaged"):
        read_metrics(run.dir)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_metrics(run.dir)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_metrics(run.dir)
