"""Does a diycnn Keras export predict the same under Keras' TensorFlow backend?

Usage (from the project root):
    .venv/bin/python bench/keras_export_tf.py [--epochs 3] [--keras-python PATH]

Trains seed-cnn (the blog's model) and seed-cnn-plus (BatchNormalization + global pooling)
briefly on $DIYCNN_DATASETS/hymenoptera (so the weights are not the initial ones), exports
each with `diycnn.export(run, "keras")`, then loads `model.keras` in a separate Python that has
TensorFlow and Keras 3 (the speed benchmark's virtualenv, ~/.cache/diycnn/bench-keras, set up
on first use; --keras-python to use another), with KERAS_BACKEND=tensorflow, predicts the
held-out photos there and prints the largest difference from diycnn's own fp32 probabilities.
The test suite checks the same export on Keras' torch backend; TensorFlow is too large for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from keras_speed import SHARED, keras_python  # noqa: E402

TF_SIDE = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras, tensorflow as tf
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
probs = np.asarray(model.predict(x, batch_size=16, verbose=0))
np.save(sys.argv[3], probs)
print(json.dumps({"keras": keras.__version__, "tensorflow": tf.__version__, "backend": keras.backend.backend()}))
"""


def tf_predict(python: str, model: Path, x: np.ndarray, work: Path) -> dict:
    np.save(work / "x.npy", x)
    out = subprocess.run([python, "-c", TF_SIDE, str(model), str(work / "x.npy"), str(work / "tf.npy")],
                         capture_output=True, text=True)
    if out.returncode:
        print(f"{model}: the TensorFlow side failed:\n{out.stderr[-2000:]}")
        sys.exit(1)
    return {"probs": np.load(work / "tf.npy"), "versions": json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default="seed-cnn,seed-cnn-plus")
    parser.add_argument("--keras-python", default=None)
    args = parser.parse_args()
    python = keras_python(args)
    if python is None:
        sys.exit(0)
    import diycnn
    from diycnn.data.loader import decode_all

    work = Path(tempfile.mkdtemp(prefix="diycnn-keras-tf-"))
    os.environ.setdefault("DIYCNN_CACHE", str(work / "cache"))
    data = SHARED / "hymenoptera"
    for model in args.models.split(","):
        run = diycnn.train(data, model=model, epochs=args.epochs, out=work / model, val_as_test=True,
                           precision="fp32", seed=0)
        export = diycnn.export(run.dir, "keras", out=work / f"{model}-keras")
        split = json.loads((run.dir / "split.json").read_text(encoding="utf-8"))
        files = [data / p for c in split["class_names"] for p in split["splits"]["test"].get(c, [])]
        images, ok, _ = decode_all(files, run.preprocessing)
        loaded = diycnn.load(run.dir, device="cpu")
        loaded.precision = "fp32"  # diycnn's own prediction path, in fp32
        ours = np.array([[p["probabilities"][c] for c in loaded.class_names]
                         for p in loaded.predict([files[i] for i in ok])])
        x = images.astype(np.float32) * run.preprocessing.input_scale
        theirs = tf_predict(python, export / "model.keras", x, work)
        versions = theirs.pop("versions")
        theirs = theirs["probs"]
        if loaded.tta:  # the Keras model is the bare spec; export.json says to average with the mirror image
            theirs = (theirs + tf_predict(python, export / "model.keras", x[:, :, ::-1].copy(), work)["probs"]) / 2
        diff = float(np.abs(theirs - ours).max())
        same = int((theirs.argmax(1) == ours.argmax(1)).sum())
        print(f"{model}: {len(x)} held-out photos, Keras {versions['keras']} on TensorFlow {versions['tensorflow']} "
              f"({versions['backend']} backend) vs diycnn fp32: max |probability difference| {diff:.2e}, "
              f"same predicted class for {same}/{len(x)} (diycnn's probabilities of class 0 span "
              f"{ours[:, 0].min():.3f}–{ours[:, 0].max():.3f})")


if __name__ == "__main__":
    main()
