"""Suspect labels with injected label noise: how many moved photos does the list catch?

Usage (from the project root):
    .venv/bin/python bench/suspect_labels.py [--data $DIYCNN_DATASETS/kpop_idols=face-probe ...]
        [--noise 0.05] [--seed 0] [--l2 1e-3 1e-2 ...]

For each DATA=RECIPE: a copy of the folder layout made of symbolic links (in a temporary folder,
never next to the photos) in which a fraction `--noise` of the photos, chosen at random, are filed
under another class; the recipe's cached features of every photo (what a `diycnn train` run uses)
are computed once; then, as `train` does, 5-fold out-of-fold probabilities from a logistic
regression on them, and confident learning. Prints, per L2 strength: the moved photos caught in
the top-k of the list (k = number moved), in the whole list, and the list's length.

When the `cleanlab` package is importable, its `find_label_issues(filter_by="confident_learning",
return_indices_ranked_by="self_confidence")` is run on the same probabilities and the two lists
are compared (diycnn does not depend on cleanlab; `pip install cleanlab` to check).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)

DEFAULT = [f"{SHARED / 'kpop_idols'}=face-probe", f"{SHARED / 'kpop_idols'}=linear-probe",
           f"{SHARED / 'hymenoptera'}=linear-probe", f"{SHARED / 'cats_and_dogs'}=linear-probe"]


def noisy_tree(data: Path, out: Path, noise: float, seed: int) -> dict[str, str]:
    """Symlink every photo of `data` (class folders, or split folders pooled) into out/<class>/,
    moving a `noise` fraction to a random other class. Returns {moved rel path: true class}."""
    from diycnn.data.scan import scan_folder

    scan = scan_folder(data, near_duplicates=False)
    rng = np.random.default_rng(seed)
    moved_idx = set(rng.choice(len(scan.records), int(round(noise * len(scan.records))), replace=False).tolist())
    moved = {}
    for i, r in enumerate(scan.records):
        cls = r.label
        if i in moved_idx:
            others = [c for c in scan.class_names if c != cls]
            cls = others[int(rng.integers(len(others)))]
        name = r.rel.replace("/", "__")
        (out / cls).mkdir(parents=True, exist_ok=True)
        os.symlink(r.path, out / cls / name)
        if i in moved_idx:
            moved[f"{cls}/{name}"] = r.label
    return moved


def features_of(tree: Path, recipe_name: str):
    """(features, labels, rel paths, class names) the way `diycnn train` computes them."""
    from diycnn import pipeline
    from diycnn.data.scan import scan_folder
    from diycnn.models.recipes import get_recipe
    from diycnn.settings import TrainingPlan, TrainSettings
    from diycnn.training.device import resolve_device, resolve_precision

    scan = scan_folder(tree, near_duplicates=False)
    recipe = get_recipe(recipe_name, len(scan.class_names))
    training = TrainingPlan.merge(recipe.defaults, TrainSettings(model=recipe_name, seed=0, device="cpu"))
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device, training.cpu_precision)
    module = recipe.build(seed=0)
    pipeline._load_backbone_weights(module, recipe, training)
    data, scan = pipeline._decode_or_extract(recipe, scan, module, training, device, precision,
                                             lambda text: print("  " + text))
    labels = np.array([scan.class_names.index(r.label) for r in scan.records])
    return data.x, labels, [r.rel for r in scan.records], scan.class_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT, metavar="DATA=RECIPE")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.0],
                        help="fractions of photos moved; 0 measures the list on clean data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l2", type=float, nargs="+", default=None)
    args = parser.parse_args()

    from diycnn.evaluation.suspects import L2, SUSPECT_MIN_SKILL, confident_learning, out_of_fold_probs, skill

    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        find_label_issues = None
    for item in args.data:
        data, recipe = item.rsplit("=", 1)
        for noise in args.noise:
            with tempfile.TemporaryDirectory() as tmp:
                tree = Path(tmp) / "noisy"
                moved = noisy_tree(Path(data), tree, noise, args.seed)
                x, y, paths, names = features_of(tree, recipe)
            truth = {i for i, p in enumerate(paths) if p in moved}
            print(f"\n{Path(data).name} ({recipe}): {len(paths)} photos, {len(names)} classes, {len(truth)} moved "
                  f"({noise:.0%}), features {x.shape[1]}-d")
            for l2 in args.l2 or [L2]:
                start = time.perf_counter()
                probs = out_of_fold_probs(x, y, len(names), l2=l2)
                seconds = time.perf_counter() - start
                issues, _ = confident_learning(probs, y)
                top = set(issues[:len(truth)].tolist())
                found = set(issues.tolist())
                oof, score = skill(probs, y)
                listed = score >= SUSPECT_MIN_SKILL
                print(f"  l2 {l2:g}: out-of-fold accuracy vs the given labels {oof:.3f}, skill {score:.2f} "
                      f"({'listed' if listed else 'too weak: nothing listed'} at the {SUSPECT_MIN_SKILL} gate)")
                print(f"    the whole list: {len(found)} photos, {len(found & truth)} of them moved (precision "
                      f"{len(found & truth) / max(1, len(found)):.0%}); top-{len(truth)} catches {len(top & truth)}/"
                      f"{len(truth)}; {seconds:.1f} s")
                if find_label_issues is not None:
                    theirs = find_label_issues(y, probs, filter_by="confident_learning",
                                               return_indices_ranked_by="self_confidence")
                    print(f"    cleanlab confident_learning: {len(theirs)} issues, same list and order as diycnn: "
                          f"{list(theirs) == issues.tolist()}")
        if find_label_issues is None:
            print("  (cleanlab not installed: its list was not compared)")


if __name__ == "__main__":
    main()
