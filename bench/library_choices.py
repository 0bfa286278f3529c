"""diycnn's own code against the field's standard library for the same job, side by side: same
results? how fast? Each pair runs on the same inputs in this process; the verdict is printed.

    pip install scikit-learn cleanlab grad-cam    # not diycnn's dependencies: only this comparison's
    .venv/bin/python bench/library_choices.py

Pairs (diycnn's part -> the library):
  grouped stratified folds (data/split.fold_assignment) -> scikit-learn StratifiedGroupKFold
  the L2 softmax head of suspects and probes (evaluation/suspects._fit_softmax) -> LogisticRegression
  confident learning (evaluation/suspects.suspect_labels) -> cleanlab.filter.find_label_issues
  Grad-CAM (explanations.gradcam) -> pytorch-grad-cam's GradCAM
  warm-up + cosine (training/trainer.lr_factor) -> timm's CosineLRScheduler
  the eye alignment transform (the hand-written affine align_face used) -> scikit-image's SimilarityTransform
  (replaced: align_face now asks scikit-image)
  request validation (settings.TrainSettings.validate) -> pydantic (its import cost on the CLI's path)
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time

import numpy as np


def timed(fn, reps: int = 3):
    """(result, best seconds of `reps`)."""
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def line(name: str, same: str, ours: float, theirs: float, verdict: str) -> None:
    print(f"{name:<22} {same:<46} ours {ours * 1e3:8.1f} ms  library {theirs * 1e3:8.1f} ms  "
          f"({theirs / ours if ours else float('nan'):.2f}x)  -> {verdict}")


def data(seed: int = 0, classes: int = 15, per_class: int = 24, dim: int = 128, flipped: float = 0.05):
    """Gaussian class clusters (face-descriptor-like), groups of near-duplicates, a few labels moved."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y_true = np.repeat(np.arange(classes), per_class)
    x = centres[y_true] * 0.35 + rng.normal(size=(len(y_true), dim))
    y = y_true.copy()
    moved = rng.choice(len(y), int(flipped * len(y)), replace=False)
    y[moved] = (y[moved] + rng.integers(1, classes, len(moved))) % classes
    groups = np.arange(len(y))
    pairs = np.flatnonzero(np.arange(len(y)) % per_class % 6 == 1)  # in each class, every 6th photo and the
    groups[pairs] = pairs - 1  # one before it are one shot (near-duplicates, in one class as scans find them)
    return x.astype(np.float32), y, groups.tolist(), set(moved.tolist())


def folds_pair() -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    from diycnn.data.split import fold_assignment

    _, y, groups, _ = data()
    ours, t_ours = timed(lambda: fold_assignment(y, groups, 5, seed=0))

    def theirs_fn():
        out = np.zeros(len(y), dtype=np.int64)
        for f, (_, test) in enumerate(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, groups)):
            out[test] = f
        return out
    theirs, t_theirs = timed(theirs_fn)

    def spread(fold):  # the largest gap between a class's photos in a fold and the even share
        return max(abs(np.sum((fold == f) & (y == c)) - np.sum(y == c) / 5) for f in range(5) for c in np.unique(y))
    def total(fold):  # the largest gap between a fold's photos and the even share
        return max(abs(np.sum(fold == f) - len(y) / 5) for f in range(5))
    # groups within a class stay in one fold with both (a group across classes is a label conflict: left out)
    same = [k for k in set(groups) if len({int(y[i]) for i, g in enumerate(groups) if g == k}) == 1]
    intact = all(len({int(f) for f, g in zip(fold, groups) if g == k}) == 1 for fold in (ours, theirs) for k in same)
    print("  (ours: its import is free; scikit-learn's model_selection takes ~1.5 s to import)")
    line("grouped folds", f"groups intact {intact}; spread class {spread(ours):.1f}/{spread(theirs):.1f}, "
         f"fold {total(ours):.1f}/{total(theirs):.1f}", t_ours, t_theirs,
         "keep ours: as even; scikit-learn would add ~1.5 s of import to every run that lists suspect labels"
         if spread(ours) <= spread(theirs) + 0.25 and total(ours) <= total(theirs) + 1 else "replace: scikit-learn "
         "is more even")


def softmax_pair() -> None:
    from sklearn.linear_model import LogisticRegression

    from diycnn.evaluation.suspects import L2, _fit_softmax

    x, y, _, _ = data()
    x = (x - x.mean(0)) / x.std(0)
    classes = int(y.max()) + 1

    def ours_fn():
        w, b = _fit_softmax(x, y, classes, L2)
        logits = x.astype(np.float64) @ w.numpy() + b.numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)
    ours, t_ours = timed(ours_fn)
    # the same objective: mean cross-entropy + L2 * |w|^2  ==  (C * sum CE + |w|^2 / 2) / (C n) with C = 1/(2 L2 n)
    model = LogisticRegression(C=1.0 / (2 * L2 * len(y)), max_iter=1000, tol=1e-8)
    theirs, t_theirs = timed(lambda: model.fit(x, y).predict_proba(x))
    diff = float(np.abs(ours - theirs).max())
    line("softmax head", f"max probability difference {diff:.1e}", t_ours, t_theirs,
         "keep ours: same fit, no scikit-learn; torch is loaded anyway" if diff < 1e-3 else "differs: look")


