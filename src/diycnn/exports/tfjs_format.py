"""A Keras-style spec model as TensorFlow.js files: `model.json` (layers model) + `weights.bin`.

This is the format Teachable Machine's "TensorFlow.js" export hands out and
`tf.loadLayersModel('model.json')` reads in a browser or Node.js. It is written directly
(the topology is the spec's own Keras layer configuration, the weights little-endian float32
in the manifest's order), without TensorFlow or the `tensorflowjs` converter. Because nothing
in Python can run TensorFlow.js, the export is checked by running the files in TensorFlow.js
itself under Node.js (`check.cjs` beside this module), when Node.js and the TensorFlow.js
packages are found (see `find_tfjs`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .keras_format import _weights, keras_config

TFJS_PACKAGES = ("@tensorflow/tfjs-core@4.22.0", "@tensorflow/tfjs-layers@4.22.0", "@tensorflow/tfjs-backend-cpu@4.22.0")
# Keras activation names that TensorFlow.js layers know (diycnn name -> TF.js name).
TFJS_ACTIVATIONS = {"linear": "linear", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
                    "softmax": "softmax", "elu": "elu", "selu": "selu", "softplus": "softplus", "swish": "swish",
                    "silu": "swish", "gelu": "gelu"}
WEIGHT_NAMES = {"Conv2D": ["kernel", "bias"], "Dense": ["kernel", "bias"],
                "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"]}


def _activation(name: str, layer) -> str:
    if name not in TFJS_ACTIVATIONS:
        raise ValueError(f"{layer.label}: activation '{name}' has no TensorFlow.js equivalent here; TF.js export "
                         f"supports {', '.join(sorted(TFJS_ACTIVATIONS))}. Use ONNX for this model.")
    return TFJS_ACTIVATIONS[name]


def _layer_config(layer) -> dict[str, Any]:
    """The layer as model.json holds it: Keras' serialised config (keras_format.keras_config, with
    TF.js's activation names), trainable and float32."""
    config = keras_config(layer, _activation)
    config["config"].update(trainable=True, dtype="float32")
    return config


TM_PIXELS = "teachable_machine_pixels"  # the name of the input adapter layer of `tm` exports


class WeightFiles:
    """A layers model's weights as TF.js stores them: the manifest's entries (`specs`) and the
    little-endian float32 bytes of weights.bin, both in the order the layers are given."""

    def __init__(self):
        self.specs: list[dict[str, Any]] = []
        self.blobs: list[bytes] = []

    def add(self, layer: str, weights) -> None:
        """`weights`: (name, array) pairs of one layer, e.g. [("kernel", k), ("bias", b)]."""
        for name, array in weights:
            array = np.ascontiguousarray(array, dtype="<f4")
            self.specs.append({"name": f"{layer}/{name}", "shape": list(array.shape), "dtype": "float32"})
            self.blobs.append(array.tobytes())

    def write(self, folder: Path, topology: dict[str, Any], generated_by: str, layers: int) -> dict[str, Any]:
        """model.json (this topology and manifest) and weights.bin; the summary export.json keeps."""
        data = b"".join(self.blobs)
        model = {"format": "layers-model", "generatedBy": generated_by, "convertedBy": None,
                 "modelTopology": {**topology, "keras_version": "tfjs-layers 4.22.0", "backend": "tensor_flow.js"},
                 "weightsManifest": [{"paths": ["weights.bin"], "weights": self.specs}]}
        (folder / "model.json").write_text(json.dumps(model), encoding="utf-8")
        (folder / "weights.bin").write_bytes(data)
        return {"layers": layers, "weight_tensors": len(self.specs), "weight_bytes": len(data)}


def tm_pixels_layer(prep) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """(config, weights) of a fixed 1x1 depthwise convolution that turns pixels as Teachable
    Machine's library feeds them (p / 127 - 1) into the run's own normalisation
    ((p * input_scale - mean) / std), per channel: with p = 127 (x + 1), that is x * a + b where
    a = 127 s / std and b = (127 s - mean) / std."""
    s = float(prep.input_scale)
    std, mean = np.asarray(prep.std, dtype=np.float64), np.asarray(prep.mean, dtype=np.float64)
    config = {"name": TM_PIXELS, "trainable": False, "dtype": "float32", "kernel_size": [1, 1], "strides": [1, 1],
              "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "depth_multiplier": 1,
              "activation": "linear", "use_bias": True}
    return config, [("depthwise_kernel", (127 * s / std).astype(np.float32).reshape(1, 1, 3, 1)),
                    ("bias", ((127 * s - mean) / std).astype(np.float32))]


