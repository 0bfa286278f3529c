"""A run's two records, typed and frozen: `RunInfo` (model.json: what was trained, on what, how)
and `Metrics` (metrics.json: what it scored). One checked reader and one writer each; every
module, the report templates and the web API read them through these classes.

Both also answer `record["field"]` and `record.get("field")`, read-only, so code written against
the JSON files (`run.metrics["test_accuracy"]`) keeps working; a change is a new record
(`record.replace(status="complete")`), never an edit in place.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .io import atomic_write_json, check_format, read_json, to_jsonable

RUN_FORMAT = "diycnn-run"
RUN_VERSION = 1
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"
SPLIT_JSON = "split.json"

R = TypeVar("R", bound="_Record")


class _Record:
    """Read-only mapping access and `replace` for the frozen dataclasses below."""

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        extra: dict[str, Any] = getattr(self, "extra")
        return extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._names() or key in getattr(self, "extra"))

    def keys(self) -> Iterator[str]:
        return iter(self.to_dict())

    def replace(self: R, **changes: Any) -> R:
        """A new record with `changes` (a field of this class, or a key kept in `extra`)."""
        names = self._names()
        extra = {k: v for k, v in changes.items() if k not in names}
        fields = {k: v for k, v in changes.items() if k in names}
        if extra:
            fields["extra"] = {**getattr(self, "extra"), **extra}
        return dataclasses.replace(self, **fields)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the file holds it (keys this diycnn does not know kept as they were)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}  # type: ignore[arg-type]
        return {**getattr(self, "extra"), **out}

    @classmethod
    def _names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls) if f.name != "extra")  # type: ignore[arg-type]

    @classmethod
    def _checked(cls, data: dict[str, Any], where: str | Path) -> dict[str, Any]:
        """The known fields of `data`, each checked against its annotation (a file from elsewhere
        may hold anything); the other keys go to `extra`, untouched."""
        hints = typing.get_type_hints(cls)
        fields = {}
        for name in cls._names():
            if name in data:
                if not _fits(data[name], hints[name]):
                    raise ValueError(f"'{where}': '{name}' is not what diycnn writes there "
                                     f"({type(data[name]).__name__}); the run directory is damaged.")
                fields[name] = data[name]
        return {**fields, "extra": {k: v for k, v in data.items() if k not in fields}}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type: str, int, float, bool, X | None, and
    list[...] / dict[str, ...] checked one level deep."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # NaN and infinity included: a diverged training's loss is one (readers check what they show)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (str, Any)
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, item) for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


@dataclasses.dataclass(frozen=True)
class RunInfo(_Record):
    """model.json: the model (recipe, spec, preprocessing, backbone), the classes, the training
    plan, the data folder and where the run stands (`status`: training, interrupted, complete)."""

    class_names: list[str]
    model: dict[str, Any]
    status: str
    name: str = ""
    created: str = ""
    data: str = ""
    layout: str = ""
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    inference: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    scan: dict[str, Any] = dataclasses.field(default_factory=dict)
    auto: dict[str, Any] | None = None
    format: str = RUN_FORMAT
    format_version: int = RUN_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str | Path) -> RunInfo:
        """Check and read a model.json object.

        Raises:
            ValueError: malformed (naming `where` and the field), or written by a newer diycnn.
        """
        check_format(data, Path(where), RUN_FORMAT, "format_version", RUN_VERSION,
                     f"It was made by diycnn {data.get('versions', {}).get('diycnn') if isinstance(data, dict) else '?'}"
                     ". Upgrade diycnn: pip install -U diycnn")
        for key in ("class_names", "model", "status"):
            if key not in data:
                raise ValueError(f"'{where}' is missing the '{key}' field; the run directory is damaged.")
        names = data["class_names"]
        if not isinstance(names, list) or len(names) < 1 or not all(isinstance(c, str) for c in names):
            raise ValueError(f"'{where}': 'class_names' must be a list of class names; the run directory is damaged.")
        if not isinstance(data["model"], dict) or not isinstance(data["model"].get("spec"), dict):
            raise ValueError(f"'{where}': 'model' must describe the model (an object with a 'spec'); "
                             "the run directory is damaged.")
        return cls(**cls._checked(data, where))

    @property
    def tta(self) -> bool:
        """Whether predictions average the photo and its mirror image (test-time augmentation)."""
        return bool(self.inference.get("tta"))


@dataclasses.dataclass(frozen=True)
class Metrics(_Record):
    """metrics.json: the held-out test figures (with a 95% interval), the training curve's
    summary, over-fitting, data problems, suspect labels, cross-validation and, for auto, the
    contest between candidates."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("test_accuracy", "test_loss", "class_names", "counts", "confusion_matrix")

    test_accuracy: float
    test_loss: float
    class_names: list[str]
    counts: dict[str, int]
    confusion_matrix: list[list[int]]
    test_accuracy_ci95: list[float] | None = None  # diycnn always writes it; a file from elsewhere may lack it
    model: str = ""
    backbone: str | None = None
    test_macro_f1: float | None = None
    test_correct: int | None = None
    per_class: dict[str, Any] = dataclasses.field(default_factory=dict)
    counts_by_class: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    final_val_loss: float | None = None
    final_val_accuracy: float | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    overfitting: dict[str, Any] | None = None
    stopped_early: bool = False
    stopped_by_time: bool = False
    train_seconds: float = 0.0
    train_images_per_second: float = 0.0
    device: str = ""
    precision: str = ""
    inference_precision: str = ""
    feature_cache: dict[str, float] | None = None  # hits, misses, seconds (extraction with decoding)
    tta: bool = False
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    duplicates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    misclassified: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    test_probabilities: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    no_face: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    near_duplicates: dict[str, Any] | None = None
    suspect_labels: dict[str, Any] | None = None
    cross_validation: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # temperature scaling and the test ECE (evaluation/calibration.py)
    unknown: dict[str, Any] | None = None  # "none of these": threshold and test figures (evaluation/open_set.py)
    auto: dict[str, Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str | Path) -> Metrics:
        """Check and read a metrics.json object.

        Raises:
            ValueError: not an object, or a field every reader uses missing or of the wrong kind.
        """
        if not isinstance(data, dict):
            raise ValueError(f"'{where}' is not a diycnn metrics file (not a JSON object); the run directory is "
                             "damaged.")
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise ValueError(f"'{where}' lacks {', '.join(missing)}; the run directory is damaged or from another "
                             "tool.")
        return cls(**cls._checked(data, where))

    @property
    def kept_val_loss(self) -> float | None:
        """Validation loss of the weights the run kept (the best epoch with early stopping, else the last)."""
        return self.best_val_loss if self.best_epoch else self.final_val_loss

    @property
    def ci95_text(self) -> str:
        """'95% CI 70.1%-88.3%' ('' when the file has no interval)."""
        ci = self.test_accuracy_ci95
        return f"95% CI {ci[0]:.1%}-{ci[1]:.1%}" if ci and len(ci) == 2 else ""

    @property
    def cv_checked(self) -> bool:
        return bool((self.cross_validation or {}).get("checked"))


