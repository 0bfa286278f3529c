"""Keras-style layer specs (names, arguments, shapes, parameter counts) that build torch modules.

Shapes are Keras' channels-last shapes without the batch axis: (H, W, C) or (N,).
The torch modules take (B, C, H, W) tensors (channels-last in memory) but keep Keras'
semantics where they show: `Flatten` flattens in (H, W, C) order, 'same' padding pads
the bottom/right more, initialisers are glorot-uniform kernels and zero biases, and
BatchNormalization uses Keras' momentum and epsilon. So a spec's weights can be
carried to Keras and predict the same.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import suggest
from . import fast_conv

REQUIRED = object()

ACTIVATIONS = {
    "linear": None,
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras' default negative slope
}


def _snake(name: str) -> str:
    """Conv2D -> conv2d, MaxPooling2D -> max_pooling2d, as Keras names layers."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {what} must be an int or a pair of ints, received {value!r}.")
    if isinstance(value, int):
        value = (value, value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        if min(value) < 1:
            raise ValueError(f"{layer}: {what} must be >= 1, received {tuple(value)}.")
        return int(value[0]), int(value[1])
    raise TypeError(f"{layer}: {what} must be an int or a pair of ints like (3, 3), received {value!r}.")


def _activation(value: Any, layer: str) -> str:
    if value is None:
        return "linear"
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ValueError(
            f"{layer}: unknown activation {value!r}.{suggest(value, ACTIVATIONS)} "
            f"Known activations: {', '.join(ACTIVATIONS)}."
        )
    return value


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: output ceil(size / s), extra pixel at the end."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _window_out(size: int, k: int, s: int, padding: str) -> int:
    return math.ceil(size / s) if padding == "same" else (size - k) // s + 1


def _check_padding(value: Any, layer: str) -> str:
    if value not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', received {value!r}.")
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
        return f"{self.name or _snake(type(self).__name__)} ({type(self).__name__})"

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

    def build(self, shape: tuple[int, ...], final: bool = False) -> nn.Module:
        """Torch module for this input shape; `final` drops a softmax (the loss takes logits)."""
        return nn.Identity()

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


def _act_module(name: str, final: bool) -> nn.Module | None:
    if name == "linear" or (final and name == "softmax"):
        return None
    return ACTIVATIONS[name]()


class KConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow 'same' padding and a fused activation."""

    def __init__(self, *args, pad: tuple[int, int, int, int] | None = None, act: nn.Module | None = None, **kw):
        super().__init__(*args, **kw)
        self.pad = pad
        self.act = act

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = fast_conv.conv2d(self, x) if fast_conv.applies(self, x) else super().forward(x)
        return self.act(x) if self.act is not None else x


class KLinear(nn.Linear):
    def __init__(self, *args, act: nn.Module | None = None, **kw):
        super().__init__(*args, **kw)
        self.act = act

    def forward(self, x):
        x = super().forward(x)
        return self.act(x) if self.act is not None else x


class KPool2d(nn.Module):
    """Max or average pooling with Keras 'valid'/'same' semantics (padding never counts)."""

    def __init__(self, kind: str, pool: tuple[int, int], strides: tuple[int, int], pad):
        super().__init__()
        self.kind, self.pool, self.strides, self.pad = kind, pool, strides, pad
        self.post_act: nn.Module | None = None  # the previous conv's ReLU, moved here (see sequential.py)

    def forward(self, x):
        if self.kind == "max":
            if self.pad is not None:
                x = F.pad(x, self.pad, value=float("-inf"))
            x = F.max_pool2d(x, self.pool, self.strides)
            return self.post_act(x) if self.post_act is not None else x
        if self.pad is None:
            return F.avg_pool2d(x, self.pool, self.strides)
        ones = torch.ones((1, 1) + x.shape[2:], dtype=x.dtype, device=x.device)
        total = F.avg_pool2d(F.pad(x, self.pad), self.pool, self.strides)
        share = F.avg_pool2d(F.pad(ones, self.pad), self.pool, self.strides)
        return total / share


class KFlatten(nn.Module):
    """Flatten in Keras' (H, W, C) order: (B, C, H, W) -> (B, H*W*C)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class KGlobalAvgPool(nn.Module):
    def forward(self, x):  # (B, C, H, W) -> (B, C)
        return x.mean(dim=(2, 3))


class KScale(nn.Module):
    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        return x * self.scale + self.offset


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
                             f"for a head on backbone features; received {shape!r}.")
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
                raise TypeError(f"Rescaling: {k} must be a number, received {v[k]!r}.")
        return {"scale": float(v["scale"]), "offset": float(v["offset"])}

    def build(self, shape, final=False):
        return KScale(self.config["scale"], self.config["offset"])