def cleanlab_pair() -> None:
    from cleanlab.filter import find_label_issues

    from diycnn.evaluation.suspects import out_of_fold_probs, suspect_labels

    x, y, groups, moved = data()
    probs = out_of_fold_probs(x, y, int(y.max()) + 1, groups)
    paths = [f"c{c}/{i}.jpg" for i, c in enumerate(y)]
    names = [f"c{c}" for c in range(int(y.max()) + 1)]
    ours, t_ours = timed(lambda: suspect_labels(probs, y, paths, names, how="bench", min_skill=0.0))
    theirs, t_theirs = timed(lambda: find_label_issues(y, probs, filter_by="confident_learning",
                                                       return_indices_ranked_by="self_confidence"))
    mine = {paths.index(item["path"]) for item in ours.get("items", [])}
    found = set(int(i) for i in theirs)
    line("confident learning", f"same list {mine == found} ({len(mine)} vs {len(found)}; {len(moved)} moved)",
         t_ours, t_theirs, "keep ours: equal lists, no cleanlab (which brings pandas)" if mine == found
         else "differs: look")


def gradcam_pair() -> None:
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from diycnn.explanations import _target_layer, gradcam
    from diycnn.models.recipes import get_recipe

    recipe = get_recipe("seed-cnn-plus", 2)
    module = recipe.build(seed=0).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(8, 112, 112, 3), dtype=np.uint8)
    ours, t_ours = timed(lambda: gradcam(module, recipe.preprocessing, images))
    x = recipe.preprocessing.normalise(torch.from_numpy(images))
    layer = module.get_submodule(_target_layer(module, x))
    targets = [ClassifierOutputTarget(int(c)) for c in ours["classes"]]

    def theirs_fn():
        with GradCAM(model=module, target_layers=[layer]) as cam:
            return cam(input_tensor=x, targets=targets)
    theirs, t_theirs = timed(theirs_fn)
    a = ours["cams"].reshape(len(images), -1)
    b = theirs.reshape(len(images), -1)
    corr = min(float(np.corrcoef(a[i], b[i])[0, 1]) for i in range(len(images)) if a[i].std() and b[i].std())
    line("Grad-CAM", f"lowest per-photo correlation {corr:.3f}", t_ours, t_theirs,
         "keep ours: the same maps; it also averages mirrored passes (TTA, the face network), "
         "which pytorch-grad-cam does not")


def schedule_pair() -> None:
    import torch
    from timm.scheduler import CosineLRScheduler

    from diycnn.training.trainer import FitConfig, lr_factor

    cfg = FitConfig(epochs=15, lr=1.0, patience=None, seed=0, schedule="cosine", warmup_epochs=1)
    per_epoch, total = 8, 15 * 8
    ours, t_ours = timed(lambda: [lr_factor(cfg, s, per_epoch) for s in range(total)])

    def theirs_fn():
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = CosineLRScheduler(opt, t_initial=total - per_epoch, lr_min=0.01, warmup_t=per_epoch,
                                  warmup_lr_init=1.0 / per_epoch, warmup_prefix=True, t_in_epochs=False)
        out = []
        for s in range(total):
            sched.step_update(s)
            out.append(opt.param_groups[0]["lr"])
        return out
    theirs, t_theirs = timed(theirs_fn)
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    line("warm-up + cosine", f"largest difference in the rate factor {diff:.3f}", t_ours, t_theirs,
         "keep ours: six lines, per-step warm-up reaching the base rate at its last step (timm's ends one "
         "step short)" if diff > 1e-6 else "same: either")


def alignment_pair() -> None:
    from skimage.transform import SimilarityTransform

    from diycnn.data.align import EYES

    size, left, right = 150, np.array([61.0, 80.0]), np.array([103.0, 86.0])

    def ours_fn():  # the hand-written affine align_face used, output pixel -> photo pixel
        dx, dy = right - left
        dist, angle = math.hypot(dx, dy), math.atan2(dy, dx)
        lx, rx, ey = EYES
        scale = (rx - lx) * size / dist
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        u0, v0 = lx * size, ey * size
        a, b, d, e = cos, -sin, sin, cos
        return np.array([[a, b, left[0] - a * u0 - b * v0], [d, e, left[1] - d * u0 - e * v0]])
    ours, t_ours = timed(ours_fn, reps=200)
    lx, rx, ey = EYES
    dst = np.array([[lx * size, ey * size], [rx * size, ey * size]])

    def theirs_fn():
        return SimilarityTransform.from_estimate(dst, np.stack([left, right])).params[:2]
    try:
        theirs, t_theirs = timed(theirs_fn, reps=200)
    except AttributeError:  # scikit-image before 0.26
        def theirs_fn():
            t = SimilarityTransform()
            t.estimate(dst, np.stack([left, right]))
            return t.params[:2]
        theirs, t_theirs = timed(theirs_fn, reps=200)
    diff = float(np.abs(ours - theirs).max())
    line("eye alignment", f"largest matrix difference {diff:.1e}", t_ours, t_theirs,
         "replaced: scikit-image (already a dependency) gives the same transform" if diff < 1e-9 else "differs")


def pydantic_pair() -> None:
    def imported(code: str) -> float:
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
        last = [ln for ln in out.stderr.splitlines() if "import time:" in ln][-1]
        return int(last.split("|")[1]) / 1e6
    ours = imported("import diycnn.settings")
    theirs = imported("import pydantic; pydantic.BaseModel")
    print(f"{'request validation':<22} import: diycnn.settings {ours * 1e3:.0f} ms, pydantic {theirs * 1e3:.0f} ms more "
          "on every command's path if settings used it -> keep TrainSettings (one set of rules for the CLI, the API "
          "and the app, whose page errors name the field and the fix); the app's answers are pydantic models")


def main() -> int:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"{cpu}, {os.cpu_count()} cores; best of 3 runs each (200 for the alignment)")
    for pair in (folds_pair, softmax_pair, cleanlab_pair, gradcam_pair, schedule_pair, alignment_pair, pydantic_pair):
        try:
            pair()
        except ImportError as exc:
            print(f"{pair.__name__:<22} skipped: {exc} (pip install scikit-learn cleanlab grad-cam)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
