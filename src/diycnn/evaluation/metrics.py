"""Classification metrics: accuracy with a Wilson interval, log loss, per-class scores, confusion,
expected calibration error."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (well-behaved for small n and p near 0 or 1), from
    SciPy's `binomtest(...).proportion_ci(method="wilson")`.

    Example:
        >>> [round(v, 4) for v in wilson_interval(64, 100)]
        [0.5424, 0.7273]
        >>> wilson_interval(0, 0)
        (0.0, 1.0)
    """
    if total == 0:
        return (0.0, 1.0)
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of |accuracy - mean confidence| x the bin's share of the photos."""
    if len(labels) == 0:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, labels, bins))
                 / len(labels))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """The non-empty confidence bins: their range, photo count, mean confidence and accuracy
    (the points of a reliability diagram)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    # bin k holds confidences in (k/bins, (k+1)/bins]; the top bin includes 1.0
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        inside = index == k
        if inside.any():
            out.append({"low": k / bins, "high": (k + 1) / bins, "count": int(inside.sum()),
                        "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return out


def classification_metrics(probs: np.ndarray, y_true: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """All the test figures from predicted probabilities (N, C) and true labels (N,).

    Returns:
        {"accuracy", "accuracy_ci95", "loss", "macro_f1", "ece" (expected calibration error), "n",
        "per_class": {name: {precision, recall, f1, support}}, "confusion_matrix": [[...]], "class_names"}
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n, k = len(y_true), len(class_names)
    if n == 0:
        raise ValueError("No images to evaluate.")
    y_pred = probs.argmax(axis=1)
    correct = int((y_pred == y_true).sum())
    cm = confusion_matrix(y_true, y_pred, k)
    # Categorical cross-entropy, clipped like Keras (epsilon 1e-7) so one confident error is finite.
    p_true = np.clip(probs[np.arange(n), y_true], 1e-7, 1.0)
    loss = float(-np.log(p_true).mean())
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        predicted, support = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    present = [v["f1"] for v in per_class.values() if v["support"] > 0]
    return {
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "loss": loss,
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "ece": expected_calibration_error(probs, y_true),
        "n": n,
        "correct": correct,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