class Conv2D(Layer):
    ARGS = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": (1, 1), "padding": "valid",
            "activation": None, "use_bias": True}

    def _example(self):
        return "Conv2D(32, (3, 3), activation='relu')"

    def _check(self, v):
        if not isinstance(v["filters"], int) or isinstance(v["filters"], bool) or v["filters"] < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, received {v['filters']!r}.")
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

    def build(self, shape, final=False):
        c = self.config
        (kh, kw), (sh, sw) = c["kernel_size"], c["strides"]
        padding, pad = 0, None
        if c["padding"] == "same":
            (top, bottom), (left, right) = _same_pad(shape[0], kh, sh), _same_pad(shape[1], kw, sw)
            if top == bottom and left == right:
                padding = (top, left)
            else:
                pad = (left, right, top, bottom)
        m = KConv2d(shape[2], c["filters"], (kh, kw), stride=(sh, sw), padding=padding, bias=c["use_bias"],
                    pad=pad, act=_act_module(c["activation"], final))
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return m


class _Pooling2D(Layer):
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

    def build(self, shape, final=False):
        c = self.config
        pad = None
        if c["padding"] == "same":
            (top, bottom) = _same_pad(shape[0], c["pool_size"][0], c["strides"][0])
            (left, right) = _same_pad(shape[1], c["pool_size"][1], c["strides"][1])
            if top or bottom or left or right:
                pad = (left, right, top, bottom)
        return KPool2d(self.KIND, c["pool_size"], c["strides"], pad)


class MaxPooling2D(_Pooling2D):
    KIND = "max"


class AveragePooling2D(_Pooling2D):
    KIND = "avg"


class GlobalAveragePooling2D(Layer):
    def output_shape(self, shape):
        self._need_image(shape)
        return (shape[2],)

    def build(self, shape, final=False):
        return KGlobalAvgPool()


class Flatten(Layer):
    def output_shape(self, shape):
        return (math.prod(shape),)

    def build(self, shape, final=False):
        return KFlatten()


class BatchNormalization(Layer):
    ARGS = {"momentum": 0.99, "epsilon": 1e-3}

    def _check(self, v):
        if not (isinstance(v["momentum"], (int, float)) and 0 <= v["momentum"] < 1):
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1), received {v['momentum']!r}.")
        if not (isinstance(v["epsilon"], (int, float)) and v["epsilon"] > 0):
            raise ValueError(f"BatchNormalization: epsilon must be > 0, received {v['epsilon']!r}.")
        return {"momentum": float(v["momentum"]), "epsilon": float(v["epsilon"])}

    def count_params(self, shape):
        c = shape[-1]
        return 2 * c, 2 * c  # gamma/beta trainable; moving mean/variance not

    def build(self, shape, final=False):
        # Keras: moving = momentum * moving + (1 - momentum) * batch; torch's momentum is the batch weight.
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return cls(shape[-1], eps=self.config["epsilon"], momentum=1.0 - self.config["momentum"])


class Dense(Layer):
    ARGS = {"units": REQUIRED, "activation": None, "use_bias": True}

    def _example(self):
        return "Dense(128, activation='relu')"

    def _check(self, v):
        if not isinstance(v["units"], int) or isinstance(v["units"], bool) or v["units"] < 1:
            raise ValueError(f"Dense: units must be a positive int, received {v['units']!r}.")
        return {"units": v["units"], "activation": _activation(v["activation"], "Dense"),
                "use_bias": bool(v["use_bias"])}

    def output_shape(self, shape):
        self._need_flat(shape)
        return (self.config["units"],)

    def count_params(self, shape):
        u = self.config["units"]
        return shape[0] * u + (u if self.config["use_bias"] else 0), 0

    def build(self, shape, final=False):
        c = self.config
        m = KLinear(shape[0], c["units"], bias=c["use_bias"], act=_act_module(c["activation"], final))
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return m


class Dropout(Layer):
    ARGS = {"rate": REQUIRED}

    def _example(self):
        return "Dropout(0.5)"

    def _check(self, v):
        if not (isinstance(v["rate"], (int, float)) and 0 <= v["rate"] < 1):
            raise ValueError(f"Dropout: rate must be in [0, 1), received {v['rate']!r}.")
        return {"rate": float(v["rate"])}

    def build(self, shape, final=False):
        return nn.Dropout(self.config["rate"])


class Activation(Layer):
    ARGS = {"activation": REQUIRED}

    def _example(self):
        return "Activation('relu')"

    def _check(self, v):
        return {"activation": _activation(v["activation"], "Activation")}

    def build(self, shape, final=False):
        return _act_module(self.config["activation"], final) or nn.Identity()


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
