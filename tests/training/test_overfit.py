"""Over-fitting is named in plain words (evaluation/overfit.py)."""

from diycnn.evaluation.overfit import overfitting


def history(val, train):
    return [{"epoch": i + 1, "val_loss": v, "loss": t} for i, (v, t) in enumerate(zip(val, train))]


def test_rising_validation_loss_while_training_loss_falls_is_named():
    h = history([0.70, 0.55, 0.50, 0.56, 0.63, 0.71], [0.69, 0.40, 0.25, 0.12, 0.06, 0.03])
    found = overfitting(h, kept_best=False)
    assert found["best_epoch"] == 3 and found["epochs_rising"] == 3
    assert "memorising" in found["message"] and "--patience 3 would stop early and keep epoch 3" in found["message"]
    assert "kept the weights of epoch 3" in overfitting(h, kept_best=True)["message"]
    assert "a pretrained recipe (tm, linear-probe)" in found["message"]  # no recipe named: all the advice
    tm = overfitting(h, kept_best=False, model="tm")["message"]
    assert "pretrained recipe" not in tm and "--model face-probe" in tm
    assert "face-probe" not in overfitting(h, kept_best=False, model="face-probe")["message"]
    # the web app's words name its own controls, never a command-line flag
    app = found["app_message"]
    assert "Epochs 3 (under Advanced)" in app and "memorising" in app and "--" not in app


def test_no_false_alarms():
    falling = history([0.7, 0.6, 0.5, 0.45, 0.41, 0.40], [0.7, 0.5, 0.4, 0.3, 0.25, 0.2])
    assert overfitting(falling, kept_best=False) is None
    late = history([0.7, 0.6, 0.5, 0.45, 0.40, 0.52], [0.7, 0.5, 0.4, 0.3, 0.25, 0.2])  # one epoch up: noise
    assert overfitting(late, kept_best=False) is None
    flat = history([0.7, 0.5, 0.51, 0.52, 0.53, 0.53], [0.7, 0.5, 0.4, 0.3, 0.25, 0.2])  # within 10%
    assert overfitting(flat, kept_best=False) is None
    both_up = history([0.7, 0.5, 0.6, 0.7, 0.8, 0.9], [0.7, 0.5, 0.6, 0.7, 0.8, 0.9])  # diverging, not memorising
    assert overfitting(both_up, kept_best=False) is None
    assert overfitting(history([0.5, 0.9], [0.5, 0.1]), kept_best=False) is None  # too short to tell
