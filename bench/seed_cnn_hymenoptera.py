"""Train the blog's seed-cnn on ../shared/datasets/hymenoptera and print accuracy and speed.

Usage (from the project root):
    .venv/bin/python bench/seed_cnn_hymenoptera.py [--epochs 30] [--precision auto]

The dataset's own val/ folder is kept as the validation split; diycnn carves a stratified
15% test split from train/ (seeded). Prints test accuracy with its 95% CI, test loss,
training images/second and wall time. Outputs go to a temporary folder, never next to the data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import diycnn

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = diycnn.train(DATA, model="seed-cnn", out=Path(tmp) / "run", epochs=args.epochs,
                           precision=args.precision, seed=args.seed)
        wall = time.perf_counter() - t0
        m = run.metrics
        lo, hi = m["test_accuracy_ci95"]
        print(f"seed-cnn on hymenoptera ({args.epochs} epochs, {m['precision']}, seed {args.seed})")
        print(f"  photos train/val/test: {m['counts']['train']}/{m['counts']['val']}/{m['counts']['test']}")
        print(f"  test accuracy {m['test_accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), test loss {m['test_loss']:.4f}")
        print(f"  final val accuracy {m['final_val_accuracy']:.3f}, val loss {m['final_val_loss']:.4f}")
        print(f"  training {m['train_images_per_second']:.1f} images/s; wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
