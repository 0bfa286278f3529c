"""Built-in recipes and spec files: a model, how photos are prepared, and how to train it.

| recipe         | model                                        | training                                     |
|----------------|----------------------------------------------|----------------------------------------------|
| seed-cnn       | the blog's Keras CNN, exactly                 | Adam (Keras defaults), 30 epochs, batch 32   |
| seed-cnn-plus  | a from-scratch CNN built for small data       | augmentation, AdamW + cosine, label smoothing |
| tm             | Teachable Machine: frozen backbone + Dense(100) + Dense(n, no bias) | Adam 1e-3, 50 epochs, batch 16, no augmentation |
| linear-probe   | frozen backbone + linear softmax head         | AdamW on cached features, early stopping     |
| finetune       | whole backbone + new head                     | augmentation, AdamW, warm-up + cosine, layer-wise LR decay, label smoothing, early stopping |
| face-probe     | frozen face-recognition net (128-d descriptors) + linear softmax head | AdamW on cached descriptors, L2 (weight decay), early stopping |
| face-finetune  | the face-recognition net, later stages trained, + linear head | face augmentation (mild crop, small rotation, mild colour, mirror; no vertical flip), AdamW, small LR, cosine, early stopping |
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from ..data.images import Preprocessing
from ..io import shown
from .catalog import BACKBONE_FACTS, DEFAULT_BACKBONE, FACE_BACKBONE, backbone_preprocessing
from .layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
    Rescaling,
)
from .registry import KERAS_DEFAULTS, REGISTRY, SPEC_DEFAULTS, is_spec_file, unknown_model
from .sequential import Sequential, read_spec_file


@dataclasses.dataclass
class Recipe:
    """What `--model NAME` means: the model, how photos are prepared, and training defaults."""

    name: str
    spec: Sequential  # the whole model (kind "spec") or the head on backbone features (kind "backbone")
    preprocessing: Preprocessing
    defaults: dict[str, Any]
    kind: str = "spec"
    backbone: str | None = None
    source: str = "built-in"

    def build(self, seed: int | None = None):
        """The torch module with fresh weights (a backbone's pretrained weights are loaded separately)."""
        if self.kind == "spec":
            return self.spec.build(seed=seed)
        # PyTorch (and timm) load here, when a model is built: naming a recipe or summarising it needs neither
        from .backbones import BackboneClassifier, create_backbone  # noqa: PLC0415 (lazy: loads torch)

        backbone = create_backbone(self.backbone)
        return BackboneClassifier(backbone, self.spec.build(seed=seed))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "backbone": self.backbone, "source": self.source,
                "spec": self.spec.get_config(), "preprocessing": self.preprocessing.to_dict(),
                "defaults": self.defaults}


