"""Typed training settings and the one place where defaults, a config file and flags merge."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml

from .io import shown

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# A loaded run predicts in fp32 unless asked otherwise, so a run and its exports (fp32 everywhere) give
# the same probabilities on every CPU; bf16 is faster where the CPU has it, and differs by up to a few points.
INFERENCE_PRECISION = "fp32"
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODEL = "auto"  # what `diycnn train`, `diycnn.train` and the web app train with no model named
DEFAULT_VAL_SPLIT = 0.15  # the share of each class held out for validation,
DEFAULT_TEST_SPLIT = 0.15  # and for the test
DEFAULT_BUDGET_MINUTES = 3.0  # what auto may spend when no budget is given (bench/default_pipeline.py)


def suggest(name: object, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


# What `augment: standard` means in a recipe (recorded in model.json; data/augment.py applies it).
STANDARD_AUGMENT = {"random_resized_crop": {"scale": [0.25, 1.0], "ratio": [0.75, 1.3333]},
                    "horizontal_flip": True, "color_jitter": 0.2}


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, the model file it writes, what it is for (the app's label), and
    whether its snippet is Python (the others: JavaScript). exports/driver.py has its writer."""

    name: str
    model_file: str
    label: str
    python: bool
    float_input: bool = False  # fed float32 pixels scaled as its steps say (the others: uint8)


# The export formats, listed once. keras rebuilds Keras-style layers, so it applies only to runs of
# Keras-style spec models (the blog's CNN, seed-cnn-plus, spec files); tfjs and tm (TF.js with
# Teachable Machine's files and pixel scaling) also to runs on the EfficientNet-Lite backbones and
# the face network (exports/tfjs_backbone.py); on other backbones tm is ONNX with TM's files.
TFJS_MODEL_FILE = "model.json"  # TensorFlow.js's model file (a tm export in TF.js writes it too)
EXPORTS = {f.name: f for f in (
    ExportFormat("onnx", "model.onnx", "ONNX (Python, C#, Java, C++... with onnxruntime)", python=True),
    ExportFormat("torchscript", "model.torchscript.pt", "TorchScript (PyTorch)", python=True),
    ExportFormat("keras", "model.keras", "Keras 3 (.keras)", python=True, float_input=True),
    ExportFormat("tm", "model.onnx", "Teachable Machine (tmImage.load; TF.js where the run allows, else ONNX)",
                 python=True),
    ExportFormat("tfjs", TFJS_MODEL_FILE, "TensorFlow.js (browser, Node.js)", python=False, float_input=True),
    ExportFormat("webpage", "index.html", "Web page (webcam and photos, any static host, offline)", python=False),
)}
EXPORT_FORMATS = tuple(EXPORTS)
FACE_BACKBONE = "face_recognition_net"  # face-api.js's face-recognition ResNet (models/face_net.py)
FACE_MEAN_RGB = (122.782, 117.001, 104.298)  # its input: RGB minus this mean, / 255,
FACE_INPUT_SIZE = 150  # at 150x150
TFJS_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2", "tf_efficientnet_lite3",
                  "tf_efficientnet_lite4", "efficientnet_lite0", FACE_BACKBONE)


def export_formats_for(kind: str | None, backbone: str | None = None, faces: bool = False) -> list[str]:
    """The export formats for a run whose model.json says `model.kind` is `kind` on `model.backbone`;
    `faces`: its preprocessing crops or aligns faces (which the web page cannot do in the browser).

    Example:
        >>> export_formats_for("backbone", "face_recognition_net")
        ['onnx', 'torchscript', 'tm', 'tfjs']
        >>> export_formats_for("backbone", "convnext_tiny")
        ['onnx', 'torchscript', 'tm']
        >>> export_formats_for("spec")
        ['onnx', 'torchscript', 'keras', 'tm', 'tfjs', 'webpage']
    """
    tfjs = kind == "spec" or (kind == "backbone" and backbone in TFJS_BACKBONES)
    applies = {"keras": kind == "spec", "tfjs": tfjs, "webpage": tfjs and backbone != FACE_BACKBONE and not faces}
    return [f for f in EXPORT_FORMATS if applies.get(f, True)]