def read_run_info(run_dir: Path) -> RunInfo:
    """A run's model.json, checked.

    Raises:
        FileNotFoundError: not a run directory.
        ValueError: malformed, or written by a newer diycnn.
    """
    path = run_dir / MODEL_JSON
    if not run_dir.exists():
        raise FileNotFoundError(f"'{run_dir}' does not exist. Pass a run directory written by 'diycnn train' "
                                "(e.g. runs/<data>-<model>), or an export folder.")
    data = read_json(path, f"'{run_dir}' is not a diycnn run directory (no {MODEL_JSON}). Pass a folder written by "
                           "'diycnn train'.", "the run directory is damaged.")
    return RunInfo.from_dict(data, path)


def read_metrics(run_dir: str | Path) -> Metrics:
    """A finished run's metrics.json, checked.

    Raises:
        FileNotFoundError: the run has no metrics.json (it did not finish).
        ValueError: not JSON, not an object, or a field missing.
    """
    path = Path(run_dir) / METRICS_JSON
    data = read_json(path, f"'{run_dir}' has no {METRICS_JSON}: the run did not finish. Resume it with "
                           f"diycnn train --resume {run_dir}", "the run directory is damaged.")
    return Metrics.from_dict(data, path)


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    atomic_write_json(run_dir / MODEL_JSON, to_jsonable(info.to_dict()))


def write_metrics(run_dir: Path, metrics: Metrics) -> None:
    atomic_write_json(run_dir / METRICS_JSON, to_jsonable(metrics.to_dict()))
