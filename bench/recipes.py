"""Accuracy of diycnn's recipes side by side on the shared datasets (seeded, same split for all).

Usage (from the project root):
    .venv/bin/python bench/recipes.py hymenoptera --models tm,finetune
    .venv/bin/python bench/recipes.py cats_and_dogs --models tm,finetune
    .venv/bin/python bench/recipes.py kpop_idols --models seed-cnn,seed-cnn-plus,tm,finetune

Datasets with train/ and val(idation)/ folders are measured as published results are:
train on train/, test on val/ (val for model selection is carved from train/). kpop_idols'
validation images are all copies of training images, so its test split is carved from the
de-duplicated train/. Every model uses one split.json. Outputs go to a temporary folder
(or --out), never next to the data. Prints a table: test accuracy (95% CI), test loss,
best val loss, epochs, training time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import diycnn
from diycnn.data.scan import scan_folder
from diycnn.data.split import make_split
from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", help="folder name under $DIYCNN_DATASETS")
    parser.add_argument("--models", default="tm,finetune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", action="append", default=[], help="extra setting KEY=VALUE (JSON value)")
    args = parser.parse_args()
    data = SHARED / args.dataset
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    out = Path(args.out or tempfile.mkdtemp(prefix="diycnn-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_folder(data)
    has_val = any(r.given_split == "val" for r in scan.records)
    split = make_split(scan, seed=args.seed, val_as_test=has_val)
    (out / "split.json").write_text(json.dumps(split.to_dict()))
    counts = split.counts()
    print(f"{args.dataset}: train/val/test = " + "/".join(str(sum(counts[s].values())) for s in ("train", "val", "test")))
    rows = []
    for model in args.models.split(","):
        t0 = time.perf_counter()
        run = diycnn.train(data, model=model, out=out / model, split=out / "split.json", seed=args.seed, **extra)
        wall = time.perf_counter() - t0
        m = run.metrics
        rows.append((model, m["test_accuracy"], *m["test_accuracy_ci95"], m["test_loss"], m["best_val_loss"],
                     m["epochs_run"], wall))
        print(f"  {model:<14} acc {m['test_accuracy']:.4f} ({m['test_accuracy_ci95'][0]:.3f}-"
              f"{m['test_accuracy_ci95'][1]:.3f})  loss {m['test_loss']:.4f}  best val loss {m['best_val_loss']:.4f}  "
              f"epochs {m['epochs_run']}  {wall:.0f} s", flush=True)
    print("\n| model | test accuracy (95% CI) | test loss | best val loss | epochs | wall time |\n|---|---|---|---|---|---|")
    for model, acc, lo, hi, loss, vloss, epochs, wall in rows:
        print(f"| {model} | {acc:.3f} ({lo:.3f}–{hi:.3f}) | {loss:.4f} | {vloss:.4f} | {epochs} | {wall:.0f} s |")
    print(f"\nRuns in {out}")


if __name__ == "__main__":
    main()
