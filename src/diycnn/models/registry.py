"""The built-in recipes, listed once: each one's name, what it is for, its family and its training
defaults. Everything else that names recipes is derived from here: `RECIPE_NAMES`, the guide in
`--help` and the web app, `PRETRAINED_RECIPES`, the recipes on cached features, auto's order and
the error messages. models/recipes.py builds the models from these entries.

This module imports no PyTorch and no image library: the CLI's help and its early checks read it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..settings import DEFAULT_MODEL, STANDARD_AUGMENT, TrainingPlan, suggest

# The families: what a recipe trains, which decides what it costs and what it can tell.
FROM_SCRATCH = "from scratch"  # the whole network, from random weights
CACHED_FEATURES = "cached features"  # a head on a frozen pretrained network's features, computed once per photo
FINE_TUNED = "fine-tuned"  # a pretrained network trained with its head on the photos

# The blog trained with Keras' Adam defaults and no early stopping; batch 32 is Keras' default.
SPEC_DEFAULTS: dict[str, Any] = {"epochs": 30, "batch_size": 32, "lr": 1e-3, "patience": None, "optimizer": "adam",
                                 "schedule": "constant", "augment": None, "shuffle": True, "frozen": False}
# Keras trains in float32 unless a mixed-precision policy is set, and so did the blog. The blog's model
# and Keras-style spec files keep that on CPUs (`--precision bf16` still asks for bf16): in bf16 one
# step's gradient is 4-22% away from float64's in diycnn and in Keras alike, against 0.1% in fp32
# (bench/keras_parity.py; docs/results.md, "Learning as in Keras", says what that did to accuracy).
KERAS_DEFAULTS: dict[str, Any] = {**SPEC_DEFAULTS, "cpu_precision": "fp32"}


@dataclasses.dataclass(frozen=True)
class RecipeEntry:
    """One built-in recipe: `--model NAME`."""

    name: str
    about: str  # one line, for --help and the web app
    family: str  # FROM_SCRATCH, CACHED_FEATURES or FINE_TUNED
    faces: bool  # trained on aligned faces (the face-recognition network)
    defaults: dict[str, Any]  # training defaults: SPEC_DEFAULTS's keys and TrainingPlan's fields
    auto_order: int | None = None  # where auto tries it (faces first on photos of people); None: never

    @property
    def pretrained(self) -> bool:
        return self.family != FROM_SCRATCH

    @property
    def cached_features(self) -> bool:
        return self.family == CACHED_FEATURES


_FACE_AUGMENT = {"random_resized_crop": {"scale": [0.8, 1.0], "ratio": [0.9, 1.1111]}, "horizontal_flip": True,
                 "rotation": 10, "color_jitter": 0.1}

REGISTRY: dict[str, RecipeEntry] = {e.name: e for e in (
    RecipeEntry("seed-cnn", "the blog's exact Keras CNN, trained from scratch (Adam, no early stopping)",
                FROM_SCRATCH, False, dict(KERAS_DEFAULTS)),
    RecipeEntry("seed-cnn-plus", "a deeper CNN from scratch: batch norm, augmentation, AdamW, cosine schedule",
                FROM_SCRATCH, False,
                {**SPEC_DEFAULTS, "epochs": 60, "lr": 3e-3, "optimizer": "adamw", "weight_decay": 0.05,
                 "schedule": "cosine", "warmup_epochs": 2, "label_smoothing": 0.1,
                 # No early stopping: on small validation splits it stopped too soon (kpop_idols:
                 # 0.111 test accuracy with patience 15, 0.167 running the full cosine schedule).
                 "patience": None,
                 "augment": {"random_resized_crop": {"scale": [0.35, 1.0], "ratio": [0.75, 1.3333]},
                             "horizontal_flip": True, "color_jitter": 0.2}},
                auto_order=6),
    RecipeEntry("tm", "Teachable Machine's recipe: a small head on frozen ImageNet features (EfficientNet-Lite0)",
                CACHED_FEATURES, False,
                {**SPEC_DEFAULTS, "epochs": 50, "batch_size": 16, "lr": 1e-3, "shuffle": "once", "frozen": True},
                auto_order=3),
    RecipeEntry("linear-probe", "a linear classifier on frozen ImageNet features, early-stopped",
                CACHED_FEATURES, False,
                {**SPEC_DEFAULTS, "epochs": 100, "batch_size": 32, "lr": 1e-3, "optimizer": "adamw",
                 "weight_decay": 1e-4, "patience": 10, "frozen": True},
                auto_order=4),
    RecipeEntry("finetune", "the ImageNet backbone itself fine-tuned (slower; best for non-face photos)",
                FINE_TUNED, False,
                {**SPEC_DEFAULTS, "epochs": 10, "batch_size": 32, "lr": 5e-5, "optimizer": "adamw",
                 "weight_decay": 0.02, "schedule": "cosine", "warmup_epochs": 1, "label_smoothing": 0.0,
                 "lp_init": True,
                 # When frozen features already separate the classes (linear-probe val accuracy >=
                 # 0.9) fine-tune gently; otherwise (e.g. telling faces apart with ImageNet
                 # features) adapt more of the network: these settings replace the gentle ones.
                 "adapt_below": 0.9,
                 "adapt": {"freeze_fraction": 0.3, "lr": 3e-4, "epochs": 15, "patience": 15},
                 "layer_decay": 0.6, "freeze_fraction": 0.7, "patience": 4, "augment": STANDARD_AUGMENT,
                 "tta": True,
                 "cpu_precision": "fp32"},  # measured: bf16 backward of depthwise convs is slower on CPUs
                auto_order=5),
    RecipeEntry("face-probe", "people: faces cropped and aligned, a classifier on face-recognition features",
                CACHED_FEATURES, True,
                {**SPEC_DEFAULTS, "epochs": 200, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw",
                 "weight_decay": 1e-2, "patience": 20, "frozen": True},
                auto_order=1),
    RecipeEntry("face-finetune", "people: the face-recognition network itself fine-tuned (slower)",
                FINE_TUNED, True,
                {**SPEC_DEFAULTS, "epochs": 15, "batch_size": 32, "lr": 1e-4, "optimizer": "adamw",
                 "weight_decay": 1e-2, "schedule": "cosine", "warmup_epochs": 1, "patience": 5,
                 "lp_init": True, "freeze_fraction": 0.6, "augment": _FACE_AUGMENT,
                 # its frozen stages run once per view of a photo, not in every step (training/trunk.py)
                 "trunk_views": 8},
                auto_order=2),
)}

for _entry in REGISTRY.values():  # every default is a field of the plan a run trains with
    TrainingPlan.check_defaults(_entry.defaults, where=f"recipe {_entry.name}")

RECIPE_NAMES = tuple(REGISTRY)
PRETRAINED_RECIPES = tuple(n for n, e in REGISTRY.items() if e.pretrained)
CACHED_FEATURE_RECIPES = tuple(n for n, e in REGISTRY.items() if e.cached_features)
FACE_RECIPES = tuple(n for n, e in REGISTRY.items() if e.faces)
# auto's plan: every candidate in its order (the face recipes only on photos of people)
AUTO_ORDER = tuple(sorted((n for n, e in REGISTRY.items() if e.auto_order is not None),
                          key=lambda n: REGISTRY[n].auto_order or 0))
MODEL_CHOICES = (DEFAULT_MODEL, *RECIPE_NAMES)  # what --model, the API and the app accept (besides spec files)


def listing(names: tuple[str, ...] = CACHED_FEATURE_RECIPES) -> str:
    """'tm, linear-probe, face-probe': recipe names for a message."""
    return ", ".join(names)


def guide(name: str) -> dict[str, Any]:
    """What --help and the web app say about a recipe: its line and main defaults."""
    e = REGISTRY[name]
    return {"about": e.about, "family": e.family, **{k: e.defaults.get(k) for k in GUIDE_KEYS}}


GUIDE_KEYS = ("epochs", "batch_size", "lr", "patience")
RECIPE_GUIDE: dict[str, dict[str, Any]] = {name: guide(name) for name in REGISTRY}


def recipe_defaults_help(key: str) -> str:
    """'default: the recipe's -- seed-cnn 30, tm 50, ...' for one of epochs/batch_size/lr/patience."""
    def shown(v: Any) -> str:
        return "off" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
    return "default: the recipe's -- " + ", ".join(f"{n} {shown(g[key])}" for n, g in RECIPE_GUIDE.items())


