"""Small datasets: K-fold cross-validation over all photos (training/crossval.py)."""

import json

import numpy as np
import pytest
from PIL import Image

import diycnn
from diycnn import cli
from diycnn.training import crossval

from ..conftest import make_dataset


def test_plan_runs_where_it_is_cheap_and_needed():
    assert crossval.plan(None, 4, "features", False)[0] is True
    assert "only 4 photos" in crossval.plan(None, 4, "features", False)[1]
    assert crossval.plan(None, crossval.CV_BELOW, "features", False)[0] is False  # big enough to trust
    assert crossval.plan(True, 100, "features", False)[0] is True  # asked for
    assert crossval.plan(False, 4, "features", False) == (False, "turned off (--cv off)")
    run_it, why = crossval.plan(None, 4, "images", False)
    assert run_it is False and "compare --folds" in why
    assert crossval.plan(True, 4, "features", True)[0] is False  # not under torchrun


@pytest.mark.usefixtures("offline")
def test_small_test_split_reports_the_cross_validated_accuracy(tmp_path, capsys):
    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10, "green": 10}, seed=3)
    assert cli.main(["train", str(data), "--model", "linear-probe", "--out", str(tmp_path / "run"),
                     "--epochs", "5", "--suspects", "off"]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["counts"]["test"] < crossval.CV_BELOW
    cv = m["cross_validation"]
    assert cv["checked"] is True and cv["folds"] == 5 and cv["photos"] == 30  # every photo held out once
    assert sum(map(sum, cv["confusion_matrix"])) == 30 and cv["correct"] == round(cv["accuracy"] * 30)
    assert len(cv["fold_accuracies"]) == 5
    assert cv["accuracy_ci95"][0] - 1e-9 <= cv["accuracy"] <= cv["accuracy_ci95"][1] + 1e-9
    assert cv["accuracy"] >= 0.8  # the colours separate: the estimate is not noise
    flat = " ".join(line.strip() for line in out.splitlines())  # lines are folded to the terminal's width
    assert "Accuracy to trust, cross-validated: " in flat and "30 photos, 5 folds" in flat
    assert out.strip().splitlines()[1].startswith("Accuracy to trust, cross-validated: ")  # leads the result
    report = (tmp_path / "run" / "report.html").read_text()
    assert "id='cross-validation'" in report and f"{cv['correct']}/30 photos" in report


@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_held_out_photos_are_really_held_out(tmp_path):
    """Labels that have nothing to do with the photos: a head that had seen the photo it predicts
    would memorise it (linear-probe fits 30 random feature vectors perfectly); held out, it
    can only guess."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "noise" / cls).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "noise" / cls / f"{i}.png")
    # a high learning rate and no early stop, so that a head that saw them would memorise them:
    # trained on its test fold too, this run's folds scored 0.83-1.0 (0.87 pooled); held out, 0.40
    run = diycnn.train(tmp_path / "noise", model="linear-probe", out=tmp_path / "run", epochs=50, lr=0.05,
                       patience=1000, suspects=False, near_duplicates=False)
    cv = run.metrics["cross_validation"]
    assert cv["checked"] is True and cv["photos"] == 30
    assert cv["accuracy"] < 0.7, cv
    # and the curves of such a run are named for what they show
    assert run.metrics["overfitting"]["kept_best"] is True
    assert "id='overfitting'" in (run.dir / "report.html").read_text()


@pytest.mark.usefixtures("offline")
def test_cv_on_needs_cached_features(tmp_path, tiny_spec):
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 6})
    with pytest.raises(ValueError, match="compare --folds"):
        diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run", epochs=1, cross_validate=True)
    run = diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run2", epochs=1)
    assert run.metrics["cross_validation"]["checked"] is False
    assert "compare --folds" in run.metrics["cross_validation"]["why"]
    off = diycnn.train(data, model="linear-probe", out=tmp_path / "run3", epochs=1, cross_validate=False)
    assert off.metrics["cross_validation"] == {"checked": False, "why": "turned off (--cv off)"}