def check_keys(given: dict[Any, Any], allowed: Collection[str], where: str) -> None:
    """Raise ValueError naming the first key of `given` not in `allowed`, with a suggestion."""
    for key in given:
        if key not in allowed:
            raise ValueError(
                f"Unknown setting {shown(key)} in {where}.{suggest(key, allowed) if len(str(key)) <= 100 else ''} "
                f"Valid settings: {', '.join(sorted(allowed))}."
            )


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the user decides about a run (flags, a config file, keyword arguments, the web app).

    `None` means "the recipe's default" for epochs, batch_size, lr, patience and the recipe knobs.
    The run itself trains with a TrainingPlan: the recipe's defaults with these over them.
    """

    model: str = DEFAULT_MODEL
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    val_split: float = DEFAULT_VAL_SPLIT
    test_split: float = DEFAULT_TEST_SPLIT
    val_as_test: bool = False  # split folders: the given val folder becomes the test split
    patience: int | None = None
    device: str = "auto"
    precision: str = "auto"
    backbone: str | None = None  # timm name for backbone recipes (default tf_efficientnet_lite0)
    weights: str | None = None  # pretrained backbone weights file
    tta: bool | None = None  # test-time augmentation (mirror) for image models; None: the recipe decides
    budget: float | None = None  # minutes, for --model auto
    max_minutes: float | None = None  # stop training after this long (keeping the best or last weights)
    crop: str | None = None  # "faces": crop the largest face before training and prediction
    no_face: str = "keep"  # with crop=faces: "keep" the whole photo or "skip" it
    near_duplicates: bool = True  # find near-identical photos: grouped by the split, left out across splits
    suspects: bool | None = None  # suspect labels from out-of-fold predictions; None: where features are cached
    cross_validate: bool | None = None  # K-fold accuracy over all photos; None: on cached features, small test splits
    calibrate: bool = True  # temperature scaling on held-out photos (evaluation/calibration.py)
    unknown: bool = True  # "none of these": photos far from every class are called unknown (evaluation/open_set.py)
    unknown_folder: str | None = None  # photos of none of the classes, any layout: a cohort that sharpens the score
    # Recipe knobs; None keeps the recipe's own value (recorded in model.json either way).
    optimizer: str | None = None  # "adam" or "adamw"
    weight_decay: float | None = None
    schedule: str | None = None  # "constant" or "cosine"
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    layer_decay: float | None = None
    freeze_fraction: float | None = None  # backbone recipes: earliest fraction of layers kept frozen
    # fine-tuning with frozen early stages: augmented views of each training photo put through them
    # once before training (training/trunk.py); 0: every step runs the whole network
    trunk_views: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"epochs must be a whole number >= 1, received {shown(self.epochs)}.")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1, received {shown(self.batch_size)}.")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, received {shown(self.lr)}.")
        if self.trunk_views is not None and (isinstance(self.trunk_views, bool) or not isinstance(self.trunk_views, int)
                                             or self.trunk_views < 0):
            raise ValueError(f"trunk_views must be a whole number >= 0 (or unset), received {shown(self.trunk_views)}.")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a whole number >= 1 (or unset), received {shown(self.patience)}.")
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"{name} must be a fraction between 0 and 1 (exclusive), received {shown(value)}.")
        if self.val_split + self.test_split >= 0.9:
            raise ValueError(
                f"val_split + test_split = {self.val_split + self.test_split:.2f} leaves too little to train on; "
                "keep their sum below 0.9."
            )
        if self.max_minutes is not None and not (isinstance(self.max_minutes, (int, float)) and self.max_minutes > 0):
            raise ValueError(f"max_minutes must be a positive number, received {shown(self.max_minutes)}.")
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and self.budget > 0):
            raise ValueError(f"budget must be a positive number of minutes, received {shown(self.budget)}.")
        if self.crop not in (None, "faces"):
            raise ValueError(f"crop must be 'faces' or unset, received {shown(self.crop)}.")
        for name in ("near_duplicates", "val_as_test", "calibrate", "unknown"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, received {shown(getattr(self, name))}.")
        for name in ("suspects", "cross_validate"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true, false or unset, received {shown(getattr(self, name))}.")
        if self.unknown_folder is not None and not (isinstance(self.unknown_folder, str) and self.unknown_folder):
            raise ValueError(f"unknown_folder must be a folder's path (or unset), received {shown(self.unknown_folder)}.")
        if self.unknown_folder is not None and not self.unknown:
            raise ValueError("unknown_folder needs unknown (drop --no-unknown, or the unknown folder).")
        if self.no_face not in ("keep", "skip"):
            raise ValueError(f"no_face must be 'keep' or 'skip', received {shown(self.no_face)}.")
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', received {shown(self.optimizer)}.")
        if self.schedule not in (None, "constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', received {shown(self.schedule)}.")
        for name in ("label_smoothing", "freeze_fraction"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), received {shown(value)}.")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, received {shown(self.device)}.{suggest(self.device, DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}, received {shown(self.precision)}.{suggest(self.precision, PRECISIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> "TrainSettings":
        names = [f.name for f in dataclasses.fields(cls)]
        check_keys(values, names, where)
        return cls(**values)


# Every recipe sets these (models/recipes.py SPEC_DEFAULTS): a plan records them even when None.
RECIPE_KNOBS = ("epochs", "batch_size", "lr", "patience", "optimizer", "schedule", "augment", "shuffle", "frozen")
ADAPTABLE = ("freeze_fraction", "lr", "epochs", "patience")  # what a recipe's `adapt` may replace


@dataclasses.dataclass(frozen=True)
class TrainingPlan(TrainSettings):
    """How one run trains: its recipe's defaults with the user's TrainSettings over them (None there
    keeps the recipe's value). Made once when the run starts, recorded in model.json as "training"
    (`record`), read back on resume (`from_record`); it never changes. When a recipe's LP-FT finds
    the frozen features weak (`adapt_below`), `adapted_plan()` is a new plan with its `adapt` settings.
    """

    # Every plan has these (the recipe sets them; `validate` checks): no longer "the recipe's default".
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    augment: dict[str, Any] | None = None  # data/augment.py's settings; None: no augmentation
    shuffle: bool | str = True  # True: every epoch; "once": one fixed order (Teachable Machine's)
    frozen: bool = False  # the backbone is frozen: its features are computed once and cached
    lp_init: bool = False  # fit the head on frozen features before fine-tuning (LP-FT)
    adapt_below: float | None = None  # LP-FT val accuracy under which `adapt` replaces these settings
    adapt: dict[str, Any] | None = None  # e.g. {"freeze_fraction": 0.3, "lr": 3e-4} (only ADAPTABLE keys)
    adapted: bool = False  # `adapt` was applied
    cpu_precision: str | None = None  # the recipe's precision on CPUs where "auto" would pick bf16

    def validate(self) -> None:
        super().validate()
        for name in RECIPE_KNOBS[:3]:
            if getattr(self, name) is None:
                raise ValueError(f"A training plan needs {name} (the recipe sets it).")
        if self.adapt is not None:
            check_keys(self.adapt, ADAPTABLE, "the recipe's adapt settings")
        if self.shuffle not in (True, False, "once"):
            raise ValueError(f"shuffle must be true, false or 'once', received {shown(self.shuffle)}.")

    @classmethod
    def check_defaults(cls, defaults: dict[str, Any], where: str) -> None:
        """A recipe's defaults name only fields of the plan (models/registry.py checks each recipe).

        Raises:
            ValueError: the first unknown key, with the closest field.
        """
        check_keys(defaults, [f.name for f in dataclasses.fields(cls)], f"the defaults of {where}")

    @classmethod
    def merge(cls, defaults: dict[str, Any], settings: TrainSettings) -> "TrainingPlan":
        """The recipe's `defaults` with the user's settings over them. What the user set explicitly
        is never replaced by the recipe's adaptive settings; a weights file is made absolute."""
        check_keys(defaults, [f.name for f in dataclasses.fields(cls)], "the recipe's defaults")
        values = {**defaults, **{k: v for k, v in settings.to_dict().items() if v is not None}}
        if values.get("adapt"):
            values["adapt"] = {k: v for k, v in values["adapt"].items() if getattr(settings, k, None) is None}
        if values.get("weights"):
            values["weights"] = str(Path(values["weights"]).resolve())
        return cls(**values)

    def adapted_plan(self) -> "TrainingPlan":
        """This plan with its `adapt` settings applied (and `adapt` used up)."""
        return dataclasses.replace(self, **(self.adapt or {}), adapt=None, adapted=True)

    def record(self) -> dict[str, Any]:
        """model.json's "training": every setting that has a value (the recipe's main knobs even when
        None, e.g. patience None = no early stopping; the recipe's own knobs only when set)."""
        own = {f.name: f.default for f in dataclasses.fields(self) if f.name not in _SETTINGS_FIELDS}
        out = {}
        for name, value in self.to_dict().items():
            if name not in RECIPE_KNOBS and (value is None or (name in own and value == own[name])):
                continue
            out[name] = value
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TrainingPlan":
        """The plan of a run from its model.json "training" (settings this diycnn does not know are
        left out: a run from another version still resumes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


_SETTINGS_FIELDS = {f.name for f in dataclasses.fields(TrainSettings)}


MAX_DOCUMENT_BYTES = 1 << 20  # a settings or spec file is a few hundred bytes


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: `*name` repeats a node, and a few hundred bytes of
    nested aliases expand to gigabytes (a 'billion laughs'). diycnn's files never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in diycnn files", mark)
        return super().compose_node(parent, index)


def read_document_file(path: Path) -> Any:
    """A JSON or YAML file (by suffix) as data: at most MAX_DOCUMENT_BYTES, YAML read safely (no
    tags that run code) and without aliases, so its size bounds what parsing it can allocate.

    Raises:
        ValueError, yaml.YAMLError, RecursionError: the file is too big or not valid (callers name it).
    """
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the file is {size:,} bytes, more than a settings or spec file needs "
                         f"(at most {MAX_DOCUMENT_BYTES:,})")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a mapping of settings.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file '{path}' does not exist. Pass a YAML or JSON file of settings.")
    try:
        data = read_document_file(path)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        # yaml.safe_load refuses '!!python/...' tags (ConstructorError): nothing is ever executed
        reason = shown(" ".join(str(exc).split()), 300, quote=False) if not isinstance(exc, RecursionError) \
            else "nested too deeply"
        raise ValueError(f"Config file '{path}' cannot be read as {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{reason}. Fix the file (plain settings like 'epochs: 30'; tags such as !!python are "
                         "not allowed).") from None
    if not isinstance(data, dict):
        raise ValueError(f"Config file '{path}' must hold a mapping like 'epochs: 30', received {type(data).__name__}.")
    return data


def merge_settings(config: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                   where: str = "config file") -> TrainSettings:
    """Defaults < config file < explicit overrides (flags or keyword arguments); None overrides are ignored."""
    values: dict[str, Any] = {}
    if config:
        check_keys(config, [f.name for f in dataclasses.fields(TrainSettings)], where)
        values.update(config)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return TrainSettings.from_dict(values, where="settings")
