"""`Sequential`: a Keras-style list of layers, checked as it grows, that builds a torch module
(models/modules.py; PyTorch is imported only then)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from ..io import shown
from ..settings import read_document_file
from .layers import (
    LAYERS,
    Activation,
    Conv2D,
    Dropout,
    Input,
    Layer,
    Pooling2D,
    Rescaling,
    layer_from_config,
    snake_case,
)

NUM_CLASSES = "num_classes"  # placeholder for Dense units in reusable spec files


def _rows_needed(layer: Layer, need: tuple[int, int] | None, shape_in, shape_out) -> tuple[int, int] | None:
    """How much of a layer's image input (top-left h x w) its first `need` output rows/columns read.

    None means all of it. Only 'valid' windows (and per-pixel layers) let the unread rest be
    dropped; 'same' padding depends on the full size, and BatchNormalization's batch
    statistics on every position, so they need everything.
    """
    if len(shape_in) != 3 or len(shape_out) != 3:
        return None
    h, w = need or shape_out[:2]
    if isinstance(layer, (Conv2D, Pooling2D)) and layer.config["padding"] == "valid":
        (kh, kw) = layer.config["kernel_size" if isinstance(layer, Conv2D) else "pool_size"]
        (sh, sw) = layer.config["strides"]
        h, w = (h - 1) * sh + kh, (w - 1) * sw + kw
    elif not (isinstance(layer, (Activation, Dropout, Rescaling)) and need is not None):
        return None
    return None if (h, w) == tuple(shape_in[:2]) else (h, w)


class Sequential:
    """A stack of Keras-style layers.

    Example:
        >>> from diycnn.models.layers import Conv2D, Dense, Flatten, Input
        >>> m = Sequential([Input((32, 32, 3)), Conv2D(8, 3, activation="relu"), Flatten(), Dense(2, activation="softmax")])
        >>> m.output_shape
        (2,)
    """

    def __init__(self, layers: list[Layer] | None = None, name: str = "sequential"):
        self.name = name
        self.layers: list[Layer] = []
        self.input_shape: tuple[int, ...] | None = None
        self._shapes: list[tuple[int, ...]] = []  # output shape of each layer in self.layers
        for layer in layers or []:
            self.add(layer)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise ValueError(f"Model '{self.name}' has no input shape: start it with Input(shape=(H, W, 3)).")
        return self._shapes[-1] if self._shapes else self.input_shape

    def add(self, layer: Layer) -> None:
        """Append a layer, checking its arguments against the shape it receives.

        Raises:
            TypeError: `layer` is not a layer.
            ValueError: the layer cannot take the current shape, or would shrink it below 1x1.
        """
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add() takes a layer such as Dense(10), received {shown(layer)}.")
        if isinstance(layer, Input):
            if self.input_shape is not None:
                raise ValueError(f"Model '{self.name}' already has an input shape {self.input_shape}; Input must come first, once.")
            self.input_shape = layer.config["shape"]
            return
        if self.input_shape is None:
            if layer.input_shape is None:
                raise ValueError(
                    f"The first layer of '{self.name}' ({type(layer).__name__}) needs an input shape: add "
                    "Input(shape=(100, 100, 3)) first, or pass input_shape=(100, 100, 3) to the layer."
                )
            self.input_shape = Input(shape=layer.input_shape).config["shape"]
        if layer.name is None:
            layer.name = self._unique_name(snake_case(type(layer).__name__))
        elif any(existing.name == layer.name for existing in self.layers):
            raise ValueError(f"Model '{self.name}' already has a layer named '{layer.name}'; layer names must be unique.")
        shape_in = self.output_shape
        shape_out = layer.output_shape(shape_in)
        if any(s < 1 for s in shape_out):
            raise ValueError(
                f"Layer {layer.label} would turn shape {(None,) + tuple(shape_in)} into "
                f"{(None,) + tuple(shape_out)}, smaller than 1x1. Use a larger Input, fewer pooling layers, "
                "smaller kernels/strides, or padding='same'."
            )
        self.layers.append(layer)
        self._shapes.append(shape_out)

    def _unique_name(self, base: str) -> str:
        taken = {layer.name for layer in self.layers}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer: name, type, output shape, trainable and non-trainable params."""
        rows, shape = [], self.input_shape
        for layer, out in zip(self.layers, self._shapes):
            trainable, frozen = layer.count_params(shape)
            rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": (None,) + tuple(out),
                         "params": trainable + frozen, "trainable": trainable, "non_trainable": frozen})
            shape = out
        return rows

    def used_input_size(self) -> tuple[int, int] | None:
        """The top-left (h, w) of the input photo that can change the output, when smaller than the input.

        A 'valid' max-pool of size 2 on an odd-sized map drops its last row and column, so the
        convolution before it computes them for nothing, and so on back to the photo. On the
        blog's model (100x100 in) only 98x98 input pixels reach the output: cropping them first
        saves ~4% of every layer's work, with identical outputs.
        """
        need: tuple[int, int] | None = None
        shapes_in = [self.input_shape] + self._shapes[:-1]
        for layer, shape_in, shape_out in reversed(list(zip(self.layers, shapes_in, self._shapes))):
            need = _rows_needed(layer, need, shape_in, shape_out)
        return need

    def count_params(self) -> int:
        return sum(r["params"] for r in self.rows())

    @property
    def starts_with_rescaling(self) -> bool:
        return bool(self.layers) and isinstance(self.layers[0], Rescaling)

    @property
    def output_activation(self) -> str | None:
        last = self.layers[-1] if self.layers else None
        return last.config.get("activation") if last is not None else None

    def check_classifier(self, num_classes: int) -> None:
        """The last layer must give one output per class.

        Raises:
            ValueError: naming the last layer and what it should be.
        """
        out = self.output_shape
        if len(out) != 1 or out[0] != num_classes:
            raise ValueError(
                f"Model '{self.name}' outputs shape {(None,) + tuple(out)} but the data has {num_classes} classes. "
                f"End the model with Dense({num_classes}, activation='softmax') (or units: num_classes in a spec file)."
            )
        if self.output_activation not in ("softmax", "linear"):
            raise ValueError(
                f"Model '{self.name}' ends with activation '{self.output_activation}'; a classifier needs "
                "'softmax' (or no activation, giving logits)."
            )

    def layer_output_shapes(self) -> list[tuple[int, ...]]:
        """The output shape of each layer, in order."""
        return list(self._shapes)

    def build(self, seed: int | None = None):
        """Make the torch module (modules.SpecModule); weights initialised as Keras does (seeded when
        `seed` is given)."""
        from .modules import build_spec  # PyTorch loads only when a model is built (a summary needs none)  # noqa: PLC0415 (lazy: loads torch)

        return build_spec(self, seed)

    def get_config(self) -> dict[str, Any]:
        layers = [{"class_name": "Input", "config": {"shape": list(self.input_shape)}}] if self.input_shape else []
        layers += [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in self.layers]
        return {"name": self.name, "layers": layers}

    @classmethod
    def from_config(cls, config: dict[str, Any], num_classes: int | None = None,
                    where: str = "model spec") -> "Sequential":
        """Rebuild from `get_config()` output, or a spec file's mapping.

        Layers may be written `{"class_name": "Dense", "config": {"units": 2}}`, `{"Dense": {"units": 2}}`,
        `{"Dense": [2]}` (positional) or just `"Flatten"`. `units: num_classes` is replaced by `num_classes`.
        """
        if isinstance(config, dict) and config.get("class_name") == "Sequential":
            config = config.get("config", {})
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"{where} must be a mapping with a 'layers' list, e.g. layers: [{{Input: {{shape: [100, 100, 3]}}}}, ...].")
        unknown = set(config) - {"name", "layers", "input_shape"}
        if unknown:
            raise ValueError(f"{where}: unknown top-level key(s) {sorted(unknown)}; expected name, layers, input_shape.")
        model = cls(name=config.get("name") or "sequential")
        if config.get("input_shape") is not None:
            model.add(Input(shape=tuple(config["input_shape"])))
        for i, item in enumerate(config["layers"]):
            class_name, args, kwargs = _parse_item(item, i, where)
            if kwargs.get("units") == NUM_CLASSES:
                if num_classes is None:
                    raise ValueError(f"{where}: layer {i} uses units: num_classes; pass the number of classes.")
                kwargs["units"] = num_classes
            try:
                if args:
                    if class_name not in LAYERS:
                        layer_from_config(class_name, {})  # raises the unknown-layer error
                    layer = LAYERS[class_name](*args, **kwargs)
                else:
                    layer = layer_from_config(class_name, kwargs)
                model.add(layer)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{where}, layer {i} ({class_name}): {exc}") from None
        return model


