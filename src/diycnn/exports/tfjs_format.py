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

from ..io import publish_dir
from ..models.face_weights import weights_root
from ..settings import TFJS_MODEL_FILE
from .keras_format import keras_config, keras_weights

TFJS_VERSION = "4.22.0"  # pinned with its dependencies by tfjs/package-lock.json beside this module
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


def layer_config(layer) -> dict[str, Any]:
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
        (folder / TFJS_MODEL_FILE).write_text(json.dumps(model), encoding="utf-8")
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
    layers = [layer_config(layer) for layer in spec.layers]
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
        files.add(layer.name, zip(WEIGHT_NAMES.get(kind, []), keras_weights(kind, module.body[layer.name])))
    topology = {"class_name": "Sequential", "config": {"name": spec.name, "layers": layers}}
    return files.write(folder, topology, generated_by, len(layers))


def checker_dir() -> Path:
    """Where `diycnn weights fetch` installs the TF.js packages that check exports: beside the face
    weights, in a folder named by the pinned version (the lockfile beside this module pins the rest)."""

    return weights_root() / f"tfjs-{TFJS_VERSION}"


NEEDED = ("tfjs-core", "tfjs-layers", "tfjs-backend-cpu")  # check.cjs runs on these
CHECKER = (*NEEDED, "tfjs-backend-wasm")  # what diycnn installs: WebAssembly runs the check ~10x faster


def _has_tfjs(modules: Path, names: tuple[str, ...] = NEEDED) -> bool:
    return all((modules / "@tensorflow" / name / "package.json").is_file() for name in names)


def find_tfjs() -> tuple[str, Path] | None:
    """(node executable, node_modules folder holding the TF.js packages), or None.

    Looked for where `diycnn weights fetch` installs them (checker_dir), then in
    DIYCNN_TFJS_MODULES (an optional node_modules folder of your own), then ./node_modules."""
    node = shutil.which("node")
    if node is None:
        return None
    for candidate in (checker_dir() / "node_modules", os.environ.get("DIYCNN_TFJS_MODULES"), "node_modules"):
        if candidate and _has_tfjs(Path(candidate)):
            return node, Path(candidate).resolve()
    return None


def tfjs_missing_message() -> str:
    """Why a TF.js export cannot be checked here, and how to make it checkable."""
    missing = ("Node.js (node) is not on the PATH" if shutil.which("node") is None
               else f"TensorFlow.js {TFJS_VERSION} is not installed in {checker_dir()}")
    return (f"{missing}, so the export could not be run in TensorFlow.js. To check it: install Node.js and npm, "
            "run 'diycnn weights fetch', then export again.")


def install_checker(timeout: float = 600) -> Path:
    """Install the pinned TF.js packages (npm ci from the lockfile shipped with diycnn, no install
    scripts) into checker_dir(); the folder appears whole or not at all.

    Raises:
        FileNotFoundError: npm is not installed.
        RuntimeError: npm failed (offline, registry refused); the message has npm's last words.
    """

    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed, so TensorFlow.js (for checking TF.js and Teachable Machine "
                                "exports) cannot be fetched; those exports are written unchecked.")
    dest = checker_dir()
    if _has_tfjs(dest / "node_modules", CHECKER):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(Path(__file__).with_name("tfjs") / name, tmp / name)
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode or not _has_tfjs(tmp / "node_modules", CHECKER):
            raise RuntimeError(f"npm ci of TensorFlow.js {TFJS_VERSION} failed: {done.stderr.strip()[-500:]}")
        publish_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def tfjs_predict(folder: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities from TensorFlow.js (Node.js; check.cjs picks the WebAssembly backend where it is
    installed, else the CPU one) for float32 inputs (N, H, W, 3);
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


__all__ = ["write_tfjs", "WeightFiles", "tm_pixels_layer", "tfjs_predict", "find_tfjs", "install_checker", "checker_dir", "TFJS_VERSION"]