def write_tfjs(spec, module, folder: Path, generated_by: str, prep=None) -> dict[str, Any]:
    """Write model.json and weights.bin for `spec` with `module`'s weights; return the manifest
    summary (layers, weight tensors, bytes). A softmax is appended when the spec ends in logits.
    Given the run's preprocessing as `prep`, the model takes Teachable Machine's pixels instead
    (tm_pixels_layer first)."""
    layers = [_layer_config(layer) for layer in spec.layers]
    files = WeightFiles()
    if prep is not None:
        config, weights = tm_pixels_layer(prep)
        layers.insert(0, {"class_name": "DepthwiseConv2D", "config": config})
        files.add(TM_PIXELS, weights)
    layers[0]["config"]["batch_input_shape"] = [None, *spec.input_shape]
    if spec.output_activation == "linear":
        layers.append({"class_name": "Activation", "config": {"name": "probabilities", "trainable": True,
                                                              "dtype": "float32", "activation": "softmax"}})
    for layer in spec.layers:
        kind = type(layer).__name__
        files.add(layer.name, zip(WEIGHT_NAMES.get(kind, []), _weights(kind, module.body[layer.name])))
    topology = {"class_name": "Sequential", "config": {"name": spec.name, "layers": layers}}
    return files.write(folder, topology, generated_by, len(layers))


def find_tfjs() -> tuple[str, Path] | None:
    """(node executable, node_modules folder holding the TF.js packages), or None.

    Looked for in DIYCNN_TFJS_MODULES (a node_modules folder), then ./node_modules."""
    node = shutil.which("node")
    if node is None:
        return None
    for candidate in (os.environ.get("DIYCNN_TFJS_MODULES"), "node_modules"):
        if candidate and (Path(candidate) / "@tensorflow" / "tfjs-layers" / "package.json").is_file():
            return node, Path(candidate).resolve()
    return None


def tfjs_missing_message() -> str:
    where = os.environ.get("DIYCNN_TFJS_MODULES")
    missing = ("Node.js (node) is not on the PATH" if shutil.which("node") is None else
               f"the TensorFlow.js packages are not in {where!r} (DIYCNN_TFJS_MODULES) or ./node_modules" if where
               else "the TensorFlow.js packages are not in ./node_modules and DIYCNN_TFJS_MODULES is not set")
    return (f"TensorFlow.js export is checked by running it in TensorFlow.js under Node.js, but {missing}. "
            "Install Node.js, then in a folder: npm install " + " ".join(TFJS_PACKAGES)
            + " — and set DIYCNN_TFJS_MODULES to that folder's node_modules (or run diycnn from that folder).")


def tfjs_predict(folder: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities from TensorFlow.js (Node.js, CPU backend) for float32 inputs (N, H, W, 3);
    and the TF.js version. Raises ValueError when Node.js or TF.js is missing or fails."""
    found = find_tfjs()
    if found is None:
        raise ValueError(tfjs_missing_message())
    node, modules = found
    with tempfile.TemporaryDirectory(prefix="diycnn-tfjs-") as tmp:
        inp, out = Path(tmp) / "x.bin", Path(tmp) / "y.json"
        np.ascontiguousarray(x, dtype="<f4").tofile(inp)
        env = {**os.environ, "NODE_PATH": str(modules)}
        run = subprocess.run([node, str(Path(__file__).with_name("check.cjs")), str(folder), str(inp),
                              json.dumps(list(x.shape)), str(out)], capture_output=True, text=True, env=env)
        if run.returncode:
            raise ValueError(f"TensorFlow.js could not run the export: {run.stderr.strip()[-1500:]}")
        result = json.loads(out.read_text(encoding="utf-8"))
    return np.asarray(result["probabilities"], dtype=np.float32).reshape(len(x), -1), result["version"]


__all__ = ["write_tfjs", "WeightFiles", "tm_pixels_layer", "tfjs_predict", "find_tfjs", "TFJS_PACKAGES"]
