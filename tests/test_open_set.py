"""'None of these' (evaluation/open_set.py): the score, its threshold, and runs that say `unknown`
where they are used (the Python API and `diycnn predict` / `evaluate`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diycnn
from diycnn import cli
from diycnn.evaluation import open_set as osr
from tests.conftest import make_dataset


def _clusters(rng: np.random.Generator, n: int, classes: int = 3, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 1, (classes, width))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(0, 0.3, (n, width)), labels


def test_leave_one_out_scores_are_the_scores_against_means_without_the_photo():
    rng = np.random.default_rng(0)
    features, labels = _clusters(rng, 40)
    labels[0] = 2  # no class is special
    got = osr.leave_one_out_scores(features, labels, 3)
    for i in range(len(features)):
        keep = np.arange(len(features)) != i
        means = osr.class_means(features[keep], labels[keep], 3)
        assert got[i] == pytest.approx(osr.scores(features[i:i + 1], means)[0], abs=1e-9)


def test_the_score_is_the_cosine_distance_to_the_nearest_class_averaged_over_views():
    means = np.array([[1.0, 0.0], [0.0, 1.0]])
    views = np.array([[[2.0, 0.0]], [[1.0, 1.0]]])  # on class 0's mean; halfway between
    assert osr.scores(views[:1], means)[0] == pytest.approx(0.0)
    assert osr.scores(views, means)[0] == pytest.approx((0 + 1 - np.sqrt(0.5)) / 2)


def test_a_cohort_lowers_the_score_of_photos_near_it_by_half_their_distance_to_its_mean():
    means, cohort = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), osr.cohort_mean(np.array([[0.0, 0.0, 3.0],
                                                                                          [0.0, 0.0, 1.0]]))
    assert cohort == pytest.approx(np.array([[0.0, 0.0, 1.0]]))
    on_class, on_cohort = np.array([[2.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 5.0]])
    assert osr.scores(on_class, means, cohort)[0] == pytest.approx(0 - osr.COHORT_WEIGHT * 1)
    assert osr.scores(on_cohort, means, cohort)[0] == pytest.approx(1 - 0)  # unchanged: no nearer to the cohort
    rng = np.random.default_rng(2)
    features, labels = _clusters(rng, 30)
    others = osr.cohort_mean(rng.normal(0, 1, (5, 16)))
    plain, with_cohort = osr.leave_one_out_scores(features, labels, 3), osr.leave_one_out_scores(features, labels, 3,
                                                                                                  others)
    term = osr.COHORT_WEIGHT * (1 - osr.unit(features) @ others[0])
    assert with_cohort == pytest.approx(plain - term, abs=1e-12)


def test_the_threshold_calls_at_most_the_target_of_known_photos_unknown():
    known = np.random.default_rng(1).random(999)
    t = osr.threshold_for(known)
    assert (known > t).mean() <= osr.TARGET_KNOWN_REJECTED
    assert (known >= t).mean() > osr.TARGET_KNOWN_REJECTED - 0.01  # and not far below it: no slack wasted
    assert osr.threshold_for(np.array([0.1, 0.2, 0.3])) == 0.3  # too few photos for 5%: none rejected


def test_auroc():
    assert osr.auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert osr.auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert osr.auroc(np.array([0.1, 0.3]), np.array([0.2, 0.2])) == 0.5


def test_a_damaged_detector_file_names_itself(tmp_path):
    osr.save(tmp_path, np.ones((2, 4)), 0.25)
    loaded = osr.Detector.load(tmp_path, 2)
    assert loaded.threshold == 0.25 and loaded.means.shape == (2, 4)
    with pytest.raises(ValueError, match=osr.UNKNOWN_FILE):
        osr.Detector.load(tmp_path, 3)  # a detector of another run (3 classes)
    assert loaded.cohort is None
    osr.save(tmp_path, np.ones((2, 4)), 0.25, osr.cohort_mean(np.eye(4)))
    assert osr.Detector.load(tmp_path, 2).cohort == pytest.approx(np.full((1, 4), 0.5))
    osr.save(tmp_path, np.ones((2, 4)), 0.25, np.ones((1, 3)))  # a cohort of other features
    with pytest.raises(ValueError, match=osr.UNKNOWN_FILE):
        osr.Detector.load(tmp_path, 2)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Red and blue photos to train on; green photos (a class the runs never saw) as strangers."""
    root = tmp_path_factory.mktemp("open-set")
    return make_dataset(root / "photos", {"red": 40, "blue": 40}), make_dataset(root / "green", {"green": 12}, seed=5)