def _parse_item(item: Any, i: int, where: str) -> tuple[str, list, dict]:
    if isinstance(item, str):
        return item, [], {}
    if isinstance(item, dict) and "class_name" in item:
        return item["class_name"], [], dict(item.get("config") or {})
    if isinstance(item, dict) and len(item) == 1:
        (class_name, value), = item.items()
        if value is None:
            return class_name, [], {}
        if isinstance(value, dict):
            return class_name, [], dict(value)
        if isinstance(value, list):
            return class_name, list(value), {}
        return class_name, [value], {}
    raise ValueError(f"{where}: layer {i} must look like {{Dense: {{units: 2}}}} or 'Flatten', received {shown(item)}.")


def read_spec_file(path: str | Path, num_classes: int | None = None) -> Sequential:
    """Read a YAML or JSON model spec.

    Raises:
        FileNotFoundError: no such file.
        ValueError / TypeError: the spec is malformed (Keras-style message naming the layer).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model spec file '{path}' does not exist.")
    try:
        data = read_document_file(path)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())
        raise ValueError(f"Model spec file '{path}' cannot be parsed: {shown(reason, 300, quote=False)}") from None
    if isinstance(data, dict) and "name" not in data and "class_name" not in data:
        data = {**data, "name": path.stem}
    return Sequential.from_config(data, num_classes=num_classes, where=f"model spec '{path}'")


def format_summary(model: Sequential, print_fn: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Keras 3-style summary table; returns the figures as data.

    Returns:
        {"name", "rows": [{name, type, output_shape, params, ...}], "total_params",
         "trainable_params", "non_trainable_params"}
    """
    rows = model.rows()
    trainable = sum(r["trainable"] for r in rows)
    frozen = sum(r["non_trainable"] for r in rows)
    result = {"name": model.name, "input_shape": (None,) + tuple(model.input_shape or ()), "rows": rows,
              "total_params": trainable + frozen, "trainable_params": trainable, "non_trainable_params": frozen}
    if print_fn is None:
        return result
    cells = [(f"{r['name']} ({r['type']})", "(" + ", ".join("None" if d is None else str(d) for d in r["output_shape"]) + ")",
              f"{r['params']:,}") for r in rows]
    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) + 2 for i in range(3)]

    def line(a, b, c, fill):
        return a + b.join(fill * w for w in widths) + c

    def row(values, bar):
        return bar + bar.join(f" {v:<{w - 2}} " if i < 2 else f" {v:>{w - 2}} "
                              for i, (v, w) in enumerate(zip(values, widths))) + bar

    out = [f'Model: "{model.name}"', line("┏", "┳", "┓", "━"), row(header, "┃"), line("┡", "╇", "┩", "━")]
    out += [row(c, "│") for c in cells]
    out.append(line("└", "┴", "┘", "─"))
    out.append(f" Total params: {trainable + frozen:,} ({_size(trainable + frozen)})")
    out.append(f" Trainable params: {trainable:,} ({_size(trainable)})")
    out.append(f" Non-trainable params: {frozen:,} ({_size(frozen)})")
    for text in out:
        print_fn(text)
    return result


def _size(params: int) -> str:
    """Bytes of float32 parameters, as Keras prints them."""
    n = params * 4
    for unit, scale in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.2f} B"
