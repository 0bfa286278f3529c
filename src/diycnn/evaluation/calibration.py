"""Confidence that means what it says: temperature scaling and the expected calibration error.

A network trained to a low loss is often over-confident ("99%" right 90% of the time); a head
with strong weight decay is often under-confident. Temperature scaling (Guo et al., 2017, "On
Calibration of Modern Neural Networks") divides every logit by one number T, fitted to minimise
the log loss on photos the weights were not trained on. It never changes which class wins, so
accuracy, the confusion matrix and Grad-CAM are untouched; only the probabilities move.

The run's validation photos are what T is fitted on. Below MIN_PHOTOS of them, one T from a few
dozen photos would be noise: recipes on cached features then fit it on out-of-fold predictions
over the training and validation photos (the head trained K times, seconds each), as scikit-learn's
CalibratedClassifierCV(ensemble=False) does; recipes that train the whole network keep T = 1 and
say why. When those photos hold no mistake, the log loss only falls as T shrinks; T then brings
their mean confidence to the accuracy such a record supports (the Jeffreys estimate, (n + 1/2) /
(n + 1) for n photos), not to 100%.

T is folded into the weights of the last linear layer (weights and bias divided by T), so the
saved model, `predict`, `evaluate`, the app and every export give the calibrated probabilities
with no code of their own. The expected calibration error (ECE: the gap between confidence and
accuracy, averaged over ECE_BINS equal-width confidence bins, weighted by their photo counts) is
reported on the test photos before and after.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .metrics import ECE_BINS, expected_calibration_error, reliability  # noqa: F401 (this module's names too)

MIN_PHOTOS = 30  # validation photos: below this, out-of-fold predictions (cached features) or T = 1
BOUNDS = (0.05, 20.0)  # the temperatures searched


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T), averaged over the views
    (V, N, C) as predictions average them."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64)) / temperature
    probs = torch.softmax(z, dim=2).mean(0)
    p_true = probs[torch.arange(len(labels)), torch.from_numpy(labels)]
    return float(-torch.log(p_true.clamp_min(1e-300)).mean())


def mean_confidence(logits: np.ndarray, temperature: float) -> float:
    """The mean top-class probability under softmax(logits / T), the views averaged."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64)) / temperature
    return float(torch.softmax(z, dim=2).mean(0).max(1).values.mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in BOUNDS minimising `log_loss` (a bounded one-dimensional search over log T).

    When every photo is predicted right the log loss has no minimum (it falls as T shrinks), so
    T then makes the mean confidence equal the Jeffreys estimate of the accuracy, (n + 1/2) / (n + 1)
    for n photos without a mistake."""
    from scipy.optimize import brentq, minimize_scalar  # noqa: PLC0415 (lazy: SciPy)

    low, high = math.log(BOUNDS[0]), math.log(BOUNDS[1])
    predicted = torch.softmax(torch.from_numpy(logits).double(), dim=2).mean(0).argmax(1).numpy()
    if not (predicted != labels).any():
        target = (len(labels) + 0.5) / (len(labels) + 1)
        gap = lambda u: mean_confidence(logits, math.exp(u)) - target  # noqa: E731 (falls as T grows)
        if gap(low) <= 0 or gap(high) >= 0:  # out of reach within BOUNDS: the nearer end
            return BOUNDS[0] if gap(low) <= 0 else BOUNDS[1]
        return math.exp(brentq(gap, low, high, xtol=1e-6))
    found = minimize_scalar(lambda u: log_loss(logits, labels, math.exp(u)), bounds=(low, high),
                            method="bounded", options={"xatol": 1e-4})
    # the search's end points are candidates too (it never evaluates them exactly)
    return min((math.exp(float(found.x)), *BOUNDS), key=lambda c: log_loss(logits, labels, c))


def last_linear(module: torch.nn.Module, example: torch.Tensor) -> torch.nn.Linear | None:
    """The nn.Linear whose output is `module`'s output (the logits) on `example`, if there is one."""
    outputs: dict[str, torch.Tensor] = {}
    linears = {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
             for name, m in linears.items()]
    try:
        module.eval()
        with torch.no_grad():
            result = module(example)
    finally:
        for h in hooks:
            h.remove()
    for name, out in outputs.items():
        if out is result or (out.shape == result.shape and torch.equal(out, result)):
            return linears[name]
    return None


def fold_temperature(module: torch.nn.Module, temperature: float, example: torch.Tensor) -> bool:
    """Divide the last linear layer's weights and bias by `temperature`, so that `module` computes
    its logits / T. Checked on `example`; False (and `module` as it was) where it has no such layer
    or the check fails."""
    layer = last_linear(module, example)
    if layer is None:
        return False
    before = copy.deepcopy(layer.state_dict())
    with torch.no_grad():
        expected = module(example).double() / temperature
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)
        got = module(example).double()
    if torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
        return True
    layer.load_state_dict(before)
    return False
