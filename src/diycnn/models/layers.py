"""Keras-style layer specs: names, arguments, shapes, parameter counts -- without PyTorch, so
summaries, spec checks and the CLI's early answers load none of it. models/modules.py builds
the torch modules from them (keeping Keras' semantics: see there).

Shapes are Keras' channels-last shapes without the batch axis: (H, W, C) or (N,).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..io import shown
from ..settings import suggest

REQUIRED = object()

# The activation names a layer accepts (modules.ACTIVATIONS builds them; a check keeps the two in step).
ACTIVATION_NAMES = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "silu", "swish",
                    "softplus", "leaky_relu")


def snake_case(name: str) -> str:
    """Conv2D -> conv2d, MaxPooling2D -> max_pooling2d, as Keras names layers."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {what} must be an int or a pair of ints, received {shown(value)}.")
    if isinstance(value, int):
        value = (value, value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        if min(value) < 1:
            raise ValueError(f"{layer}: {what} must be >= 1, received {tuple(value)}.")
        return int(value[0]), int(value[1])
    raise TypeError(f"{layer}: {what} must be an int or a pair of ints like (3, 3), received {shown(value)}.")


def _activation(value: Any, layer: str) -> str:
    if value is None:
        return "linear"
    if not isinstance(value, str) or value not in ACTIVATION_NAMES:
        raise ValueError(
            f"{layer}: unknown activation {value!r}.{suggest(value, ACTIVATION_NAMES)} "
            f"Known activations: {', '.join(ACTIVATION_NAMES)}."
        )
    return value


def same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: output ceil(size / s), extra pixel at the end."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _window_out(size: int, k: int, s: int, padding: str) -> int:
    return math.ceil(size / s) if padding == "same" else (size - k) // s + 1


def _check_padding(value: Any, layer: str) -> str:
    if value not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', received {shown(value)}.")
    return value


class Layer:
    """Base class: argument checking, Keras names and config round-trip.

    Subclasses declare ARGS (name -> default, or REQUIRED) in Keras' positional order.
    """

    ARGS: dict[str, Any] = {}

    def __init__(self, *args, name: str | None = None, input_shape=None, **kwargs):
        cls = type(self).__name__
        names = list(self.ARGS)
        if len(args) > len(names):
            raise TypeError(f"{cls}() takes at most {len(names)} positional argument(s) ({names}), received {len(args)}.")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in self.ARGS:
                valid = ", ".join(names + ["name", "input_shape"])
                raise TypeError(f"{cls}() got an unexpected argument '{key}'.{suggest(key, names)} Valid arguments: {valid}.")
            if key in values:
                raise TypeError(f"{cls}() got argument '{key}' twice (positionally and by name).")
            values[key] = value
        for key, default in self.ARGS.items():
            if key not in values:
                if default is REQUIRED:
                    raise TypeError(f"{cls}() is missing the required argument '{key}', e.g. {self._example()}.")
                values[key] = default
        self.name = name
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.config = self._check(values)

    def _example(self) -> str:
        return f"{type(self).__name__}(...)"

    def _check(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise argument values; return the config."""
        return values

    @property
    def label(self) -> str:
        return f"{self.name or snake_case(type(self).__name__)} ({type(self).__name__})"

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name}
        for key, value in self.config.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Layer":
        return cls(**config)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def count_params(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts for this input shape."""
        return 0, 0

    def _need_image(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3:
            raise ValueError(
                f"{self.label} expects an image-shaped input (height, width, channels), received {shape}. "
                "Put it before Flatten/GlobalAveragePooling2D."
            )

    def _need_flat(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1:
            raise ValueError(
                f"{self.label} expects a flat input (features,), received {shape}. "
                "Add Flatten() or GlobalAveragePooling2D() before it."
            )


class Input(Layer):
    """The input shape (height, width, channels); not a layer with outputs of its own."""

    ARGS = {"shape": REQUIRED}

    def _example(self):
        return "Input(shape=(100, 100, 3))"

    def _check(self, v):
        shape = v["shape"]
        if (not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
            raise ValueError(f"Input: shape must be (height, width, channels) of positive ints, or (features,) "
                             f"for a head on backbone features; received {shown(shape)}.")
        if len(shape) == 3 and shape[2] != 3:
            raise ValueError(f"Input: diycnn feeds RGB photos, so channels must be 3, received {shape[2]}.")
        return {"shape": tuple(shape)}


class Rescaling(Layer):
    ARGS = {"scale": REQUIRED, "offset": 0.0}

    def _example(self):
        return "Rescaling(1.0 / 255)"

    def _check(self, v):
        for k in ("scale", "offset"):
            if not isinstance(v[k], (int, float)) or isinstance(v[k], bool):
                raise TypeError(f"Rescaling: {k} must be a number, received {shown(v[k])}.")
        return {"scale": float(v["scale"]), "offset": float(v["offset"])}


class Conv2D(Layer):
    ARGS = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": (1, 1), "padding": "valid",
            "activation": None, "use_bias": True}

    def _example(self):
        return "Conv2D(32, (3, 3), activation='relu')"

    def _check(self, v):
        if not isinstance(v["filters"], int) or isinstance(v["filters"], bool) or v["filters"] < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, received {shown(v['filters'])}.")
        return {"filters": v["filters"], "kernel_size": _pair(v["kernel_size"], "kernel_size", "Conv2D"),
                "strides": _pair(v["strides"], "strides", "Conv2D"),
                "padding": _check_padding(v["padding"], "Conv2D"),
                "activation": _activation(v["activation"], "Conv2D"), "use_bias": bool(v["use_bias"])}

    def output_shape(self, shape):
        self._need_image(shape)
        (kh, kw), (sh, sw), p = self.config["kernel_size"], self.config["strides"], self.config["padding"]
        return (_window_out(shape[0], kh, sh, p), _window_out(shape[1], kw, sw, p), self.config["filters"])

    def count_params(self, shape):
        kh, kw = self.config["kernel_size"]
        f = self.config["filters"]
        return kh * kw * shape[2] * f + (f if self.config["use_bias"] else 0), 0


class Pooling2D(Layer):
    ARGS = {"pool_size": (2, 2), "strides": None, "padding": "valid"}
    KIND = "max"

    def _check(self, v):
        name = type(self).__name__
        pool = _pair(v["pool_size"], "pool_size", name)
        strides = pool if v["strides"] is None else _pair(v["strides"], "strides", name)
        return {"pool_size": pool, "strides": strides, "padding": _check_padding(v["padding"], name)}

    def output_shape(self, shape):
        self._need_image(shape)
        (kh, kw), (sh, sw), p = self.config["pool_size"], self.config["strides"], self.config["padding"]
        return (_window_out(shape[0], kh, sh, p), _window_out(shape[1], kw, sw, p), shape[2])


class MaxPooling2D(Pooling2D):
    KIND = "max"


class AveragePooling2D(Pooling2D):
    KIND = "avg"


class GlobalAveragePooling2D(Layer):
    def output_shape(self, shape):
        self._need_image(shape)
        return (shape[2],)


class Flatten(Layer):
    def output_shape(self, shape):
        return (math.prod(shape),)


class BatchNormalization(Layer):
    ARGS = {"momentum": 0.99, "epsilon": 1e-3}

    def _check(self, v):
        if not (isinstance(v["momentum"], (int, float)) and 0 <= v["momentum"] < 1):
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1), received {shown(v['momentum'])}.")
        if not (isinstance(v["epsilon"], (int, float)) and v["epsilon"] > 0):
            raise ValueError(f"BatchNormalization: epsilon must be > 0, received {shown(v['epsilon'])}.")
        return {"momentum": float(v["momentum"]), "epsilon": float(v["epsilon"])}

    def count_params(self, shape):
        c = shape[-1]
        return 2 * c, 2 * c  # gamma/beta trainable; moving mean/variance not


class Dense(Layer):
    ARGS = {"units": REQUIRED, "activation": None, "use_bias": True}

    def _example(self):
        return "Dense(128, activation='relu')"

    def _check(self, v):
        if not isinstance(v["units"], int) or isinstance(v["units"], bool) or v["units"] < 1:
            raise ValueError(f"Dense: units must be a positive int, received {shown(v['units'])}.")
        return {"units": v["units"], "activation": _activation(v["activation"], "Dense"),
                "use_bias": bool(v["use_bias"])}

    def output_shape(self, shape):
        self._need_flat(shape)
        return (self.config["units"],)

    def count_params(self, shape):
        u = self.config["units"]
        return shape[0] * u + (u if self.config["use_bias"] else 0), 0


class Dropout(Layer):
    ARGS = {"rate": REQUIRED}

    def _example(self):
        return "Dropout(0.5)"

    def _check(self, v):
        if not (isinstance(v["rate"], (int, float)) and 0 <= v["rate"] < 1):
            raise ValueError(f"Dropout: rate must be in [0, 1), received {shown(v['rate'])}.")
        return {"rate": float(v["rate"])}


class Activation(Layer):
    ARGS = {"activation": REQUIRED}

    def _example(self):
        return "Activation('relu')"

    def _check(self, v):
        return {"activation": _activation(v["activation"], "Activation")}


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Input, Rescaling, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
                Flatten, BatchNormalization, Dense, Dropout, Activation)
}


def layer_from_config(class_name: str, config: dict[str, Any] | None) -> Layer:
    """Make a layer from Keras' ("Conv2D", {...}) form.

    Raises:
        ValueError: unknown layer name (with the closest known one).
        TypeError: missing or unexpected arguments.
    """
    if class_name == "InputLayer":  # Keras 3 writes the input as InputLayer(batch_shape=[None, H, W, C])
        config = dict(config or {})
        shape = config.pop("batch_shape", None) or [None] + list(config.pop("shape", []))
        return Input(shape=tuple(shape[1:]), name=config.get("name"))
    if class_name not in LAYERS:
        raise ValueError(
            f"Unknown layer '{class_name}'.{suggest(class_name, LAYERS)} Known layers: {', '.join(LAYERS)}."
        )
    return LAYERS[class_name].from_config(dict(config or {}))
