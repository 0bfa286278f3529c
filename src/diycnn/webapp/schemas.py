"""What the web API answers about runs, as pydantic models built from a run's records
(records.RunInfo, records.Metrics): the JSON the page reads has one declared shape, checked as
it is made (a run folder may come from anyone: a value that does not fit is refused, not sent)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class RunRow(_Answer):
    """A finished run in the project's list."""

    name: str
    model: str | None
    export_formats: list[str]
    created: str | None
    test_accuracy: float | None
    test_loss: float | None
    class_names: list[str]


class CrossValidation(_Answer):
    accuracy: float
    accuracy_ci95: list[float]
    loss: float
    folds: int
    photos: int


class Suspect(_Answer):
    """A photo whose label looks wrong, still in place in the project."""

    class_: str = Field(alias="class")
    photo: str
    suggested: str | None
    p_label: float | None
    p_suggested: float | None


class ClassFigures(_Answer):
    accuracy: float | None
    support: int
    train: int | None
    val: int | None


class Evaluation(_Answer):
    """A run's test figures and data checks, for the page's results card."""

    run: str
    model: str | None
    class_names: list[str]
    test_accuracy: float | None
    test_accuracy_ci95: list[float] | None
    test_loss: float | None
    cross_validation: CrossValidation | None
    counts: dict[str, int]
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]
    left_out: dict[str, int]
    overfitting: str | None
    report: str
    auto: str | None
    suspects: list[Suspect]
    suspects_checked: bool
    suspects_why: str | None = None
    near_left_out: int
    label_conflicts: int
