"""fp32 training of the blog's model with diycnn's CPU fast paths on and off, on this CPU.

Usage (from the project root):
    .venv/bin/python bench/fast_conv_paths.py [--batch 32] [--steps 5]

`models/fast_conv.py` replaces two parts of an fp32 training step on CPUs: the second
convolution's weight gradient (batched matrix products, PyTorch's matmul) and the first block
(convolution, 2x2 max-pool, ReLU as four stride-2 convolutions). Whether each pays depends on
the CPU: which of PyTorch's matmul (MKL) and oneDNN's convolutions uses the wider vectors. Each
variant runs in a fresh process on random photos (speed does not depend on their content), one
warm-up step excluded; prints training images/s per variant and the CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from keras_speed import cpu_description  # noqa: E402 (beside this file)

VARIANTS = {"as shipped": "", "oneDNN weight gradient": "wgrad", "unfused first block": "fused",
            "neither": "wgrad,fused"}

CHILD = r'''
import os, sys, time
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLI trains
import numpy as np, torch
from diycnn.models import fast_conv
off, batch, steps = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
if "wgrad" in off:
    fast_conv.applies = lambda conv, x: False
if "fused" in off:
    fast_conv.pool_applies = lambda conv, pool, x: False
from diycnn.data.augment import image_input_fn
from diycnn.data.loader import ArrayBatches
from diycnn.models.recipes import get_recipe
from diycnn.training.trainer import FitConfig, Trainer
recipe = get_recipe("seed-cnn", 2)
x = np.random.default_rng(0).integers(0, 255, (batch * (steps + 1), 100, 100, 3), dtype=np.uint8)
data = ArrayBatches(x, np.arange(len(x)) % 2, batch)
trainer = Trainer(recipe.build(seed=0), data, data, image_input_fn(recipe.preprocessing),
                  FitConfig(epochs=1, lr=1e-3, patience=None, seed=0), torch.device("cpu"), "fp32")
trainer.module.train()
batches = list(data.iterate())
trainer._train_step(*batches[0])
t = time.perf_counter()
for b in batches[1:]:
    trainer._train_step(*b)
print(batch * steps / (time.perf_counter() - t))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    print(f"CPU: {cpu_description()}; the blog's model, fp32 training, batch {args.batch}, {args.steps} steps")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    for name, off in VARIANTS.items():
        out = subprocess.run([sys.executable, "-c", CHILD, off, str(args.batch), str(args.steps)], env=env,
                             capture_output=True, text=True, check=True)
        print(f"  {name:<24} {float(out.stdout.strip().splitlines()[-1]):6.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
