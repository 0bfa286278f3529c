"""A pretrained-backbone run (timm EfficientNet-Lite or face-api's face-recognition ResNet, plus
diycnn's head) as a TensorFlow.js functional layers model: `model.json` + `weights.bin`, loadable
with `tf.loadLayersModel` and with Teachable Machine's `tmImage.load`.

The torch modules are walked block by block and each becomes the TF.js layers that compute the
same thing: convolutions (TF 'same' padding where timm's `Conv2dSame` emulates it, explicit
zero padding otherwise), depthwise convolutions, batch norm (inference statistics), ReLU6,
residual adds, global average pooling, then the head's Dense layers. Anything else (squeeze-
excite, other activations, other architectures) is refused with a message naming it. Like the
spec export, the files are checked by running them in TensorFlow.js under Node.js.

The face network (models/face_net.py) becomes convolutions with its per-channel scale and shift
folded in, 2x2 average-pooled shortcuts whose extra channels are a fixed 1x1 convolution (zeros
beyond the identity), and face-api's zero row and column as ZeroPadding2D. Its mirror averaging
is part of the model: the mirror image is made inside the graph (Permute, a fixed Dense that
reverses the width axis, Permute back) and the same network layers run on both views (shared
layers, weights stored once) before an Average.

`input_adapter` (the `tm` format) puts one fixed 1x1 depthwise convolution first, so the model
takes pixels as Teachable Machine's library feeds them (pixels / 127 - 1) and turns them into the
run's own normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple, Union

import numpy as np

from ..settings import (  # timm names this export handles (listed once, for the format lists too)
    FACE_BACKBONE,
    TFJS_BACKBONES,
)
from .tfjs_format import WeightFiles, keras_weights, layer_config, tm_pixels_layer


def supports(backbone: str | None) -> bool:
    """Whether runs on this backbone can be exported to TF.js."""
    return backbone in TFJS_BACKBONES


def _array(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().float().numpy(), dtype="<f4")


Ref = Union[str, Tuple[str, int]]  # a layer's output: its name (first call) or (name, call index)


def _ref(r) -> tuple[str, int]:
    return (r, 0) if isinstance(r, str) else tuple(r)


class _Graph:
    """A functional layers model under construction: layers in order, weights in manifest order."""

    def __init__(self, input_shape: list[int]):
        self.layers: list[dict[str, Any]] = [{
            "class_name": "InputLayer", "name": "image", "inbound_nodes": [],
            "config": {"batch_input_shape": [None, *input_shape], "dtype": "float32", "sparse": False,
                       "name": "image"}}]
        self.weights = WeightFiles()
        self.count = 0

    def add(self, kind: str, inputs: list[Ref], config: dict[str, Any] | None = None,
            weights: list[tuple[str, np.ndarray]] = (), name: str | None = None) -> Ref:
        """A new layer called on `inputs`, or, when a layer called `name` exists, that layer called
        again (a shared layer: one set of weights, a second node). Returns its output."""
        nodes = [[*_ref(i), 0, {}] for i in inputs]
        for layer in self.layers:
            if name is not None and layer["name"] == name:
                layer["inbound_nodes"].append(nodes)
                return name, len(layer["inbound_nodes"]) - 1
        self.count += 1
        name = name or f"{kind.lower()}_{self.count}"
        conf = {"name": name, "trainable": False, "dtype": "float32", **(config or {})}
        self.layers.append({"class_name": kind, "name": name, "config": conf, "inbound_nodes": [nodes]})
        self.weights.add(name, weights)
        return name


def _conv(g: _Graph, x: str, conv, where: str) -> str:
    from timm.layers import Conv2dSame  # noqa: PLC0415 (lazy: loads timm and torch)

    kh, kw = conv.kernel_size
    stride = list(conv.stride)
    if conv.dilation != (1, 1):
        raise ValueError(f"{where}: dilated convolutions have no TF.js export here; use ONNX.")
    if isinstance(conv, Conv2dSame):
        padding = "same"  # timm emulates TensorFlow's 'same' padding: TF.js does it natively
    else:
        ph, pw = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
        if (ph, pw) == (0, 0):
            padding = "valid"
        elif stride == [1, 1] and (ph, pw) == (kh // 2, kw // 2) and kh % 2 and kw % 2:
            padding = "same"  # symmetric padding that TF's 'same' also gives at stride 1
        else:
            x = g.add("ZeroPadding2D", [x], {"padding": [[ph, ph], [pw, pw]], "data_format": "channels_last"})
            padding = "valid"
    common = {"kernel_size": [kh, kw], "strides": stride, "padding": padding, "data_format": "channels_last",
              "dilation_rate": [1, 1], "activation": "linear", "use_bias": conv.bias is not None}
    bias = [("bias", _array(conv.bias))] if conv.bias is not None else []
    if conv.groups == 1:
        kernel = _array(conv.weight).transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
        return g.add("Conv2D", [x], {**common, "filters": conv.out_channels}, [("kernel", kernel), *bias])
    if conv.groups == conv.in_channels == conv.out_channels:
        kernel = _array(conv.weight).transpose(2, 3, 0, 1)  # (c, 1, kh, kw) -> (kh, kw, c, 1)
        return g.add("DepthwiseConv2D", [x], {**common, "depth_multiplier": 1}, [("depthwise_kernel", kernel), *bias])
    raise ValueError(f"{where}: grouped convolutions (groups={conv.groups}) have no TF.js export here; use ONNX.")


def _activation(g: _Graph, x: str, act, where: str) -> str:
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    kinds = {nn.ReLU6: "relu6", nn.ReLU: "relu", nn.SiLU: "swish", nn.Sigmoid: "sigmoid"}
    if isinstance(act, nn.Identity):
        return x
    for cls, name in kinds.items():
        if type(act) is cls:
            return g.add("Activation", [x], {"activation": name})
    raise ValueError(f"{where}: activation {type(act).__name__} has no TF.js export here; use ONNX.")


def _bn_act(g: _Graph, x: str, bn, where: str) -> str:
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    if not isinstance(getattr(bn, "drop", nn.Identity()), nn.Identity):
        raise ValueError(f"{where}: dropout inside batch norm has no TF.js export here; use ONNX.")
    x = g.add("BatchNormalization", [x], {"axis": -1, "momentum": 0.99, "epsilon": float(bn.eps), "center": True,
                                          "scale": True},
              [("gamma", _array(bn.weight)), ("beta", _array(bn.bias)), ("moving_mean", _array(bn.running_mean)),
               ("moving_variance", _array(bn.running_var))])
    return _activation(g, x, getattr(bn, "act", nn.Identity()), where)


def _block(g: _Graph, x: str, block, where: str) -> str:
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    kind = type(block).__name__
    for part in ("se", "aa"):
        if not isinstance(getattr(block, part, nn.Identity()), nn.Identity):
            raise ValueError(f"{where}: {kind} with {part} ({type(getattr(block, part)).__name__}) has no TF.js "
                             "export here (EfficientNet-Lite backbones have none); use ONNX.")
    if kind == "DepthwiseSeparableConv":
        y = _bn_act(g, _conv(g, x, block.conv_dw, where), block.bn1, where)
        y = _bn_act(g, _conv(g, y, block.conv_pw, where), block.bn2, where)
    elif kind == "InvertedResidual":
        y = _bn_act(g, _conv(g, x, block.conv_pw, where), block.bn1, where)
        y = _bn_act(g, _conv(g, y, block.conv_dw, where), block.bn2, where)
        y = _bn_act(g, _conv(g, y, block.conv_pwl, where), block.bn3, where)
    else:
        raise ValueError(f"{where}: block {kind} has no TF.js export here; use ONNX.")
    return g.add("Add", [y, x]) if block.has_skip else y  # drop-path is off in inference


def _face_conv(g: _Graph, x: Ref, unit, name: str) -> Ref:
    """face_net.ConvScale as one Conv2D: conv(x) * scale + shift == conv with (W * scale, b * scale + shift)."""
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    conv, scale, shift = unit.conv, unit.scale.detach(), unit.shift.detach()
    kernel = _array(conv.weight * scale[:, None, None, None]).transpose(2, 3, 1, 0)
    bias = _array(conv.bias * scale + shift)
    k = conv.kernel_size[0]
    # stride 1 pads k // 2 on each side (TF's 'same' for an odd kernel); stride 2 is 'valid' in face-api
    padding = "same" if conv.stride == (1, 1) else "valid"
    return g.add("Conv2D", [x], {"filters": conv.out_channels, "kernel_size": [k, k], "strides": list(conv.stride),
                                 "padding": padding, "data_format": "channels_last", "dilation_rate": [1, 1],
                                 "activation": "relu" if isinstance(unit.relu, nn.ReLU) else "linear",
                                 "use_bias": True}, [("kernel", kernel), ("bias", bias)], name=name)


def _face_features(g: _Graph, x: Ref, net, size: tuple[int, int]) -> Ref:
    """face_net.FaceRecognitionNet.descriptor as layers named after its modules, so that calling
    this twice reuses them (the mirror view shares the weights). `size` is the input's (H, W)."""
    from ..models.face_net import ResidualDown  # noqa: PLC0415 (lazy: loads torch)

    def window(n: int, k: int, s: int) -> int:  # a 'valid' window's output size
        return (n - k) // s + 1

    x = _face_conv(g, x, net.conv32_down, "conv32_down")
    x = g.add("MaxPooling2D", [x], {"pool_size": [3, 3], "strides": [2, 2], "padding": "valid",
                                    "data_format": "channels_last"}, name="conv32_pool")
    h, w = (window(window(n, 7, 2), 3, 2) for n in size)
    for stage in net.stages()[1:-1]:
        block = getattr(net, stage)
        y = _face_conv(g, _face_conv(g, x, block.conv1, f"{stage}_conv1"), block.conv2, f"{stage}_conv2")
        if isinstance(block, ResidualDown):
            cin, cout = block.conv1.conv.in_channels, block.conv1.conv.out_channels
            (oh, ph), (ow, pw) = ((window(n, 3, 2), n // 2) for n in (h, w))
            if (ph, pw) != (oh, ow):  # face-api pads the block's output with a zero row and column
                y = g.add("ZeroPadding2D", [y], {"padding": [[0, ph - oh], [0, pw - ow]],
                                                 "data_format": "channels_last"}, name=f"{stage}_pad")
            x = g.add("AveragePooling2D", [x], {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid",
                                                "data_format": "channels_last"}, name=f"{stage}_shortcut")
            if cout != cin:  # and the shortcut with zero channels: a fixed 1x1 convolution [I | 0]
                widen = np.zeros((1, 1, cin, cout), dtype=np.float32)
                widen[0, 0, np.arange(cin), np.arange(cin)] = 1.0
                x = g.add("Conv2D", [x], {"filters": cout, "kernel_size": [1, 1], "strides": [1, 1],
                                          "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
                                          "activation": "linear", "use_bias": False}, [("kernel", widen)],
                          name=f"{stage}_widen")
            h, w = ph, pw
        x = g.add("Activation", [g.add("Add", [y, x], name=f"{stage}_add")], {"activation": "relu"},
                  name=f"{stage}_relu")
    x = g.add("GlobalAveragePooling2D", [x], {"data_format": "channels_last"}, name="descriptor_pool")
    return g.add("Dense", [x], {"units": net.fc.out_features, "activation": "linear", "use_bias": False},
                 [("kernel", _array(net.fc.weight).T)], name="descriptor")


def _mirror(g: _Graph, x: Ref, width: int) -> Ref:
    """The image mirrored left to right: width moved last, reversed by a fixed Dense (an anti-identity
    matrix: each output takes exactly one input), moved back."""
    x = g.add("Permute", [x], {"dims": [1, 3, 2]}, name="mirror_width_last")
    x = g.add("Dense", [x], {"units": width, "activation": "linear", "use_bias": False},
              [("kernel", np.eye(width, dtype=np.float32)[::-1])], name="mirror_reverse")
    return g.add("Permute", [x], {"dims": [1, 3, 2]}, name="mirror")


def _input_adapter(g: _Graph, x: Ref, prep) -> Ref:
    """Teachable Machine's pixels (p / 127 - 1) -> the run's normalisation (tfjs_format.tm_pixels_layer)."""
    config, weights = tm_pixels_layer(prep)
    return g.add("DepthwiseConv2D", [x], {k: v for k, v in config.items() if k != "name"}, weights,
                 name=config["name"])


def write_tfjs_backbone(recipe, module, input_shape: tuple[int, int, int], folder: Path,
                        generated_by: str, prep=None) -> dict[str, Any]:
    """Write model.json and weights.bin for a backbone run's `module` (BackboneClassifier); return
    the manifest summary. Input: float32 (N, H, W, 3), pixels scaled and normalised as the run's
    preprocessing says, or, given that preprocessing as `prep`, as Teachable Machine feeds them
    (pixels / 127 - 1); output: class probabilities.

    Raises:
        ValueError: a backbone or layer this export does not handle (the message says so).
    """
    if not supports(recipe.backbone):
        raise ValueError(f"TF.js export handles the EfficientNet-Lite backbones and the face network "
                         f"({', '.join(TFJS_BACKBONES)}), not '{recipe.backbone}'. Use ONNX (onnxruntime-web runs "
                         "it in a browser).")
    net = module.backbone
    g = _Graph(list(input_shape))
    x = _input_adapter(g, "image", prep) if prep is not None else "image"
    if recipe.backbone == FACE_BACKBONE:
        size = tuple(input_shape[:2])
        features = _face_features(g, x, net, size)
        if net.mirror:  # part of the model (cached features, predictions and exports all agree)
            features = g.add("Average", [features, _face_features(g, _mirror(g, x, size[1]), net, size)],
                             name="mirror_average")
        x = features
    else:
        if getattr(net.global_pool, "pool_type", "avg") != "avg":
            raise ValueError(f"{recipe.backbone}: only average pooling has a TF.js export here; use ONNX.")
        x = _bn_act(g, _conv(g, x, net.conv_stem, "conv_stem"), net.bn1, "bn1")
        for i, stage in enumerate(net.blocks):
            for j, block in enumerate(stage):
                x = _block(g, x, block, f"blocks.{i}.{j}")
        x = _bn_act(g, _conv(g, x, net.conv_head, "conv_head"), net.bn2, "bn2")
        x = g.add("GlobalAveragePooling2D", [x], {"data_format": "channels_last"}, name="features")
    for layer in recipe.spec.layers:
        kind = type(layer).__name__
        if kind == "Input":
            continue
        if kind not in ("Dense", "Dropout", "Activation", "Rescaling"):
            raise ValueError(f"Head layer {layer.label} has no TF.js export here; use ONNX.")
        conf = layer_config(layer)
        weights = list(zip(("kernel", "bias"), keras_weights(kind, module.head.body[layer.name]))) if kind == "Dense" else []
        x = g.add(conf["class_name"], [x], {k: v for k, v in conf["config"].items() if k != "name"}, weights,
                  name=f"head_{layer.name}")
    if recipe.spec.output_activation == "linear":
        x = g.add("Activation", [x], {"activation": "softmax"}, name="probabilities")
    topology = {"class_name": "Model", "config": {"name": f"{recipe.name}-{recipe.backbone}", "layers": g.layers,
                                                  "input_layers": [["image", 0, 0]],
                                                  "output_layers": [[*_ref(x), 0]]}}
    return g.weights.write(folder, topology, generated_by, len(g.layers))


__all__ = ["write_tfjs_backbone", "supports", "TFJS_BACKBONES"]
