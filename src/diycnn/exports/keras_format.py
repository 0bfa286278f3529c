"""Carry a Keras-style spec model back to Keras 3: the same layers, names and weights, as a `.keras` file.

Keras is optional (`pip install 'diycnn[keras]'`). The file is backend-independent; when no
backend is configured and TensorFlow is not installed, Keras runs on torch here.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..models.layers import same_pad

KERAS_ACTIVATIONS = {"swish": "silu"}  # diycnn name -> Keras name where they differ


def import_keras():
    """Import Keras 3, choosing the torch backend when none is configured and TensorFlow is absent.

    Raises:
        ValueError: Keras is not installed (says how to install it).
    """
    if importlib.util.find_spec("keras") is None:
        raise ValueError("Keras export needs Keras 3, which is an optional extra: pip install 'diycnn[keras]' "
                         "(or pip install keras). It runs on the torch that diycnn already has.")
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec(_configured_backend()) is None:
        os.environ["KERAS_BACKEND"] = "torch"
    import keras  # noqa: PLC0415 (lazy: loads Keras)

    if not keras.__version__.startswith("3."):
        raise ValueError(f"Keras export needs Keras 3; found Keras {keras.__version__}. pip install -U keras")
    return keras


def _configured_backend() -> str:
    """The backend Keras would pick from ~/.keras/keras.json (TensorFlow when none is written)."""
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        backend = json.loads(config.read_text(encoding="utf-8")).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        backend = "tensorflow"
    return {"numpy": "numpy", "jax": "jax", "torch": "torch"}.get(backend, "tensorflow")


def _activation(name: str) -> str:
    return KERAS_ACTIVATIONS.get(name, name)


def keras_config(layer, activation: Callable[[str, Any], str] = lambda name, layer: _activation(name)
                 ) -> dict[str, Any]:
    """One diycnn layer as Keras serialises it, {"class_name", "config"}: what Keras builds the layer
    from (`getattr(keras.layers, class_name)(**config)`) and what TF.js's model.json holds (with
    TF.js's activation names: `activation(name, layer)` maps them). The one mapping of diycnn's
    layers to Keras' for both exports.

    Raises:
        ValueError: a layer type neither export knows.
    """
    kind, c = type(layer).__name__, layer.config
    conf: dict[str, Any] = {"name": layer.name}
    if kind == "Rescaling":
        conf.update(scale=c["scale"], offset=c["offset"])
    elif kind == "Conv2D":
        conf.update(filters=c["filters"], kernel_size=list(c["kernel_size"]), strides=list(c["strides"]),
                    padding=c["padding"], data_format="channels_last", dilation_rate=[1, 1],
                    activation=activation(c["activation"], layer), use_bias=c["use_bias"])
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        conf.update(pool_size=list(c["pool_size"]), strides=list(c["strides"]), padding=c["padding"],
                    data_format="channels_last")
    elif kind in ("GlobalAveragePooling2D", "Flatten"):
        conf.update(data_format="channels_last")
    elif kind == "BatchNormalization":
        conf.update(axis=-1, momentum=c["momentum"], epsilon=c["epsilon"], center=True, scale=True)
    elif kind == "Dense":
        conf.update(units=c["units"], activation=activation(c["activation"], layer), use_bias=c["use_bias"])
    elif kind == "Dropout":
        conf.update(rate=c["rate"])
    elif kind == "Activation":
        conf.update(activation=activation(c["activation"], layer))
    else:
        raise ValueError(f"Layer {layer.label} has no Keras or TensorFlow.js export.")
    return {"class_name": kind, "config": conf}


def _layer(keras, layer):
    """The Keras layer for one diycnn layer (same class, arguments and name)."""
    config = keras_config(layer)
    return getattr(keras.layers, config["class_name"])(**config["config"])


def keras_weights(kind: str, module) -> list[np.ndarray]:
    """torch parameters -> Keras' weight list for that layer (channels-last kernels)."""
    def t(x):
        return x.detach().cpu().float().numpy()

    if kind == "Conv2D":
        out = [t(module.weight).transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
        return out + ([t(module.bias)] if module.bias is not None else [])
    if kind == "Dense":
        return [t(module.weight).T] + ([t(module.bias)] if module.bias is not None else [])
    if kind == "BatchNormalization":
        return [t(module.weight), t(module.bias), t(module.running_mean), t(module.running_var)]
    return []


def backend_problems(spec, backend: str) -> list[str]:
    """Layers that Keras' `backend` computes differently from Keras on TensorFlow (and diycnn).

    Keras' torch backend pads unevenly padded 'same' average pooling with zeros and counts them
    in the average; TensorFlow (and diycnn) average over the real pixels only.
    """

    problems, shape = [], spec.input_shape
    for layer, out in zip(spec.layers, spec.layer_output_shapes()):
        c = layer.config
        if backend == "torch" and type(layer).__name__ == "AveragePooling2D" and c["padding"] == "same":
            pads = [same_pad(shape[i], c["pool_size"][i], c["strides"][i]) for i in (0, 1)]
            if any(a != b for a, b in pads):
                problems.append(f"{layer.label} on input {shape[:2]} pads unevenly {pads}")
        shape = out
    return problems


def build_keras_model(spec, module):
    """A keras.Sequential equal to `spec` carrying `module`'s weights (a softmax is appended when
    the spec ends in logits, so the model outputs probabilities like every diycnn export)."""
    keras = import_keras()
    model = keras.Sequential([keras.Input(shape=tuple(spec.input_shape))], name=spec.name)
    for layer in spec.layers:
        model.add(_layer(keras, layer))
    if spec.output_activation == "linear":
        model.add(keras.layers.Activation("softmax", name="probabilities"))
    for layer in spec.layers:
        weights = keras_weights(type(layer).__name__, module.body[layer.name])
        if weights:
            model.get_layer(layer.name).set_weights(weights)
    return model


def load_keras(path: str | Path):
    keras = import_keras()
    return keras.saving.load_model(str(path), compile=False, safe_mode=True)


def export_keras(run, path: Path):
    """Write the run's spec model as `path` (.keras); return it reloaded with
    keras.saving.load_model (what a user gets), and the Keras version."""
    keras = import_keras()
    problems = backend_problems(run.recipe.spec, keras.backend.backend())
    if problems:
        raise ValueError(
            f"Keras' {keras.backend.backend()} backend computes these layers differently from Keras on TensorFlow "
            f"and diycnn: {'; '.join(problems)}. Export with TensorFlow installed (KERAS_BACKEND=tensorflow), "
            "or use padding='valid' or a pool size/stride that pads evenly."
        )
    model = build_keras_model(run.recipe.spec, run.module)
    model.save(str(path))
    return load_keras(path), keras.__version__


__all__ = ["export_keras", "build_keras_model", "load_keras", "import_keras", "keras_config"]
