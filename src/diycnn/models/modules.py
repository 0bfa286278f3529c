"""The torch modules that Keras-style layer specs (layers.py) and Sequential specs
(sequential.py) become. PyTorch is imported here and not by the specs, so a summary, a spec
check or a wrong argument answers without loading it.

The modules take (B, C, H, W) tensors (channels-last in memory) but keep Keras' semantics
where they show: `Flatten` flattens in (H, W, C) order, 'same' padding pads the bottom/right
more, initialisers are glorot-uniform kernels and zero biases, and BatchNormalization uses
Keras' momentum and epsilon. So a spec's weights can be carried to Keras and predict the same.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_conv
from .layers import ACTIVATION_NAMES, Layer, same_pad

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
if set(ACTIVATIONS) != set(ACTIVATION_NAMES):  # the spec's list and the modules' table name the same activations
    raise ImportError(f"models/modules.py and models/layers.py disagree on activations: "
                      f"{sorted(set(ACTIVATIONS) ^ set(ACTIVATION_NAMES))}")


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


def _xavier(m: nn.Module) -> nn.Module:
    """Keras' initialisers: glorot-uniform kernel, zero bias."""
    nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return m


def _conv2d(c: dict[str, Any], shape, final: bool) -> nn.Module:
    (kh, kw), (sh, sw) = c["kernel_size"], c["strides"]
    padding, pad = 0, None
    if c["padding"] == "same":
        (top, bottom), (left, right) = same_pad(shape[0], kh, sh), same_pad(shape[1], kw, sw)
        if top == bottom and left == right:
            padding = (top, left)
        else:
            pad = (left, right, top, bottom)
    return _xavier(KConv2d(shape[2], c["filters"], (kh, kw), stride=(sh, sw), padding=padding, bias=c["use_bias"],
                           pad=pad, act=_act_module(c["activation"], final)))


def _pooling(kind: str) -> Callable[[dict[str, Any], Any, bool], nn.Module]:
    def build(c: dict[str, Any], shape, final: bool) -> nn.Module:
        pad = None
        if c["padding"] == "same":
            (top, bottom) = same_pad(shape[0], c["pool_size"][0], c["strides"][0])
            (left, right) = same_pad(shape[1], c["pool_size"][1], c["strides"][1])
            if top or bottom or left or right:
                pad = (left, right, top, bottom)
        return KPool2d(kind, c["pool_size"], c["strides"], pad)
    return build


def _batch_norm(c: dict[str, Any], shape, final: bool) -> nn.Module:
    # Keras: moving = momentum * moving + (1 - momentum) * batch; torch's momentum is the batch weight.
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return cls(shape[-1], eps=c["epsilon"], momentum=1.0 - c["momentum"])


# One builder per layer type: (the layer's config, its input shape, whether it is the last layer) -> module.
BUILDERS: dict[str, Callable[[dict[str, Any], Any, bool], nn.Module]] = {
    "Input": lambda c, shape, final: nn.Identity(),
    "Rescaling": lambda c, shape, final: KScale(c["scale"], c["offset"]),
    "Conv2D": _conv2d,
    "MaxPooling2D": _pooling("max"),
    "AveragePooling2D": _pooling("avg"),
    "GlobalAveragePooling2D": lambda c, shape, final: KGlobalAvgPool(),
    "Flatten": lambda c, shape, final: KFlatten(),
    "BatchNormalization": _batch_norm,
    "Dense": lambda c, shape, final: _xavier(KLinear(shape[0], c["units"], bias=c["use_bias"],
                                                     act=_act_module(c["activation"], final))),
    "Dropout": lambda c, shape, final: nn.Dropout(c["rate"]),
    "Activation": lambda c, shape, final: _act_module(c["activation"], final) or nn.Identity(),
}


def build_layer(layer: Layer, shape: tuple[int, ...], final: bool = False) -> nn.Module:
    """The torch module of `layer` for this input shape; `final` drops a softmax (the loss takes logits)."""
    return BUILDERS[type(layer).__name__](layer.config, shape, final)


class SpecModule(nn.Module):
    """The torch module of a Sequential spec: (B, 3, H, W) float -> (B, classes) logits.

    Parameters are named after the Keras layers (`conv2d.weight`, `dense_1.bias`), so
    the safetensors file reads like the Keras summary. A final softmax is left out of
    `forward` (the loss takes logits) and applied by `predict_proba`.
    """

    def __init__(self, layers: dict[str, nn.Module], output_softmax: bool, crop: tuple[int, int] | None = None):
        super().__init__()
        self.body = nn.ModuleDict(layers)
        self.output_softmax = output_softmax
        # (h, w): the top-left part of the input that can reach the output (see used_input_size).
        # Prediction (models/inference.py) reads only that. Training keeps the whole input: the
        # result is the same in exact arithmetic, but in bf16 the first convolution's weight
        # gradient then sums in another order (relative differences ~5e-4), and over a run
        # that is a different training trajectory from the one the measured results came from.
        self.crop = crop

    def forward(self, x):
        layers = list(self.body.values())
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and fast_conv.pool_applies(layers[i], layers[i + 1], x):
                x = fast_conv.conv_pool_relu(layers[i], x)  # the same result, a fraction of the memory
                i += 2
                continue
            x = layers[i](x)
            i += 1
        return x

    def predict_proba(self, x):
        return torch.softmax(self.forward(x).float(), dim=1)


def relu_after_max_pool(modules: list[nn.Module]) -> None:
    """Conv2D(activation='relu') followed by MaxPooling2D: apply the ReLU after the pooling.

    max(relu(a), relu(b), ...) == relu(max(a, b, ...)) because ReLU never changes the order
    of values, so the outputs are identical, but the ReLU then touches a quarter of the
    elements (for 2x2 pooling) — on the blog's model that is its largest tensor, 98x98x512
    per photo. Gradients are the same (up to ties between positive values)."""
    for conv, pool in zip(modules, modules[1:]):
        if (isinstance(conv, KConv2d) and isinstance(conv.act, nn.ReLU) and isinstance(pool, KPool2d)
                and pool.kind == "max" and pool.post_act is None):
            pool.post_act, conv.act = conv.act, None


def build_spec(spec, seed: int | None = None) -> SpecModule:
    """The torch module of a Sequential spec; weights initialised as Keras does (seeded when `seed` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    modules, shape = {}, spec.input_shape
    last = len(spec.layers) - 1
    for i, (layer, out) in enumerate(zip(spec.layers, spec.layer_output_shapes())):
        modules[layer.name] = build_layer(layer, shape, final=(i == last))
        shape = out
    relu_after_max_pool(list(modules.values()))
    return SpecModule(modules, output_softmax=spec.output_activation == "softmax", crop=spec.used_input_size())
