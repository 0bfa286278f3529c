"""The face-recognition ResNet of face-api.js (a port of dlib's ResNet-29 face descriptor), in
PyTorch, with its weights loaded from the npm package's TF.js files (see face_weights.py).

It maps a 150x150 RGB face to a 128-d descriptor: photos of the same person lie close together
(dlib's rule of thumb: Euclidean distance < 0.6), which is what ImageNet features lack. Layer
for layer as in face-api's `src/faceRecognitionNet/` (inputs (RGB - mean) / 255):

    conv 7x7/2 'valid' + bias + per-channel scale, ReLU   (B, 32, 72, 72)
    max-pool 3/2 'valid'                                   (B, 32, 35, 35)
    3 residual blocks at 32, then down-blocks to 64 (17x17), 128 (8x8), 256 (3x3 -> 4x4 padded)
    and a last down-block at 256                           (B, 256, 2, 2)
    mean over H, W -> fc 256 -> 128 (no bias)              (B, 128)

A block is conv3x3 -> ReLU -> conv3x3 -> + shortcut -> ReLU; a down-block's first conv has
stride 2 ('valid') and its shortcut is a 2x2 average pool, zero-padded to the new channel count
(and the block's output zero-padded by a row and a column when the two sizes differ).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..settings import FACE_MEAN_RGB as MEAN_RGB  # named once, with the face backbone's name
from .tfjs_weights import read_tfjs_weights

DESCRIPTOR_SIZE = 128


class ConvScale(nn.Module):
    """conv (+ bias), then a learnt per-channel scale and shift; optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True):
        super().__init__()
        # TF 'same' with stride 1 and an odd kernel pads evenly; stride 2 here is always 'valid'.
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0)
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        x = self.conv(x) * self.scale[:, None, None] + self.shift[:, None, None]
        return self.relu(x)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvScale(channels, channels, 3)
        self.conv2 = ConvScale(channels, channels, 3, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + x)


