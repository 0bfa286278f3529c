"""Temperature scaling and the expected calibration error (evaluation/calibration.py), and a run
whose saved weights carry the temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import diycnn
from diycnn.evaluation import calibration as cal
from tests.conftest import make_dataset


def _sampled(temperature: float, n: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (1, n, C) whose labels are drawn from softmax(logits / temperature): the temperature
    that calibrates them is `temperature` itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    p = torch.softmax(torch.from_numpy(logits / temperature), 1).numpy()
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits[None].astype(np.float32), labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_finds_the_temperature_the_labels_were_drawn_with(true_t):
    logits, labels = _sampled(true_t, 20000)
    assert cal.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_calibrating_lowers_the_error_of_over_confident_logits():
    logits, labels = _sampled(2.5, 5000)  # as they come, these logits are 2.5 times too confident
    t = cal.fit_temperature(logits, labels)
    before = torch.softmax(torch.from_numpy(logits[0]), 1).numpy()
    after = torch.softmax(torch.from_numpy(logits[0] / t), 1).numpy()
    assert cal.expected_calibration_error(after, labels) < 0.02 < 0.1 < cal.expected_calibration_error(before, labels)
    assert cal.log_loss(logits, labels, t) < cal.log_loss(logits, labels, 1.0)
    assert (after.argmax(1) == before.argmax(1)).all()  # the predicted class never moves


def test_expected_calibration_error_by_hand():
    # four photos at 90% confidence, three right: one bin, |0.75 - 0.9| = 0.15
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    labels = np.array([0, 0, 1, 1])
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.15)
    # two bins: 0.6 right (gap 0.4), 0.95 right (gap 0.05), each half the photos
    probs = np.array([[0.6, 0.4], [0.05, 0.95]])
    assert cal.expected_calibration_error(probs, np.array([0, 1])) == pytest.approx((0.4 + 0.05) / 2)
    bins = cal.reliability(probs, np.array([0, 1]))
    assert [b["count"] for b in bins] == [1, 1] and bins[1]["high"] == 1.0


def test_without_mistakes_the_confidence_goes_to_what_the_record_supports_not_to_certainty():
    logits = np.zeros((1, 40, 2), dtype=np.float32)
    logits[0, :, 0] = 1.0  # every photo right, at 73% confidence
    t = cal.fit_temperature(logits, np.zeros(40, dtype=np.int64))
    assert cal.mean_confidence(logits, t) == pytest.approx(40.5 / 41, abs=1e-5)
    assert t > cal.BOUNDS[0]


def test_the_temperature_is_folded_into_the_last_linear_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(6, 5)
    with torch.no_grad():
        want = net(x) / 2.0
    assert cal.fold_temperature(net, 2.0, x)
    with torch.no_grad():
        assert torch.allclose(net(x), want, atol=1e-6)
    # logits that do not come straight from a linear layer: left as they were
    squashed = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh())
    before = {k: v.clone() for k, v in squashed.state_dict().items()}
    assert not cal.fold_temperature(squashed, 2.0, x)
    assert all(torch.equal(before[k], v) for k, v in squashed.state_dict().items())


def test_a_run_saves_calibrated_weights_and_says_so(tiny_spec, tmp_path):
    data = make_dataset(tmp_path / "photos", {"red": 120, "blue": 120})
    run = diycnn.train(data, model=str(tiny_spec), out=tmp_path / "run", epochs=2, batch_size=16)
    section = json.loads((run.dir / "metrics.json").read_text())["calibration"]
    assert section["calibrated"] and section["fitted_on"] == "the 36 validation photos"
    assert cal.BOUNDS[0] <= section["temperature"] <= cal.BOUNDS[1] and section["temperature"] != 1.0
    assert 0 <= section["test_ece_after"] <= 1 and 0 <= section["test_ece_before"] <= 1
    assert (run.dir / "reliability.png").is_file() and "id='calibration'" in (run.dir / "report.html").read_text()
    # what the saved weights predict is what metrics.json recorded, temperature included
    stored = json.loads((run.dir / "metrics.json").read_text())["test_probabilities"]
    paths = sorted(stored)[:6]
    got = diycnn.load(run.dir).predict([data / p for p in paths])
    assert np.allclose([[r["probabilities"][c] for c in run.class_names] for r in got],
                       [stored[p] for p in paths], atol=1e-4)
    off = diycnn.train(data, model=str(tiny_spec), out=tmp_path / "off", epochs=2, batch_size=16, calibrate=False)
    section = json.loads((off.dir / "metrics.json").read_text())["calibration"]
    assert not section["calibrated"] and "off" in section["why"] and "temperature" not in section
    with pytest.raises(ValueError, match="calibrate"):
        diycnn.train(data, model=str(tiny_spec), out=tmp_path / "bad", calibrate="yes")
