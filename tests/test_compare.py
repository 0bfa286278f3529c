"""compare: one split for every model, McNemar, K-fold; explain: Grad-CAM for specs and backbones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import diycnn
from diycnn.comparison import format_table, mcnemar, paired_folds_test
from diycnn.data.images import Preprocessing
from diycnn.data.scan import scan_folder
from diycnn.data.split import kfold_splits
from diycnn.explanations import gradcam
from tests.conftest import TINY_SPEC, make_dataset

WIDE_SPEC = TINY_SPEC.replace("name: tiny", "name: wide").replace("filters: 8", "filters: 16")


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def specs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (tmp_path / "wide.yaml").write_text(WIDE_SPEC)
    return [str(tmp_path / "tiny.yaml"), str(tmp_path / "wide.yaml")]


def test_mcnemar_exact_and_chi_square():
    a = np.array([True] * 10 + [True] + [False] * 4)
    b = np.array([True] * 10 + [False] + [True] * 4)
    r = mcnemar(a, b)  # 1 vs 4 discordant: exact two-sided binomial p = 2 * P(X <= 1 | n=5) = 0.375
    assert (r["only_a_correct"], r["only_b_correct"]) == (1, 4)
    assert r["p_value"] == pytest.approx(0.375) and r["method"] == "exact binomial" and not r["significant"]
    a = np.array([True] * 31 + [False] * 3 + [True] * 100)
    b = np.array([False] * 31 + [True] * 3 + [True] * 100)
    r = mcnemar(a, b)  # (|31-3|-1)^2 / 34 = 21.44 -> p = 3.65e-6
    assert r["method"].startswith("chi-square") and r["p_value"] == pytest.approx(3.65e-6, rel=0.01)
    assert r["significant"]
    assert mcnemar(a, a)["p_value"] == 1.0


def test_paired_folds_test():
    r = paired_folds_test([0.9, 0.8, 0.85, 0.95], [0.7, 0.65, 0.7, 0.8])
    assert r["mean_difference"] == pytest.approx(0.1625) and r["p_value"] < 0.01 and r["significant"]
    assert paired_folds_test([0.5, 0.6], [0.5, 0.6])["p_value"] == 1.0


def test_kfold_splits_put_every_photo_in_one_test_fold(tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 11, "blue": 7})
    scan = scan_folder(data)
    splits = kfold_splits(scan, 3, seed=1)
    tests = [p for s in splits for p, _ in s.paths("test")]
    assert sorted(tests) == sorted(r.rel for r in scan.records)  # each photo tested exactly once
    for s in splits:
        parts = [set(p for p, _ in s.paths(x)) for x in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        counts = s.counts()
        assert all(counts[x][c] >= 1 for x in ("train", "val", "test") for c in ("red", "blue"))
    with pytest.raises(ValueError, match="Class 'blue' has 7 photo.*at least 8"):
        kfold_splits(scan, 6)


def test_compare_trains_every_model_on_one_split(tmp_path, specs):
    data = make_dataset(tmp_path / "photos", {"red": 12, "blue": 12})
    out = diycnn.compare(data, specs, out=tmp_path / "cmp", epochs=3, seed=0)
    result = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in result["models"]] == ["tiny", "wide"]
    splits = [json.loads((out / "runs" / m / "split.json").read_text())["splits"] for m in ("tiny", "wide")]
    assert splits[0] == splits[1] == json.loads((out / "split.json").read_text())["splits"]
    for r in result["models"]:
        assert len(r["predictions"]) == result["test_photos"] == 4
        assert r["parameters"] > 0 and r["size_bytes"] > 0 and r["inference_ms_per_photo"] > 0
        wrong = sum(p["predicted"] != p["true"] for p in r["predictions"])
        assert wrong == round((1 - r["test_accuracy"]) * 4)
    (pair,) = result["mcnemar"]
    assert (pair["a"], pair["b"]) == ("tiny", "wide") and 0 <= pair["p_value"] <= 1
    html = (out / "comparison.html").read_text()
    assert "McNemar" in html and "td class='cell" in html and "Why tiny decided" in html
    assert "McNemar p =" in format_table(result)
    # the page is a Jinja2 template with autoescaping: hostile model, class and file names stay text
    from diycnn.report.compare_html import render_comparison

    bad = "<script>window.pwned=1</script>'\"><img src=x onerror=alert(1)>"
    hostile = json.loads(json.dumps(result).replace("tiny", bad.replace('"', '\\"')).replace('"red"', '"r<b>ed"').replace("red/", "r<b>ed/"))
    page = render_comparison(hostile, b"png", b"png", {bad: []}, data)
    markup, payload = page.split("<script type='application/json' id='cmp-data'>")
    assert payload.count("</script>") == 2  # the data block's own end and the script's: no name closes it
    assert "<script>window.pwned" not in markup and "<img src=x" not in markup and "r<b>ed" not in markup
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page and "r&lt;b&gt;ed" in page
    # '<!--' in a script block swallows the rest of the page's scripts (HTML spec): the JSON holds no '<' at all
    commented = json.loads(json.dumps(result).replace('"red"', '"<!--<script>x"'))
    block = render_comparison(commented, b"png", b"png", {}, data).split("id='cmp-data'>")[1].split("</script>")[0]
    assert "<" not in block and "<!--<script>x" in json.loads(block)["classes"]
    # already-trained runs on the same split compare without retraining
    again = diycnn.compare(runs=[out / "runs" / "tiny", out / "runs" / "wide"], out=tmp_path / "again")
    assert json.loads((again / "comparison.json").read_text())["mcnemar"][0]["p_value"] == pair["p_value"]


def test_compare_scans_once_and_trains_every_model_and_fold_on_it(tmp_path, specs, monkeypatch):
    import diycnn.pipeline as pipeline

    scans, scanned_with = [], []
    real_scan, real_train = pipeline.scan_folder, pipeline.train_one
    monkeypatch.setattr(pipeline, "scan_folder", lambda *a, **k: scans.append(a) or real_scan(*a, **k))

    def train_one(data, s, **kw):
        scanned_with.append(kw["scan"])
        return real_train(data, s, **kw)

    monkeypatch.setattr(pipeline, "train_one", train_one)
    data = make_dataset(tmp_path / "photos", {"red": 6, "blue": 6})
    diycnn.compare(data, specs, out=tmp_path / "cmp", folds=2, epochs=1, seed=0)
    assert len(scans) == 1 and len(scanned_with) == 4 and all(s is scanned_with[0] for s in scanned_with)


def test_runs_on_different_splits_are_refused(tmp_path, specs):
    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10})
    a = diycnn.train(data, model=specs[0], out=tmp_path / "a", epochs=1, seed=0)
    b = diycnn.train(data, model=specs[0], out=tmp_path / "b", epochs=1, seed=1)
    with pytest.raises(ValueError, match="different split .*--split"):
        diycnn.compare(runs=[a.dir, b.dir], out=tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "comparison.json").exists()


def test_compare_folds_reports_mean_std_and_paired_test(tmp_path, specs):
    data = make_dataset(tmp_path / "photos", {"red": 8, "blue": 8})
    out = diycnn.compare(data, specs, folds=3, out=tmp_path / "cmp", epochs=2)
    folds = json.loads((out / "comparison.json").read_text())["folds"]
    assert folds["k"] == 3 and set(folds["test_accuracy"]) == {"tiny", "wide"}
    for s in folds["test_accuracy"].values():
        assert len(s["accuracies"]) == 3 and s["mean"] == pytest.approx(np.mean(s["accuracies"]))
    assert folds["paired_tests"][0]["method"].startswith("paired t-test")
    assert all((out / "folds" / str(k) / m / "model.json").is_file() for k in (1, 2, 3) for m in ("tiny", "wide"))
    oof = folds["out_of_fold"]
    assert oof["test_photos"] == 16 and oof["class_names"] == ["blue", "red"]  # every photo once
    for m in ("tiny", "wide"):
        per_fold = [json.loads((out / "folds" / str(k) / m / "metrics.json").read_text()) for k in (1, 2, 3)]
        r = oof["models"][m]
        assert np.array_equal(r["confusion_matrix"], sum(np.array(f["confusion_matrix"]) for f in per_fold))
        tested = [f["counts"]["test"] for f in per_fold]
        assert sum(tested) == 16
        assert r["correct"] == round(sum(f["test_accuracy"] * t for f, t in zip(per_fold, tested)))
        assert r["accuracy"] == pytest.approx(r["correct"] / 16) and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert np.trace(r["confusion_matrix"]) == r["correct"]
    (pair,) = oof["mcnemar"]
    right = {m: oof["models"][m]["correct"] for m in ("tiny", "wide")}
    assert pair["only_a_correct"] - pair["only_b_correct"] == right["tiny"] - right["wide"]
    from diycnn.evaluation.suspects import SUSPECT_MIN_SKILL, confident_learning, skill

    for m in ("tiny", "wide"):  # suspect labels: confident learning on the pooled out-of-fold probabilities
        section = oof["suspect_labels"][m]
        assert section["photos"] == 16
        probs = {}
        for k in (1, 2, 3):
            probs.update(json.loads((out / "folds" / str(k) / m / "metrics.json").read_text())["test_probabilities"])
        photos = sorted(probs)
        y = np.array([["blue", "red"].index(p.split("/")[0]) for p in photos])
        pooled = np.array([probs[p] for p in photos])
        if skill(pooled, y)[1] < SUSPECT_MIN_SKILL:  # tiny models may be too weak to judge labels: then it says so
            assert section["too_weak"] and not section["checked"] and section["items"] == []
            continue
        issues, _ = confident_learning(pooled, y)
        assert section["checked"] is True and [i["path"] for i in section["items"]] == [photos[i] for i in issues]
    html = (out / "comparison.html").read_text()
    assert "Out of fold: all 16 photos" in html
    assert "Suspect labels by" in html
    assert "Out of fold (each of the 16 photos" in format_table(json.loads((out / "comparison.json").read_text()))


class TwoHalves(nn.Module):
    """Class 0's score is the red channel's mean, class 1's the blue channel's (through one 1x1 conv)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 2] = 1.0

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_gradcam_points_at_the_evidence():
    img = np.zeros((1, 16, 16, 3), np.uint8)
    img[0, :, :8, 0] = 255  # red on the left
    img[0, :, 8:, 2] = 255  # blue on the right
    prep = Preprocessing(size=(16, 16))
    for cls, side in ((0, "left"), (1, "right")):
        cam = gradcam(TwoHalves(), prep, img, class_index=cls)["cams"][0]
        left, right = cam[:, :8].mean(), cam[:, 8:].mean()
        assert (left > 5 * right) if side == "left" else (right > 5 * left)


