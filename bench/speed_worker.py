"""One measurement for bench/keras_speed.py, in a fresh process so peak RSS is the engine's own.

    python bench/speed_worker.py diycnn|keras DATA.npz --precision bf16|fp32 --batch 16 \
        --train-steps N --infer-batches M --warmup W

Prints one JSON line: train and inference images/s (warm-up excluded) and peak RSS in MB.
The Keras side builds the blog's model layer by layer (Keras 3 + TensorFlow); the diycnn side
runs diycnn's own training step and prediction loop on the `seed-cnn` recipe."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from parity_worker import blog_model  # beside this file


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def batches(x, y, batch, count, start=0):
    n = len(x) // batch
    for i in range(start, start + count):
        j = (i % n) * batch
        yield x[j:j + batch], y[j:j + batch]


def run_diycnn(x, y, args) -> dict:
    # as `diycnn train` and `diycnn predict` run: large tensors on 2 MB pages (cli.py sets this)
    if os.environ.get("DIYCNN_MALLOC") != "system":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    import torch

    from diycnn.data.augment import image_input_fn
    from diycnn.data.loader import ArrayBatches
    from diycnn.models.recipes import get_recipe
    from diycnn.training.device import resolve_device
    from diycnn.training.trainer import FitConfig, Trainer, predict_probs

    recipe = get_recipe("seed-cnn", int(y.max()) + 1)
    module = recipe.build(seed=0)
    device = resolve_device(args.device)
    to_input = image_input_fn(recipe.preprocessing)
    data = ArrayBatches(x, y, args.batch)
    cfg = FitConfig(epochs=1, lr=1e-3, patience=None, seed=0)
    trainer = Trainer(module, data, data, to_input, cfg, device, args.precision)
    trainer.module.train()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train(count, start):
        for xb, yb in batches(x, y, args.batch, count, start):
            trainer._train_step(torch.from_numpy(xb), torch.from_numpy(yb))
        sync()

    train(args.warmup, 0)
    t0 = time.perf_counter()
    train(args.train_steps, args.warmup)
    train_s = time.perf_counter() - t0
    train_rss = peak_rss_mb()
    infer_x = np.concatenate([b for b, _ in batches(x, y, args.batch, args.infer_batches)])
    warm = ArrayBatches(infer_x[: args.batch * 2], np.zeros(args.batch * 2), args.batch)
    predict_probs(trainer.module, warm, to_input, device, args.precision)
    timed = ArrayBatches(infer_x, np.zeros(len(infer_x)), args.batch)
    sync()
    t0 = time.perf_counter()
    predict_probs(trainer.module, timed, to_input, device, args.precision)
    sync()
    infer_s = time.perf_counter() - t0
    return {"train_ips": args.train_steps * args.batch / train_s, "infer_ips": len(infer_x) / infer_s,
            "train_peak_rss_mb": train_rss, "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_keras(x, y, args) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = blog_model(keras, int(y.max()) + 1)  # the same layers as bench/keras_parity.py trains
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    xf = x.astype("float32")  # Keras' usual input: a float array
    warm_x = np.concatenate([b for b, _ in batches(xf, y, args.batch, args.warmup)])
    warm_y = np.concatenate([b for _, b in batches(xf, y, args.batch, args.warmup)])
    model.fit(warm_x, warm_y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
    tx = np.concatenate([b for b, _ in batches(xf, y, args.batch, args.train_steps, args.warmup)])
    ty = np.concatenate([b for _, b in batches(xf, y, args.batch, args.train_steps, args.warmup)])
    t0 = time.perf_counter()
    model.fit(tx, ty, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
    train_s = time.perf_counter() - t0
    train_rss = peak_rss_mb()
    ix = np.concatenate([b for b, _ in batches(xf, y, args.batch, args.infer_batches)])
    model.predict(ix[: args.batch * 2], batch_size=args.batch, verbose=0)
    t0 = time.perf_counter()
    model.predict(ix, batch_size=args.batch, verbose=0)
    infer_s = time.perf_counter() - t0
    return {"train_ips": len(tx) / train_s, "infer_ips": len(ix) / infer_s, "train_peak_rss_mb": train_rss,
            "tensorflow": tf.__version__,
            "keras": keras.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=["diycnn", "keras"])
    p.add_argument("data")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--infer-batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    with np.load(args.data) as d:
        x, y = d["x"], d["y"]
    result = (run_diycnn if args.engine == "diycnn" else run_keras)(x, y, args)
    result.update(engine=args.engine, precision=args.precision, peak_rss_mb=peak_rss_mb())
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
