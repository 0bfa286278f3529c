"""Typed training settings and the one place where defaults, a config file and flags merge."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import yaml

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


def suggest(name: str, choices) -> str:
    """Return ' Did you mean 'x'?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_keys(given: dict, allowed, where: str) -> None:
    """Raise ValueError naming the first key of `given` not in `allowed`, with a suggestion."""
    for key in given:
        if key not in allowed:
            raise ValueError(
                f"Unknown setting '{key}' in {where}.{suggest(key, allowed)} "
                f"Valid settings: {', '.join(sorted(allowed))}."
            )


@dataclasses.dataclass
class TrainSettings:
    """Everything that decides how a model is trained (recorded in model.json).

    `None` means "the recipe's default" for epochs, batch_size, lr and patience.
    """

    model: str = "seed-cnn"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    val_split: float = 0.15
    test_split: float = 0.15
    patience: int | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"epochs must be a whole number >= 1, received {self.epochs!r}.")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1, received {self.batch_size!r}.")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, received {self.lr!r}.")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a whole number >= 1 (or unset), received {self.patience!r}.")
        for name in ("val_split", "test_split"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"{name} must be a fraction between 0 and 1 (exclusive), received {value!r}.")
        if self.val_split + self.test_split >= 0.9:
            raise ValueError(
                f"val_split + test_split = {self.val_split + self.test_split:.2f} leaves too little to train on; "
                "keep their sum below 0.9."
            )
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, received {self.device!r}.{suggest(self.device, DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}, received {self.precision!r}.{suggest(self.precision, PRECISIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> "TrainSettings":
        names = [f.name for f in dataclasses.fields(cls)]
        check_keys(values, names, where)
        return cls(**values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file into a dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a mapping of settings.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file '{path}' does not exist. Pass a YAML or JSON file of settings.")
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
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