@pytest.mark.parametrize("model", ["tiny", "linear-probe"])  # threshold on validation photos; leave-one-out
def test_a_run_calls_photos_of_no_class_it_knows_unknown(model, colours, tiny_spec, tmp_path, capsys, offline):
    data, green = colours
    recipe = str(tiny_spec) if model == "tiny" else model
    run = diycnn.train(data, model=recipe, out=tmp_path / "run", epochs=3, batch_size=16, seed=0)
    section = run.metrics["unknown"]
    assert section["enabled"] and section["fitted_known_rejected"] <= osr.TARGET_KNOWN_REJECTED
    assert ("left out" in section["fitted_on"]) == (model == "linear-probe")
    assert 0 <= section["test_known_rejected"] <= 1
    info = json.loads((run.dir / "model.json").read_text())
    assert info["inference"]["unknown"]["threshold"] == section["threshold"]

    loaded = diycnn.load(run.dir)  # as a later process has it: the means and threshold from the run folder
    assert loaded.unknown_threshold == pytest.approx(section["threshold"])
    preds = loaded.predict([green])
    assert len(preds) == 12
    for p in preds:
        assert p["unknown"] == (p["unknown_score"] > loaded.unknown_threshold)
        assert (p["label"] == "unknown") == p["unknown"] and set(p["probabilities"]) == {"blue", "red"}
    known = loaded.predict([data / "red"])
    # photos of a colour the run never saw are farther from its classes than photos of a colour it knows
    assert np.mean([p["unknown_score"] for p in preds]) > np.mean([p["unknown_score"] for p in known])

    result = loaded.evaluate(data, unknown_folder=green)["unknown"]
    assert result["strangers"] == 12 and result["auroc"] > 0.5
    assert result["strangers_called_unknown"] == np.mean([p["unknown"] for p in preds])
    assert result["known_called_unknown"] <= 0.2  # mostly training photos: near their class means

    assert cli.main(["evaluate", str(run.dir), str(data), "--unknown-folder", str(green)]) == 0
    out = capsys.readouterr().out
    assert "None of these:" in out and "Photos of other classes (12)" in out
    assert cli.main(["predict", str(run.dir), str(green), "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(",unknown_score")


def _features(run, files: list) -> np.ndarray:
    """The features a loaded run's last linear layer reads, of photos decoded as it predicts them."""
    from diycnn.data.augment import image_input_fn
    from diycnn.data.loader import ArrayBatches, decode_all
    from diycnn.training.trainer import logits_and_features

    images, ok, _ = decode_all(files, run.preprocessing)
    assert len(ok) == len(files)
    _, feats = logits_and_features(run.module, ArrayBatches(images, np.zeros(len(images)), 8),
                                   image_input_fn(run.preprocessing), run.device, run.precision, tta=run.tta)
    return feats


@pytest.mark.parametrize("model", ["tiny", "linear-probe"])  # a network on photos; a head on cached features
def test_an_unknown_folder_is_the_runs_cohort_in_every_later_process(model, colours, tiny_spec, tmp_path, capsys,
                                                                     offline):
    data, green = colours
    recipe = str(tiny_spec) if model == "tiny" else model
    with pytest.raises(ValueError, match="--unknown-folder '.*missing' is not a folder"):
        diycnn.train(data, model=recipe, out=tmp_path / "none", epochs=1, unknown_folder=str(tmp_path / "missing"))
    assert not (tmp_path / "none").exists()  # refused before a run folder is made
    run = diycnn.train(data, model=recipe, out=tmp_path / "run", epochs=2, batch_size=16, seed=0,
                       unknown_folder=str(green))
    section = run.metrics["unknown"]
    assert section["unknown_folder"] == {"folder": str(green), "photos": 12, "skipped": []}
    assert section["method"] == osr.COHORT_METHOD and section["fitted_known_rejected"] <= osr.TARGET_KNOWN_REJECTED

    loaded = diycnn.load(run.dir)
    greens = sorted(green.rglob("*.png"))
    # the cohort is the mean of the folder's features as a loaded run computes them (decoded as it predicts)
    want = osr.cohort_mean(_features(loaded, greens)[0])
    np.testing.assert_allclose(loaded.detector.cohort, want, atol=1e-5)
    reds = sorted((data / "red").glob("*.png"))[:6]
    got = [p["unknown_score"] for p in loaded.predict(reds)]
    np.testing.assert_allclose(got, osr.scores(_features(loaded, reds), loaded.detector.means, want), atol=1e-5)
    assert cli.main(["evaluate", str(run.dir), str(data), "--unknown-folder", str(green)]) == 0
    assert "Photos of other classes (12)" in capsys.readouterr().out


def test_no_unknown_always_names_a_class_and_a_missing_detector_is_named(two_class_data, tiny_spec, tmp_path):
    run = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "off", epochs=1, unknown=False)
    assert run.metrics["unknown"] == {"enabled": False, "why": "turned off (--no-unknown)"}
    assert not (run.dir / osr.UNKNOWN_FILE).exists()
    preds = diycnn.load(run.dir).predict([two_class_data])
    assert preds and all("unknown" not in p and p["label"] in ("red", "blue") for p in preds)
    with pytest.raises(ValueError, match="--unknown-folder needs a run that can"):
        diycnn.load(run.dir).evaluate(two_class_data, unknown_folder=two_class_data)

    on = diycnn.train(two_class_data, model=str(tiny_spec), out=tmp_path / "on", epochs=1)
    (on.dir / osr.UNKNOWN_FILE).unlink()
    with pytest.raises(ValueError, match=f"lacks {osr.UNKNOWN_FILE}"):
        diycnn.load(on.dir)
