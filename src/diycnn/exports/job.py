"""What every export writer shares: the job it is handed (the run, its check photos and their
probabilities), the check of its output against the run, and the descriptions export.json and
Teachable Machine's metadata.json carry.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..settings import EXPORTS, TFJS_MODEL_FILE

log = logging.getLogger(__name__)


TOLERANCE = 1e-4  # max |p_export - p_torch| over every checked photo and class


class ExportError(ValueError):
    """The export could not be made or did not predict the same as the run."""


@dataclasses.dataclass
class Job:
    """One export in progress: what the writers read (the run, its fp32 wrapper, the check photos and
    the run's own probabilities for them) and where they write (`tmp`, then `info` for export.json)."""
    fmt: str
    run: Any
    wrapper: Any
    images: np.ndarray
    labels: np.ndarray | None
    want: np.ndarray
    source: str
    tmp: Path
    model_path: Path
    info: dict[str, Any]
    int8: bool


def compare(name: str, got: np.ndarray, want: np.ndarray, source: str) -> dict[str, Any]:
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    check = {"status": "checked", "photos": int(len(want)), "source": source, "max_abs_diff": diff,
             "tolerance": TOLERANCE,
             "same_labels": int((got.argmax(1) == want.argmax(1)).sum()) if got.shape == want.shape else 0}
    if not diff <= TOLERANCE:
        raise ExportError(
            f"The {name} export does not predict the same as the run: max probability difference {diff:.3g} "
            f"> {TOLERANCE} on {source}. Nothing was written. Please report this with the run's model.json."
        )
    return check


def unchecked(why: str) -> dict[str, Any]:
    """export.json's check of an export written where its engine cannot run (TF.js without Node.js)."""
    log.warning("The export was written but not checked: %s", why)
    return {"status": "unchecked", "why": why, "photos": 0, "tolerance": TOLERANCE}


def check_line(check: dict[str, Any]) -> str:
    """One line on how an export was checked (the CLI and README.txt say it)."""
    if check.get("status") == "unchecked":
        return f"Not checked: {check['why']}"
    return (f"Checked on {check['source']}: max probability difference from the run {check['max_abs_diff']:.2g} "
            f"(tolerance {check['tolerance']}), same label on {check['same_labels']}/{check['photos']}.")


def image_input(images: np.ndarray) -> dict[str, Any]:
    """export.json's description of the model input: uint8 photos, batch first, channels last."""
    return {"name": "image", "dtype": "uint8", "layout": "NHWC (batch, height, width, RGB)",
            "shape": [None, *images.shape[1:]]}


def normalised(prep, images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) * np.float32(prep.input_scale)
    return ((x - np.array(prep.mean, np.float32)) / np.array(prep.std, np.float32)).astype(np.float32)


def mirror_note(engine: str, how: str) -> str:
    return f"the run averages each photo with its mirror image; the {engine} model does not: {how}"


def tm_metadata(run, image_size: tuple[int, int], tfjs: str | None = None) -> dict[str, Any]:
    """Teachable Machine's metadata.json fields, filled truthfully (an ONNX model unless `tfjs`
    gives the TensorFlow.js version the export was checked with)."""

    return {
        "tfjsVersion": tfjs or "none: this is an ONNX model (model.onnx), not TensorFlow.js",
        "tmVersion": f"diycnn {__version__}",
        "packageVersion": __version__,
        "packageName": "diycnn",
        "timeStamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "userMetadata": {},
        "modelName": run.name,
        "labels": list(run.class_names),
        "imageSize": int(image_size[0]),
        "grayscale": False,
        "modelFile": TFJS_MODEL_FILE if tfjs else EXPORTS["onnx"].model_file,
        "preprocessingFile": "export.json",
    }


def labels_txt(class_names: list[str]) -> str:
    return "".join(f"{i} {c}\n" for i, c in enumerate(class_names))