class Ramp(nn.Module):
    def forward(self, x):
        return x + torch.linspace(0, 4, x.shape[3])  # grows to the right


class RampedRed(nn.Module):
    """A feature map that is not mirror-symmetric: the red channel plus a left-to-right ramp;
    class 0 scores its mean, class 1 a constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.ramp = Ramp()  # the last image-shaped map: Grad-CAM's target layer
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0

    def forward(self, x):
        a = self.ramp(self.conv(x))
        score = a.mean(dim=(1, 2, 3))
        return torch.stack([score, torch.full_like(score, 0.5)], dim=1)


def test_gradcam_with_test_time_augmentation_explains_both_passes():
    img = np.zeros((1, 16, 16, 3), np.uint8)
    img[0, :, :8, 0] = 255  # red on the left
    prep = Preprocessing(size=(16, 16))
    plain = gradcam(RampedRed(), prep, img, class_index=0)
    both = gradcam(RampedRed(), prep, img, class_index=0, tta=True)
    # one pass: the ramp makes the right edge (no red) the hottest; averaged with the mirrored
    # pass, mirrored back, the ramp evens out to 2 everywhere: red half 1 + 2, other half 2
    np.testing.assert_allclose(plain["cams"][0][:, -1], 1.0, rtol=1e-6)
    np.testing.assert_allclose(both["cams"][0][:, :8], 1.0, rtol=1e-5)
    np.testing.assert_allclose(both["cams"][0][:, 8:], 2 / 3, rtol=1e-5)
    x = prep.normalise(torch.from_numpy(img))
    with torch.no_grad():
        want = (torch.softmax(RampedRed()(x), 1) + torch.softmax(RampedRed()(x.flip(3)), 1)) / 2
    np.testing.assert_allclose(both["probs"], want.numpy(), rtol=1e-6)  # the run's own TTA probabilities


def test_explain_spec_and_backbone_runs(tmp_path, specs):
    data = make_dataset(tmp_path / "photos", {"red": 10, "blue": 10})
    for model in (specs[0], "tm"):
        run = diycnn.train(data, model=model, out=tmp_path / ("spec" if model != "tm" else "tm"), epochs=2)
        results = diycnn.explain(run.dir, [data / "red"], out=tmp_path / f"cam-{run.dir.name}")
        assert len(results) == 10 and all((tmp_path / f"cam-{run.dir.name}").glob("*.gradcam.jpg"))
        assert all(r["class"] == r["predicted"] for r in results)
        forced = diycnn.explain(run.dir, [data / "red" / "red_000.png"], class_name="blue")
        assert forced[0]["class"] == "blue" and (run.dir / "explain").is_dir()
        assert "Why it decided" in (run.dir / "report.html").read_text()
    with pytest.raises(ValueError, match="Unknown class 'green'"):
        diycnn.explain(run.dir, [data / "red"], class_name="green")