def is_spec_file(model: str) -> bool:
    return Path(model).suffix.lower() in (".yaml", ".yml", ".json")


def unknown_model(model: str) -> ValueError:
    return ValueError(
        f"Unknown model '{model}'.{suggest(model, MODEL_CHOICES)} Built-in recipes: "
        f"{', '.join(RECIPE_NAMES)}, {DEFAULT_MODEL}; or pass a .yaml/.json Keras-style spec file."
    )


def check_model_name(model: str) -> None:
    """Fail fast, before any photo is read, on a model that is neither a recipe nor a spec file.

    Raises:
        ValueError: unknown name (with the closest built-in).
        FileNotFoundError: a spec file path that does not exist.
    """
    if model in MODEL_CHOICES or Path(model).is_file():
        return
    if is_spec_file(model):
        raise FileNotFoundError(f"Model spec file '{model}' does not exist. Pass a .yaml/.json spec, or a built-in "
                                f"recipe: {', '.join(MODEL_CHOICES[1:])}, {DEFAULT_MODEL}.")
    raise unknown_model(model)


def needs_cached_features(what: str, recipe: str, instead: str) -> ValueError:
    """The error for an option only recipes on cached features support."""
    return ValueError(f"{what} needs a recipe on cached features ({listing()}); '{recipe}' trains the whole network"
                      f", so {instead}")
