"""Suspect labels: confident learning on out-of-fold predictions, tested with injected label noise."""

import json
import shutil

import numpy as np
import pytest

import diycnn
from diycnn.data.split import fold_assignment
from diycnn.evaluation.suspects import (
    SUSPECT_MIN_SKILL,
    confident_learning,
    out_of_fold_probs,
    skill,
    suspect_labels,
)
from tests.conftest import make_dataset


def noisy_blobs(n=450, classes=3, flips=18, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1, (classes, 32))[y] * 1.5 + rng.normal(0, 1, (n, 32))
    noisy = y.copy()
    flip = rng.choice(n, flips, replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, classes, flips)) % classes
    return x, y, noisy, flip


def test_injected_label_noise_is_caught():
    x, y, noisy, flip = noisy_blobs()
    probs = out_of_fold_probs(x, noisy, 3)
    issues, confident = confident_learning(probs, noisy)
    top = set(issues[:len(flip)].tolist())
    assert len(top & set(flip.tolist())) >= 0.8 * len(flip)
    assert (confident[flip] == y[flip]).mean() >= 0.8  # it also says where they belong
    # the same data with the true labels: (almost) nothing is suspect
    clean, _ = confident_learning(out_of_fold_probs(x, y, 3), y)
    assert len(clean) <= 3


def test_confident_learning_by_hand():
    """Thresholds are per-class mean self-confidence; an issue is confidently in another class
    and not predicted as its own label; ranked by the given label's probability."""
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.2, 0.8], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1, 1, 0])
    # t0 = mean(.9, .8, .3, .45) = .6125, t1 = mean(.9, .8) = .85
    issues, confident = confident_learning(probs, labels)
    assert issues.tolist() == []  # photo 2: p1=.7 < t1; photo 5: p1=.55 < t1 -> not confident
    probs[2] = [0.05, 0.95]
    issues, confident = confident_learning(probs, labels)
    assert issues.tolist() == [2] and confident[2] == 1
    section = suspect_labels(probs, labels, [f"p{i}" for i in range(6)], ["a", "b"], how="test", min_skill=0)
    assert section["items"] == [{"path": "p2", "label": "a", "suggested": "b", "p_label": 0.05, "p_suggested": 0.95}]
    # 4 of 6 right, as many as always answering "a": no skill, so nothing is listed, and it says why
    gated = suspect_labels(probs, labels, [f"p{i}" for i in range(6)], ["a", "b"], how="test")
    assert gated["too_weak"] and gated["items"] == [] and gated["skill"] == 0 and "too weak" in gated["why"]
    assert skill(probs, labels) == (pytest.approx(4 / 6), pytest.approx(0.0))
    right = np.eye(2)[labels] * 0.9 + 0.05  # every photo right: skill 1, the same photo listed
    right[2] = [0.05, 0.95]
    strong = suspect_labels(np.concatenate([right, np.eye(2)[[0, 1] * 10] * 0.9 + 0.05]),
                            np.concatenate([labels, [0, 1] * 10]), [f"p{i}" for i in range(26)], ["a", "b"], how="t")
    assert strong["checked"] and strong["skill"] >= SUSPECT_MIN_SKILL and [i["path"] for i in strong["items"]] == ["p2"]


def test_folds_keep_groups_and_classes_balanced():
    labels = np.array([0] * 10 + [1] * 10)
    groups = list(range(20))
    groups[1] = groups[2] = groups[3] = 0  # photos 0-3 are near-duplicates
    fold = fold_assignment(labels, groups, 5)
    assert len(set(fold[[0, 1, 2, 3]].tolist())) == 1
    assert sorted(np.bincount(fold[labels == 1], minlength=5).tolist()) == [2] * 5


@pytest.mark.usefixtures("offline")
def test_train_lists_moved_photos_as_suspects(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 12, "blue": 12, "green": 12}, seed=5)
    moved = {"blue/red_003.png", "green/blue_007.png"}
    for rel in moved:
        cls, name = rel.split("/")
        shutil.move(data / name.split("_")[0] / name, data / cls / name)
    run = diycnn.train(data, model="linear-probe", out=tmp_path / "run", epochs=5)
    section = run.metrics["suspect_labels"]
    assert section["checked"] is True and section["photos"] == 36
    listed = [item["path"] for item in section["items"]]
    assert set(listed[:2]) == moved
    by_path = {item["path"]: item for item in section["items"]}
    assert by_path["blue/red_003.png"]["suggested"] == "red" and by_path["green/blue_007.png"]["suggested"] == "blue"
    assert json.loads((run.dir / "metrics.json").read_text())["suspect_labels"]["items"][0]["path"] in moved
    report = (run.dir / "report.html").read_text()
    assert "Suspect labels" in report and "blue/red_003.png" in report


@pytest.mark.usefixtures("offline")
def test_suspects_on_needs_cached_features(tmp_path, tiny_spec):
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 6})
    with pytest.raises(ValueError, match="compare --folds"):
        diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run", epochs=1, suspects=True)
    run = diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run2", epochs=1)
    assert run.metrics["suspect_labels"]["checked"] is False
