"""Suspect labels: photos whose given class the model finds unlikely, from out-of-fold predictions.

Confident learning (Northcutt, Jiang & Chuang, 2021), as cleanlab's
``find_label_issues(filter_by="confident_learning")`` does it: each class j gets a threshold
t_j, the mean predicted probability of j over the photos labelled j; a photo labelled i is
*confidently* in class j when p_j >= t_j (the largest such p_j if several); photos confidently
in a class other than their label are the suspects, ranked by the probability of their given label
(least likely first). ``bench/suspect_labels.py`` checks the list against cleanlab's when
cleanlab is installed.

The probabilities must be out-of-fold: each photo predicted by a model that did not train on it.
For recipes on cached features (models/registry.CACHED_FEATURE_RECIPES) `out_of_fold_probs` fits a
multinomial logistic regression on the features K times (groups of near-duplicates kept in one
fold); `diycnn compare --folds` pools the real models' out-of-fold predictions instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.split import fold_assignment

SUSPECT_FOLDS = 5
L2 = 1e-2  # penalty on the standardised features' weights (bench/suspect_labels.py)
MAX_LISTED = 100
# How much better than always answering the largest class the out-of-fold predictions must be,
# (accuracy - majority share) / (1 - majority share), for a disagreement with a label to say
# something about the label rather than about a weak classifier; below it nothing is listed
# (bench/suspect_labels.py measures the lists on both sides of it, with and without injected noise).
SUSPECT_MIN_SKILL = 0.75


def skill(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, skill): skill is 0 for always answering the largest class, 1 for always right."""
    if not len(labels):
        return 0.0, 0.0
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    majority = float(np.bincount(labels).max() / len(labels))
    return accuracy, (accuracy - majority) / (1 - majority) if majority < 1 else 0.0


def _fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, L2-penalised, fitted to convergence with L-BFGS (float64)."""
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, classes: int, groups: list[int] | None = None,
                      folds: int = SUSPECT_FOLDS, seed: int = 0, l2: float = L2) -> np.ndarray:
    """(N, classes) probabilities, each photo's from a classifier fitted on the other folds
    (features standardised on those folds)."""
    folds = max(2, min(folds, int(np.bincount(labels, minlength=classes).max())))
    fold = fold_assignment(labels, groups, folds, seed)
    probs = np.zeros((len(labels), classes))
    x = features.astype(np.float64)
    for f in range(folds):
        test, train = fold == f, fold != f
        if not test.any() or not train.any():
            continue
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        w, b = _fit_softmax((x[train] - mean) / std, labels[train], classes, l2)
        logits = torch.from_numpy((x[test] - mean) / std) @ w + b
        probs[test] = torch.softmax(logits, dim=1).numpy()
    return probs


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the label issues, least likely given label first; the class each photo is
    confidently in, -1 for none). A photo the model's top prediction agrees with is never an issue."""
    n, k = probs.shape
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])
    above = probs >= thresholds - 1e-6
    confident = np.where(above.any(axis=1), np.where(above, probs, -1.0).argmax(axis=1), -1)
    issues = np.flatnonzero((confident >= 0) & (confident != labels) & (probs.argmax(axis=1) != labels))
    self_conf = probs[np.arange(n), labels]
    return issues[np.argsort(self_conf[issues], kind="stable")], confident


def suspect_labels(probs: np.ndarray, labels: np.ndarray, paths: list[str], class_names: list[str],
                   how: str, limit: int = MAX_LISTED, min_skill: float = SUSPECT_MIN_SKILL) -> dict[str, Any]:
    """The `suspect_labels` section of metrics.json: the suspects (at most `limit`), least likely
    first; none, with the reason, when the out-of-fold predictions are too weak to judge labels."""
    accuracy, score = skill(probs, labels)
    if score < min_skill:
        return {"checked": False, "too_weak": True, "out_of_fold_accuracy": round(accuracy, 4),
                "skill": round(score, 4), "photos": int(len(labels)), "count": 0, "items": [],
                "why": f"the model is too weak to judge labels (out-of-fold accuracy {accuracy:.0%}, "
                       f"{score:.2f} of the way from always answering the largest class to always right; "
                       f"{min_skill} is needed)"}
    order, confident = confident_learning(probs, labels)
    items = []
    for i in order[:limit]:
        j = int(confident[i])
        items.append({"path": paths[i], "label": class_names[labels[i]], "suggested": class_names[j],
                      "p_label": round(float(probs[i, labels[i]]), 4), "p_suggested": round(float(probs[i, j]), 4)})
    return {"checked": True, "method": "confident learning on out-of-fold predictions", "how": how,
            "out_of_fold_accuracy": round(accuracy, 4), "skill": round(score, 4), "photos": int(len(labels)),
            "count": int(len(order)),
            "items": items}
