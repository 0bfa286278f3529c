"""An accuracy you can trust on a small dataset: K-fold cross-validation over all photos.

With 15 photos a class, a 15% test split holds 4 or 5 photos, and "50% on 4 photos" says almost
nothing (its 95% interval runs from 15% to 85%). Below `CV_BELOW` test photos, runs on cached
features (the registry's CACHED_FEATURE_RECIPES) therefore also estimate accuracy by K-fold
cross-validation: every photo is held out exactly once, predicted by the recipe's own head
trained, exactly as the final one is, on the other folds (validation carved from them; groups of
near-duplicates kept in one fold). The pooled out-of-fold predictions give the accuracy, its 95%
Wilson interval and the loss over *all* photos. The final model is still trained on the usual
split. On cached features this costs K head trainings of a few seconds; recipes that train the
whole network would cost K full trainings, so they are pointed to `diycnn compare --folds`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch

from ..data.loader import ArrayBatches
from ..data.split import kfold_splits
from ..evaluation.metrics import classification_metrics
from ..models.registry import listing
from .trainer import FitConfig, Trainer, predict_logits, probs_of_logits

log = logging.getLogger(__name__)
CV_BELOW = 30  # test photos: below this, the test split alone is too small to trust
CV_FOLDS = 5


def plan(setting: bool | None, test_photos: int, mode: str, distributed: bool) -> tuple[bool, str]:
    """(run it, why or why not) for the `cross_validate` setting (None: automatic)."""
    if setting is False:
        return False, "turned off (--cv off)"
    if distributed:
        return False, "not run under torchrun"
    if mode != "features":
        why = (f"needs a recipe on cached features ({listing()}): for a recipe that trains the whole network it "
               f"would cost {CV_FOLDS} more trainings; use diycnn compare --folds {CV_FOLDS}")
        return False, why
    if setting is None and test_photos >= CV_BELOW:
        return False, f"the test split has {test_photos} photos (cross-validation runs below {CV_BELOW})"
    if setting is None:
        return True, f"the test split has only {test_photos} photo{'' if test_photos == 1 else 's'} (fewer than {CV_BELOW})"
    return True, "asked for with --cv on"


def fold_count(scan) -> int:
    """At most CV_FOLDS, so that each fold still has a test, a validation and a training photo per class."""
    smallest = min(sum(r.label == c for r in scan.records) for c in scan.class_names)
    return min(CV_FOLDS, smallest - 2)


def cross_validate(scan, arrays: Callable, make_head: Callable[[], torch.nn.Module], to_input: Callable,
                   config: FitConfig, batch_size: int, device: torch.device, precision: str, seed: int,
                   why: str, stage: Callable[[str], None]) -> dict[str, Any]:
    """K-fold estimate of the recipe's accuracy on all of `scan`'s photos.

    arrays(split, name) -> (x, y, paths) of one split; make_head() -> a fresh, untrained head
    (the same initial weights as the final model's).
    """
    folds = fold_count(scan)
    if folds < 2:
        return {"checked": False, "why": "a class has fewer than 4 photos: too few to hold any out"}
    splits = kfold_splits(scan, folds, seed=seed)
    n = len(scan.records)
    log.info("Cross-validating, as %s: %d folds over all %d photos, the head trained %d times", why, folds, n, folds)
    logits, y, _, per_fold = out_of_fold(splits, arrays, make_head, to_input, config, batch_size, device, precision,
                                         seed)
    m = classification_metrics(probs_of_logits(logits), y, list(scan.class_names))
    return {"checked": True, "why": why, "folds": folds, "photos": len(y),
            "accuracy": m["accuracy"], "accuracy_ci95": m["accuracy_ci95"], "loss": m["loss"],
            "correct": m["correct"], "macro_f1": m["macro_f1"], "per_class": m["per_class"],
            "confusion_matrix": m["confusion_matrix"], "fold_accuracies": per_fold}


def out_of_fold(splits: list, arrays: Callable, make_head: Callable[[], torch.nn.Module], to_input: Callable,
                config: FitConfig, batch_size: int, device: torch.device, precision: str,
                seed: int) -> tuple[np.ndarray, np.ndarray, list[str], list[float]]:
    """Each fold's test photos predicted by a fresh head trained on that fold's other photos:
    (logits (1, N, C), labels, paths, each fold's accuracy), the folds' photos in turn."""
    logits_all, y_all, paths_all, per_fold = [], [], [], []
    for k, split in enumerate(splits):
        x_train, y_train, _ = arrays(split, "train")
        x_val, y_val, _ = arrays(split, "val")
        x_test, y_test, paths = arrays(split, "test")
        head = make_head()
        trainer = Trainer(head, ArrayBatches(x_train, y_train, batch_size, shuffle=config.shuffle, seed=seed),
                          ArrayBatches(x_val, y_val, batch_size), to_input, config, device, precision)
        trainer.fit()
        logits = predict_logits(trainer.module, ArrayBatches(x_test, y_test, batch_size), to_input, device, precision)
        per_fold.append(float((logits[0].argmax(1) == y_test).mean()))
        logits_all.append(logits)
        y_all.append(y_test)
        paths_all += paths
        log.info("fold %d/%d: %.1f%% of %d held-out photos", k + 1, len(splits), 100 * per_fold[-1], len(y_test))
    return np.concatenate(logits_all, axis=1), np.concatenate(y_all), paths_all, per_fold


def describe(section: dict[str, Any]) -> str:
    """'87.0% (95% CI 70.3-94.8%), 30 photos, 5 folds, loss 0.312'."""
    lo, hi = section["accuracy_ci95"]
    return (f"{section['accuracy']:.1%} (95% CI {100 * lo:.1f}-{hi:.1%}), {section['photos']} photos, "
            f"{section['folds']} folds, loss {section['loss']:.3f}")