class ResidualDown(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvScale(cin, cout, 3, stride=2)
        self.conv2 = ConvScale(cout, cout, 3, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv2(self.conv1(x))  # (B, cout, ⌊(H-3)/2⌋+1, ...)
        pooled = F.avg_pool2d(x, 2, 2)  # (B, cin, ⌊H/2⌋, ⌊W/2⌋)
        dh, dw = pooled.shape[2] - out.shape[2], pooled.shape[3] - out.shape[3]
        if dh or dw:  # face-api appends a zero row and column to the block's output
            out = F.pad(out, (0, dw, 0, dh))
        if pooled.shape[1] != out.shape[1]:  # and zero channels to the shortcut
            pooled = F.pad(pooled, (0, 0, 0, 0, 0, out.shape[1] - pooled.shape[1]))
        return self.relu(out + pooled)


class FaceRecognitionNet(nn.Module):
    """(B, 3, 150, 150) normalised faces -> (B, 128) descriptors. `num_features` = 128, like a
    classifier-less timm backbone, so it slots in wherever a backbone does.

    mirror: the descriptor is the mean of the face's and its mirror image's (measured on
    kpop_idols, 15 idols, logistic regression on the descriptors: 0.815 -> 0.843 test accuracy).
    It is part of the model, so cached features, predictions and exports all agree; Grad-CAM
    switches it off and explains both passes itself (see explanations.py).
    """

    num_features = DESCRIPTOR_SIZE

    def __init__(self, mirror: bool = True):
        super().__init__()
        self.mirror = mirror
        self.conv32_down = ConvScale(3, 32, 7, stride=2)
        self.pool = nn.MaxPool2d(3, 2)
        self.conv32_1, self.conv32_2, self.conv32_3 = Residual(32), Residual(32), Residual(32)
        self.conv64_down = ResidualDown(32, 64)
        self.conv64_1, self.conv64_2, self.conv64_3 = Residual(64), Residual(64), Residual(64)
        self.conv128_down = ResidualDown(64, 128)
        self.conv128_1, self.conv128_2 = Residual(128), Residual(128)
        self.conv256_down = ResidualDown(128, 256)
        self.conv256_1, self.conv256_2 = Residual(256), Residual(256)
        self.conv256_down_out = ResidualDown(256, 256)
        self.fc = nn.Linear(256, DESCRIPTOR_SIZE, bias=False)

    def stages(self) -> list[str]:
        """Module names from input to output (the unit `freeze_early` counts in)."""
        return ["conv32_down", "conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2",
                "conv64_3", "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2",
                "conv256_down_out", "fc"]

    def freeze_early(self, fraction: float) -> list[str]:
        """Freeze the earliest `fraction` of the stages; returns their names (kept in eval mode)."""
        names = self.stages()[: int(round(len(self.stages()) * fraction))]
        for name in names:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)
        return names

    def frozen_stages(self) -> int:
        """How many stages, from the input on, have no trainable parameter."""
        count = 0
        for name in self.stages():
            if any(p.requires_grad for p in getattr(self, name).parameters()):
                break
            count += 1
        return count

    def trunk(self, x, stages: int):
        """The activations after the first `stages` stages (the max-pool belongs to the first)."""
        if not 0 < stages < len(self.stages()):
            raise ValueError(f"the trunk has 1 to {len(self.stages()) - 1} stages, not {stages}")
        x = self.pool(self.conv32_down(x))
        for name in self.stages()[1:stages]:
            x = getattr(self, name)(x)
        return x

    def top(self, h, stages: int):
        """The descriptor from `trunk(x, stages)`: descriptor(x) == top(trunk(x, k), k) for every k < 16."""
        for name in self.stages()[stages:-1]:
            h = getattr(self, name)(h)
        return self.fc(h.mean(dim=(2, 3)))

    def forward_features(self, x):
        return self.trunk(x, len(self.stages()) - 1)  # (B, 256, 2, 2)

    def descriptor(self, x):
        return self.top(self.forward_features(x), len(self.stages()) - 1)

    def forward(self, x):
        if self.mirror:
            return (self.descriptor(x) + self.descriptor(torch.flip(x, dims=[3]))) / 2
        return self.descriptor(x)


def _taker(weights: dict[str, np.ndarray], target: dict[str, torch.Tensor], model: str):
    """(take, out): take(tf_name, key, convert) moves one TF.js weight, converted to PyTorch's
    layout, into `out[key]`, checking it exists and has the target's shape."""
    out: dict[str, torch.Tensor] = {}

    def take(tf_name: str, key: str, convert=lambda a: a) -> None:
        if tf_name not in weights:
            raise ValueError(f"The weights lack '{tf_name}': not face-api's {model}.")
        value = torch.from_numpy(np.ascontiguousarray(convert(weights[tf_name]))).float()
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"Weight '{tf_name}' of {model} has shape {tuple(weights[tf_name].shape)}, expected one "
                             f"fitting {tuple(target[key].shape)}.")
        out[key] = value

    return take, out


