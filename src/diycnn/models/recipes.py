"""Built-in models ("recipes") and spec files: a model, its preprocessing and training defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..data.images import Preprocessing
from ..settings import suggest
from .layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from .sequential import Sequential, read_spec_file


@dataclasses.dataclass
class Recipe:
    """What `--model NAME` means: the model, how photos are prepared, and training defaults."""

    name: str
    spec: Sequential
    preprocessing: Preprocessing
    defaults: dict[str, Any]  # epochs, batch_size, lr, patience
    source: str = "built-in"  # or the spec file's path


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


# The blog trained with Keras' Adam defaults and no early stopping; batch 32 is Keras' default.
SPEC_DEFAULTS = {"epochs": 30, "batch_size": 32, "lr": 1e-3, "patience": None}

BUILTIN: dict[str, Callable[[int], Sequential]] = {"seed-cnn": seed_cnn}


def preprocessing_for_spec(spec: Sequential) -> Preprocessing:
    """Photos are squashed to the Input size; pixels in [0, 1] unless the spec rescales them itself."""
    h, w, _ = spec.input_shape
    return Preprocessing(size=(h, w), input_scale=1.0 if spec.starts_with_rescaling else 1.0 / 255.0)


def is_spec_file(model: str) -> bool:
    return Path(model).suffix.lower() in (".yaml", ".yml", ".json")


def get_recipe(model: str, num_classes: int = 2) -> Recipe:
    """Resolve `--model`: a built-in name or a spec file.

    Raises:
        ValueError: unknown name (with the closest built-in).
        FileNotFoundError: a spec file path that does not exist.

    Example:
        >>> get_recipe("seed-cnn", 2).spec.count_params()
        35900130
    """
    if model in BUILTIN:
        spec = BUILTIN[model](num_classes)
        return Recipe(model, spec, preprocessing_for_spec(spec), dict(SPEC_DEFAULTS))
    if is_spec_file(model) or Path(model).is_file():
        spec = read_spec_file(model, num_classes=num_classes)
        spec.check_classifier(num_classes)
        return Recipe(spec.name, spec, preprocessing_for_spec(spec), dict(SPEC_DEFAULTS), source=str(model))
    raise ValueError(
        f"Unknown model '{model}'.{suggest(model, BUILTIN)} Built-in models: {', '.join(BUILTIN)}; "
        "or pass a .yaml/.json Keras-style spec file."
    )


def recipe_from_saved(model_info: dict[str, Any], num_classes: int) -> Recipe:
    """Rebuild a recipe from the `model` entry of a run's model.json."""
    spec = Sequential.from_config(model_info["spec"], num_classes=num_classes, where="model.json spec")
    spec.check_classifier(num_classes)
    prep = Preprocessing.from_dict(model_info["preprocessing"])
    return Recipe(model_info["name"], spec, prep, dict(model_info.get("defaults", SPEC_DEFAULTS)),
                  source=model_info.get("source", "built-in"))
