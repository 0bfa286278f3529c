"""The figures every report quotes: the Wilson interval, and the docstring examples that need no data."""

from __future__ import annotations

import math

import pytest


def test_the_doctest_examples_hold():
    """Docstring examples that need no data run as doctests (the Wilson interval, the settings helpers)."""
    import doctest

    from diycnn import settings
    from diycnn.evaluation import metrics

    for module in (metrics, settings):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_wilson_interval_matches_the_textbook_formula():
    import math

    from diycnn.evaluation.metrics import wilson_interval

    z = 1.959963984540054
    for k, n in ((64, 100), (3, 4), (0, 7), (30, 30), (1, 1)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert wilson_interval(k, n) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-8)


def test_f1_figures_against_sklearn_style_hand_counts():
    """3 classes, 10 photos: precision, recall, F1 per class and macro-F1 against counts done by hand."""
    import numpy as np

    from diycnn.evaluation.metrics import classification_metrics

    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])
    probs = np.full((10, 3), 0.1)
    probs[np.arange(10), pred] = 0.8
    m = classification_metrics(probs, y, ["a", "b", "c"])
    # a: tp 2, predicted 3, support 4 -> p 2/3, r 1/2; b: tp 2, predicted 3, support 3 -> p 2/3, r 2/3;
    # c: tp 3, predicted 4, support 3 -> p 3/4, r 1
    want = {"a": (2 / 3, 1 / 2), "b": (2 / 3, 2 / 3), "c": (3 / 4, 1.0)}
    for name, (p, r) in want.items():
        got = m["per_class"][name]
        assert got["precision"] == pytest.approx(p) and got["recall"] == pytest.approx(r)
        assert got["f1"] == pytest.approx(2 * p * r / (p + r))
    assert m["macro_f1"] == pytest.approx(np.mean([2 * p * r / (p + r) for p, r in want.values()]))
    assert m["accuracy"] == pytest.approx(0.7) and m["correct"] == 7
    assert m["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(10), y] / probs.sum(axis=1)[0])), rel=1e-6)
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "epochs must be a whole number"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"batch_size": 0}, "batch_size must be a whole number"),
    ({"lr": -1}, "lr must be a positive number"),
    ({"patience": 0}, "patience must be a whole number"),
    ({"val_split": 0}, "val_split must be a fraction"),
    ({"test_split": 1.2}, "test_split must be a fraction"),
    ({"val_split": 0.5, "test_split": 0.45}, "val_split"),
    ({"max_minutes": 0}, "max_minutes must be a positive number"),
    ({"budget": -5}, "budget must be a positive number"),
    ({"crop": "heads"}, "crop must be 'faces'"),
    ({"near_duplicates": "yes"}, "near_duplicates must be true or false"),
    ({"suspects": 1}, "suspects must be true, false or unset"),
    ({"no_face": "drop"}, "no_face must be 'keep' or 'skip'"),
    ({"optimizer": "sgd"}, "optimizer must be 'adam' or 'adamw'"),
    ({"schedule": "step"}, "schedule must be 'constant' or 'cosine'"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
    ({"freeze_fraction": -0.1}, "freeze_fraction must be in [0, 1)"),
    ({"device": "gpu"}, "device must be one of"),
    ({"precision": "bf61"}, "Did you mean 'bf16'"),
])
def test_every_settings_check_names_the_setting_and_the_fix(settings, message):
    from diycnn.settings import TrainSettings

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainSettings(**settings)
    TrainSettings(**{k: v for k, v in TrainSettings().to_dict().items()})  # the defaults pass


def test_warm_up_then_cosine_learning_rate_factors():
    from diycnn.training.trainer import FitConfig, lr_factor

    cfg = FitConfig(epochs=10, lr=1e-3, patience=None, seed=0, schedule="cosine", warmup_epochs=1)
    steps = 4  # per epoch: 4 warm-up steps, then 36 of cosine decay to 1%
    assert [lr_factor(cfg, s, steps) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(cfg, 4, steps) == pytest.approx(1.0)
    assert lr_factor(cfg, 4 + 18, steps) == pytest.approx(0.01 + 0.99 * 0.5)  # halfway through the decay
    assert lr_factor(cfg, 39, steps) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 35 / 36)))
    assert lr_factor(cfg, 400, steps) == pytest.approx(0.01)  # never below 1% of the base rate
    constant = FitConfig(epochs=10, lr=1e-3, patience=None, seed=0)
    assert {lr_factor(constant, s, steps) for s in range(40)} == {1.0}