def state_dict_from_tfjs(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """face-api's TF.js weight names and layouts -> this module's state dict.

    Raises:
        ValueError: a weight is missing or has an unexpected shape.
    """
    net = FaceRecognitionNet()
    take, out = _taker(weights, net.state_dict(), "face_recognition_model")

    def conv_scale(tf_prefix: str, prefix: str) -> None:
        take(f"{tf_prefix}/conv/filters", f"{prefix}.conv.weight", lambda a: a.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        take(f"{tf_prefix}/conv/bias", f"{prefix}.conv.bias")
        take(f"{tf_prefix}/scale/weights", f"{prefix}.scale")
        take(f"{tf_prefix}/scale/biases", f"{prefix}.shift")

    conv_scale("conv32_down", "conv32_down")
    for name in net.stages()[1:-1]:
        conv_scale(f"{name}/conv1", f"{name}.conv1")
        conv_scale(f"{name}/conv2", f"{name}.conv2")
    take("fc", "fc.weight", lambda a: a.T)  # (256, 128) matmul -> Linear's (128, 256)
    return out


def load_face_recognition_net(manifest: str | Path, mirror: bool = False) -> FaceRecognitionNet:
    """The network with face-api's weights from a `face_recognition_model-weights_manifest.json`
    (by default without the mirror averaging: exactly face-api's descriptor)."""

    net = FaceRecognitionNet(mirror=mirror)
    net.load_state_dict(state_dict_from_tfjs(read_tfjs_weights(manifest)))
    return net.eval()


# --- the 68-point landmark network (face-api's FaceLandmark68Net) -----------------------------------
LANDMARK_INPUT = 112


def same_pad(x, stride: int):
    """TF's 'same' padding for a 3x3 kernel: 1 on each side at stride 1; at stride 2 on an even
    size, 0 before and 1 after (TF puts the odd pixel at the end)."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[2], x.shape[3]
    ph, pw = max((-(-h // 2) - 1) * 2 + 3 - h, 0), max((-(-w // 2) - 1) * 2 + 3 - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class SeparableConv(nn.Module):
    """TF's separableConv2d ('same') + bias: depthwise 3x3, then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.pointwise(self.depthwise(same_pad(x, self.stride)))


class PlainConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride, bias=True)

    def forward(self, x):
        return self.conv(same_pad(x, self.stride))


class DenseBlock4(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.conv0 = PlainConv(cin, cout, 2) if first else SeparableConv(cin, cout, 2)
        self.conv1, self.conv2, self.conv3 = SeparableConv(cout, cout), SeparableConv(cout, cout), SeparableConv(cout, cout)

    def forward(self, x):
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


class FaceLandmarkNet(nn.Module):
    """(B, 3, 112, 112) normalised, square-padded faces -> (B, 68, 2) landmarks in [0, 1] of the
    padded square (x, y)."""

    def __init__(self):
        super().__init__()
        self.dense0 = DenseBlock4(3, 32, first=True)
        self.dense1, self.dense2, self.dense3 = DenseBlock4(32, 64), DenseBlock4(64, 128), DenseBlock4(128, 256)
        self.fc = nn.Linear(256, 136)

    def forward(self, x):
        x = self.dense3(self.dense2(self.dense1(self.dense0(x))))  # (B, 256, 7, 7)
        x = F.avg_pool2d(x, 7, 2).flatten(1)
        return self.fc(x).view(-1, 68, 2)


def landmark_state_dict_from_tfjs(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """face-api's face_landmark_68_model weights -> FaceLandmarkNet's state dict."""
    take, out = _taker(weights, FaceLandmarkNet().state_dict(), "face_landmark_68_model")

    take("dense0/conv0/filters", "dense0.conv0.conv.weight", lambda a: a.transpose(3, 2, 0, 1))
    take("dense0/conv0/bias", "dense0.conv0.conv.bias")
    for b in range(4):
        for c in range(4):
            if b == 0 and c == 0:
                continue
            key = f"dense{b}.conv{c}"
            take(f"dense{b}/conv{c}/depthwise_filter", f"{key}.depthwise.weight", lambda a: a.transpose(2, 3, 0, 1))
            take(f"dense{b}/conv{c}/pointwise_filter", f"{key}.pointwise.weight", lambda a: a.transpose(3, 2, 0, 1))
            take(f"dense{b}/conv{c}/bias", f"{key}.pointwise.bias")
    take("fc/weights", "fc.weight", lambda a: a.T)
    take("fc/bias", "fc.bias")
    return out


def load_face_landmark_net(manifest: str | Path) -> FaceLandmarkNet:

    net = FaceLandmarkNet()
    net.load_state_dict(landmark_state_dict_from_tfjs(read_tfjs_weights(manifest)))
    return net.eval()


class LandmarksFromPixels(nn.Module):
    """uint8 (N, 112, 112, 3) photos -> (N, 68, 2) landmarks in [0, 1], face-api's normalisation
    included: what data/align.py runs in PyTorch and what ONNX exports carry as landmarks.onnx."""

    def __init__(self, net: FaceLandmarkNet):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, image):
        return self.net((image.permute(0, 3, 1, 2).float() - self.mean) / 255)
