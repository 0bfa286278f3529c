"""One training run for bench/keras_parity.py, in a fresh process (no state shared between runs).

    python bench/parity_worker.py diycnn|keras DATA.npz --precision bf16|fp32 --seed S --epochs 30 \
        [--keras-decodes PHOTOS.json]

DATA.npz holds x_train, y_train, x_test, y_test: uint8 (N, 100, 100, 3) photos decoded by diycnn.
Both engines train the blog's model on them with the blog's settings (Adam at 1e-3, batch 32,
reshuffled every epoch, no early stopping) and score the test photos after every epoch. With
--keras-decodes, the Keras side ignores the arrays and decodes the listed photos itself, as
`keras.utils.image_dataset_from_directory` does (TensorFlow's decoder, bilinear resize without
antialiasing, squashed to 100x100), so a difference in decoding shows apart from one in training.

Prints one JSON line: per epoch, training loss and accuracy (running means over the epoch, with
dropout, as both engines report them) and test loss and accuracy.

    python bench/parity_worker.py gradients-diycnn|gradients-keras DATA.npz --grads GRADS.npz

One step's gradients, without dropout, on 32 training photos spread over the classes: diycnn's side builds the
model (seed 0) and writes its weights, the float64 gradient and its own fp32 and bf16 gradients to
GRADS.npz; Keras' side loads those weights and adds its float32 and mixed_bfloat16 gradients.
Prints one JSON line: each side's relative error against float64, per parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def run_diycnn(d, args) -> dict:
    import torch

    from diycnn.data.augment import image_input_fn
    from diycnn.data.loader import ArrayBatches
    from diycnn.models.recipes import get_recipe
    from diycnn.training.trainer import FitConfig, Trainer

    recipe = get_recipe("seed-cnn", int(d["y_train"].max()) + 1)
    plan = {**recipe.defaults, "epochs": args.epochs, "seed": args.seed}
    config = FitConfig.from_training(plan)
    # as `diycnn train --model seed-cnn --seed S` builds and feeds it (pipeline.py)
    module = recipe.build(seed=args.seed)
    train = ArrayBatches(d["x_train"], d["y_train"], plan["batch_size"], shuffle=config.shuffle, seed=args.seed)
    test = ArrayBatches(d["x_test"], d["y_test"], plan["batch_size"])  # scored each epoch; selects nothing
    trainer = Trainer(module, train, test, image_input_fn(recipe.preprocessing), config, torch.device("cpu"),
                      args.precision)
    state, _ = trainer.fit()
    return {"curves": [{"loss": h["loss"], "accuracy": h["accuracy"], "test_loss": h["val_loss"],
                        "test_accuracy": h["val_accuracy"]} for h in state.history],
            "versions": {"torch": torch.__version__}}


def keras_decode(photos: list[str]):
    """Photos the way image_dataset_from_directory reads them: decode, bilinear resize, no antialias."""
    import tensorflow as tf

    out = []
    for path in photos:
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        out.append(tf.image.resize(img, (100, 100), method="bilinear").numpy())
    return np.stack(out).astype("float32")


LAYERS = ("conv2d", "conv2d_1", "dense", "dense_1", "dense_2", "dense_3")  # diycnn's names, Keras' order


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def gradients_diycnn(d, args) -> dict:
    import copy

    import torch
    import torch.nn.functional as F

    from diycnn.data.augment import image_input_fn
    from diycnn.models.recipes import get_recipe

    recipe = get_recipe("seed-cnn", int(d["y_train"].max()) + 1)
    module = recipe.build(seed=0).to(memory_format=torch.channels_last).eval()  # eval: no dropout masks
    pick = np.linspace(0, len(d["y_train"]) - 1, min(32, len(d["y_train"]))).astype(int)  # every class
    x = image_input_fn(recipe.preprocessing)(torch.from_numpy(d["x_train"][pick]), False)
    y = torch.from_numpy(d["y_train"][pick])

    def grads(model, xx, precision):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(xx)
        F.cross_entropy(logits.double() if precision == "fp64" else logits.float(), y).backward()
        return {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters()}

    def grads_in_bf16(model, kinds):  # only the layers of these Keras types in bf16, the rest fp32
        model.zero_grad()
        h = x
        for layer in model.body.values():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=type(layer).__name__ in kinds):
                h = layer(h.float())
        F.cross_entropy(h.float(), y).backward()
        return {n: p.grad.detach().double().numpy().copy() for n, p in model.named_parameters()}

    double = copy.deepcopy(module).double()
    ref = grads(double, x.double(), "fp64")
    out = {"x": d["x_train"][pick], "y": d["y_train"][pick]}
    out.update({f"weight/{n}": p.detach().numpy() for n, p in module.named_parameters()})
    out.update({f"fp64/{n}": g for n, g in ref.items()})
    errors = {}
    for precision in ("fp32", "bf16"):
        g = grads(module, x, precision)
        errors[precision] = {n: _relative(g[n], ref[n]) for n in ref}
    for part, kinds in (("bf16 convolutions only", {"KConv2d"}), ("bf16 dense layers only", {"KLinear"})):
        g = grads_in_bf16(module, kinds)
        errors[part] = {n: _relative(g[n], ref[n]) for n in ref}
    # how much of the per-photo gradients survives their mean (float64, the second convolution)
    weight = double.body["conv2d_1"].weight
    per_photo = []
    for i in range(len(y)):
        double.zero_grad()
        F.cross_entropy(double(x[i:i + 1].double()), y[i:i + 1]).backward()
        per_photo.append(weight.grad.detach().clone())
    kept = float(torch.stack(per_photo).mean(0).norm() / torch.stack([g.norm() for g in per_photo]).mean())
    np.savez(args.grads, **out)
    return {"errors": errors, "mean_over_per_photo_norm": kept}


def gradients_keras(d, args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    g = dict(np.load(args.grads))
    errors = {}
    for policy, precision in (("float32", "fp32"), ("mixed_bfloat16", "bf16")):
        keras.mixed_precision.set_global_policy(policy)
        model = blog_model(keras, len(g["weight/body.dense_3.bias"]))
        weights = []
        for name in LAYERS:  # torch (out, in, kh, kw) / (out, in) -> Keras (kh, kw, in, out) / (in, out)
            w = g[f"weight/body.{name}.weight"]
            weights += [w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T, g[f"weight/body.{name}.bias"]]
        model.set_weights(weights)
        with tf.GradientTape() as tape:
            probs = tf.cast(model(tf.constant(g["x"].astype("float32")), training=False), "float32")
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(tf.constant(g["y"]), probs))
        grads = [v.numpy().astype("float64") for v in tape.gradient(loss, model.trainable_variables)]
        errors[precision] = {}
        for i, name in enumerate(LAYERS):
            w, b = grads[2 * i], grads[2 * i + 1]
            w = w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T
            errors[precision][f"body.{name}.weight"] = _relative(w, g[f"fp64/body.{name}.weight"])
            errors[precision][f"body.{name}.bias"] = _relative(b, g[f"fp64/body.{name}.bias"])
    return {"errors": errors}


def blog_model(keras, n: int):
    """The blog's layers (Rescaling first: the photos arrive as 0-255 values, as diycnn's do)."""
    return keras.Sequential([
        keras.Input((100, 100, 3)),
        keras.layers.Rescaling(1 / 255),  # diycnn's input_scale
        keras.layers.Conv2D(512, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(256, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.5),
        # under mixed_bfloat16 Keras' guide keeps the output layer in float32
        keras.layers.Dense(n, activation="softmax", dtype="float32"),
    ])


def run_keras(d, args) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(args.seed)
    model = blog_model(keras, int(d["y_train"].max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if args.keras_decodes:
        with open(args.keras_decodes, encoding="utf-8") as fh:
            photos = json.load(fh)
        x_train, x_test = keras_decode(photos["train"]), keras_decode(photos["test"])
    else:
        x_train, x_test = d["x_train"].astype("float32"), d["x_test"].astype("float32")
    h = model.fit(x_train, d["y_train"], batch_size=32, epochs=args.epochs, shuffle=True, verbose=0,
                  validation_data=(x_test, d["y_test"]))
    hist = h.history
    return {"curves": [{"loss": hist["loss"][e], "accuracy": hist["accuracy"][e], "test_loss": hist["val_loss"][e],
                        "test_accuracy": hist["val_accuracy"][e]} for e in range(args.epochs)],
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=["diycnn", "keras", "gradients-diycnn", "gradients-keras"])
    p.add_argument("data")
    p.add_argument("--precision", default="fp32", choices=["bf16", "fp32"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--keras-decodes", default=None, metavar="PHOTOS.json")
    p.add_argument("--grads", default=None, metavar="GRADS.npz")
    args = p.parse_args()
    with np.load(args.data) as npz:
        d = {k: npz[k] for k in npz.files}
    runs = {"diycnn": run_diycnn, "keras": run_keras, "gradients-diycnn": gradients_diycnn,
            "gradients-keras": gradients_keras}
    result = runs[args.engine](d, args)
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