def seed_cnn(num_classes: int = 2) -> Sequential:
    """The blog's model, layer for layer (100x100x3 input, 35.9M parameters for 2 classes)."""
    return Sequential([
        Input(shape=(100, 100, 3)),
        Conv2D(512, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Conv2D(256, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(256, activation="relu"),
        Dropout(0.5),
        Dense(128, activation="relu"),
        Dropout(0.5),
        Dense(32, activation="relu"),
        Dropout(0.5),
        Dense(num_classes, activation="softmax"),
    ], name="seed-cnn")


def seed_cnn_plus(num_classes: int = 2) -> Sequential:
    """The blog's 'stack your own layers' done right for small data: conv-BN-ReLU blocks,
    global average pooling instead of a 34.7M-parameter Flatten->Dense, light dropout."""
    layers: list = [Input(shape=(112, 112, 3))]
    for filters in (32, 64, 128):
        for _ in range(2):
            layers += [Conv2D(filters, (3, 3), padding="same", use_bias=False), BatchNormalization(),
                       Activation("relu")]
        layers.append(MaxPooling2D((2, 2)))
    layers += [Conv2D(256, (3, 3), padding="same", use_bias=False), BatchNormalization(), Activation("relu"),
               GlobalAveragePooling2D(), Dropout(0.3), Dense(num_classes, activation="softmax")]
    return Sequential(layers, name="seed-cnn-plus")


def _seed_cnn_recipe(num_classes: int, **_) -> Recipe:
    spec = seed_cnn(num_classes)
    return Recipe("seed-cnn", spec, preprocessing_for_spec(spec), dict(REGISTRY["seed-cnn"].defaults))


def _seed_cnn_plus_recipe(num_classes: int, **_) -> Recipe:
    spec = seed_cnn_plus(num_classes)
    # Decode at 128x128 (squashed) and crop 112: random crops for training, the centre for evaluation.
    prep = Preprocessing(size=(128, 128), crop=(112, 112))
    return Recipe("seed-cnn-plus", spec, prep, dict(REGISTRY["seed-cnn-plus"].defaults))


def _head(name: str, features: int, num_classes: int, kind: str) -> Sequential:
    if kind == "tm":  # Teachable Machine: Dense(100, relu) -> Dense(n, softmax, no bias)
        layers = [Dense(100, activation="relu"), Dense(num_classes, activation="softmax", use_bias=False)]
    elif kind == "finetune":
        layers = [Dropout(0.2), Dense(num_classes, activation="softmax")]
    else:
        layers = [Dense(num_classes, activation="softmax")]
    return Sequential([Input(shape=(features,))] + layers, name=f"{name}-head")


def _backbone_recipe(kind: str, num_classes: int, backbone: str | None = None, **_) -> Recipe:
    name = backbone or DEFAULT_BACKBONE
    features = backbone_fact(name, "features")
    head = _head(kind, features, num_classes, kind)
    defaults = dict(REGISTRY[kind].defaults)
    if kind == "tm":
        prep = backbone_preprocessing(name, mode="square")
    elif kind == "linear-probe":
        prep = backbone_preprocessing(name, scale=288 / 224)  # measured: higher-resolution features probe better
    else:
        prep = backbone_preprocessing(name, scale=288 / 224)  # train at 224, evaluate at 288 (FixRes)
        defaults["augment"] = {**defaults["augment"], "size": list(backbone_preprocessing(name).output_size)}
    return Recipe(kind, head, prep, defaults, kind="backbone", backbone=name)


def backbone_fact(name: str, fact: str) -> int:
    """The classifier-less backbone's pooled "features" or "params": from the catalog when it knows
    (neither PyTorch nor timm is imported), else from the network, built to ask it (architecture only)."""
    if name in BACKBONE_FACTS:
        return BACKBONE_FACTS[name][fact]
    from .backbones import create_backbone  # noqa: PLC0415 (lazy: loads torch)

    net = create_backbone(name)
    return net.num_features if fact == "features" else sum(p.numel() for p in net.parameters())


class FaceLandmarks:
    """face-api's landmark network in PyTorch, loaded when the first face is aligned (PyTorch and the
    weights load then, not when a recipe is named). Each face recipe, and so each run loaded from
    one, owns its own: nothing about alignment is process-wide (data/align.LandmarkRunner)."""

    def __init__(self):
        self._run = None
        self._lock = threading.Lock()

    def __call__(self, x_u8):  # uint8 (1, 112, 112, 3) -> (68, 2) in [0, 1]
        with self._lock:
            if self._run is None:
                from .backbones import face_landmark_runner  # noqa: PLC0415 (lazy: loads torch)

                self._run = face_landmark_runner()
        return self._run(x_u8)


def with_landmarks(prep: Preprocessing) -> Preprocessing:
    """`prep`, carrying its own landmark network when it aligns faces."""
    return dataclasses.replace(prep, landmarks=FaceLandmarks()) if prep.align and prep.landmarks is None else prep


def _face_recipe(kind: str, num_classes: int, **_) -> Recipe:
    """The face recipes: face-api's recognition network (backbones.FACE_BACKBONE) as a frozen
    descriptor (face-probe) or partly fine-tuned (face-finetune), with a linear softmax head.
    Descriptors are small numbers (norm ~1.3), so the head scales them by 10 first."""
    head = Sequential([Input(shape=(backbone_fact(FACE_BACKBONE, "features"),)), Rescaling(10.0),
                       Dense(num_classes, activation="softmax")], name=f"{kind}-head")
    prep = with_landmarks(backbone_preprocessing(FACE_BACKBONE))
    defaults = dict(REGISTRY[kind].defaults)
    return Recipe(kind, head, prep, defaults, kind="backbone", backbone=FACE_BACKBONE)


# How each registered recipe is built (models/registry.py lists them, with their defaults).
RECIPES = {
    "seed-cnn": _seed_cnn_recipe,
    "seed-cnn-plus": _seed_cnn_plus_recipe,
    "tm": lambda n, **kw: _backbone_recipe("tm", n, **kw),
    "linear-probe": lambda n, **kw: _backbone_recipe("linear-probe", n, **kw),
    "finetune": lambda n, **kw: _backbone_recipe("finetune", n, **kw),
    "face-probe": lambda n, **kw: _face_recipe("face-probe", n, **kw),
    "face-finetune": lambda n, **kw: _face_recipe("face-finetune", n, **kw),
}
assert tuple(RECIPES) == tuple(REGISTRY), "every registered recipe has a builder, in the registry's order"


def preprocessing_for_spec(spec: Sequential) -> Preprocessing:
    """Photos are squashed to the Input size; pixels in [0, 1] unless the spec rescales them itself."""
    h, w, _ = spec.input_shape
    return Preprocessing(size=(h, w), input_scale=1.0 if spec.starts_with_rescaling else 1.0 / 255.0)


def get_recipe(model: str, num_classes: int = 2, backbone: str | None = None) -> Recipe:
    """Resolve `--model`: a built-in recipe name or a spec file.

    Raises:
        ValueError: unknown name (with the closest built-in).
        FileNotFoundError: a spec file path that does not exist.

    Example:
        >>> get_recipe("seed-cnn", 2).spec.count_params()
        35900130
    """
    if model in RECIPES:
        return RECIPES[model](num_classes, backbone=backbone)
    if is_spec_file(model) or Path(model).is_file():
        spec = read_spec_file(model, num_classes=num_classes)
        spec.check_classifier(num_classes)
        if len(spec.input_shape) != 3:
            raise ValueError(f"Model spec '{model}' must start with an image Input(shape=(H, W, 3)).")
        return Recipe(spec.name, spec, preprocessing_for_spec(spec), dict(KERAS_DEFAULTS), source=str(model))
    raise unknown_model(model)


def saved_backbone(name: Any) -> str | None:
    """A backbone name read from a run folder (someone else's, perhaps): the face network or a
    name timm registers, as diycnn trains them. A hub or folder name ("hf-hub:org/model",
    "local-dir:/path") would make loading the run reach the network or read files elsewhere, and
    no diycnn run names one (`--backbone` takes names timm registers), so it is refused.

    Raises:
        ValueError: any other name, quoted (shortened).
    """

    if name is None or name == FACE_BACKBONE or name in BACKBONE_FACTS:
        return name
    if isinstance(name, str) and ":" not in name and "/" not in name and len(name) <= 200:
        import timm  # noqa: PLC0415 (lazy: loads timm and torch)

        if timm.is_model(name):
            return name
    raise ValueError(f"the backbone {shown(name)} is not one diycnn builds from a run folder (only the face network "
                     "and names timm registers, as diycnn trains them; a 'hf-hub:' or 'local-dir:' name would fetch or "
                     "read files from elsewhere when the run is loaded). The run was not made by diycnn.")


def recipe_from_saved(model_info: dict[str, Any], num_classes: int) -> Recipe:
    """Rebuild a recipe from the `model` entry of a run's model.json (its backbone, if any, checked
    by `saved_backbone`)."""
    spec = Sequential.from_config(model_info["spec"], num_classes=num_classes, where="model.json spec")
    spec.check_classifier(num_classes)
    prep = with_landmarks(Preprocessing.from_dict(model_info["preprocessing"]))
    return Recipe(model_info["name"], spec, prep, dict(model_info.get("defaults", SPEC_DEFAULTS)),
                  kind=model_info.get("kind", "spec"), backbone=saved_backbone(model_info.get("backbone")),
                  source=model_info.get("source", "built-in"))
