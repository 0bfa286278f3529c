"""Predict with an ONNX export using onnxruntime, numpy and Pillow only (torch is never imported).

The photos go through diycnn's own decoding and resizing code (`Preprocessing.load`), the same
code that prepared the training photos, so the export sees exactly what the run saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..data.align import LANDMARK_INPUT
from ..data.images import Preprocessing
from ..io import check_format, read_json
from ..run import Classifier
from ..settings import EXPORTS
from .onnx_format import UNKNOWN_OUTPUT, onnx_outputs, onnx_session
from .onnx_sizes import check_onnx_graph

EXPORT_FORMAT = "diycnn-export"
EXPORT_VERSION = 1
REQUIRED = ("export_format", "model_file", "class_names", "preprocessing")
MODEL_FILES = {name: f.model_file for name, f in EXPORTS.items()}  # a tm export in TF.js writes TFJS_MODEL_FILE


def read_export_info(export_dir: Path) -> dict[str, Any]:
    """Read and check any export folder's export.json (every format writes one): the format marker
    and version, the fields every export has, and a model_file that names a file in the folder.

    Raises:
        FileNotFoundError: no export.json.
        ValueError: malformed or written by a newer diycnn.
    """
    path = export_dir / "export.json"
    info = read_json(path, f"'{export_dir}' is not a diycnn export folder (no export.json).", "export the run again.")
    check_format(info, path, EXPORT_FORMAT, "format_version", EXPORT_VERSION, "Upgrade diycnn: pip install -U diycnn")
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise ValueError(f"'{path}' is missing {missing}; export the run again.")
    name = info["model_file"]
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise ValueError(f"'{path}' names model_file {name!r}; it must be a plain file name inside the export "
                         "folder (a path elsewhere is never followed). Export the run again.")
    if not isinstance(info["class_names"], list) or not all(isinstance(c, str) for c in info["class_names"]):
        raise ValueError(f"'{path}' has class_names that are not a list of names; export the run again.")
    return info


def read_export_json(export_dir: Path) -> dict[str, Any]:
    """Read and check an ONNX export's export.json (what diycnn predicts with).

    Raises:
        FileNotFoundError: no export.json.
        ValueError: malformed, written by a newer diycnn, or not an ONNX export.
    """
    info = read_export_info(export_dir)
    if not info["model_file"].endswith(".onnx"):
        raise ValueError(
            f"'{export_dir}' is a {info['export_format']} export; diycnn predicts with run directories and ONNX "
            f"exports. Its README.txt says how to load {info['model_file']} directly."
        )
    return info


class OnnxRun(Classifier):
    """An ONNX export loaded for prediction and evaluation, like `Run` but without torch.

    Example:
        >>> model = diycnn.load("runs/iu-vs-suzy/export-onnx")
        >>> model.predict(["new.jpg"])[0]["label"]
    """

    def __init__(self, export_dir: str | Path, model_file: str | None = None):
        self.dir = Path(export_dir)
        self.info = read_export_json(self.dir)
        self.class_names = list(self.info["class_names"])
        self.preprocessing = Preprocessing.from_dict(self.info["preprocessing"])
        self.path = self.dir / (model_file or self.info["model_file"])
        h, w = self.preprocessing.output_size
        self.session = self._session(self.path, (1, h, w, 3))
        if self.preprocessing.align:
            self._use_landmarks()
        unknown = self.info.get("unknown")
        outputs = [o.name for o in self.session.get_outputs()]
        if isinstance(unknown, dict) and unknown.get("output") == UNKNOWN_OUTPUT:
            threshold = unknown.get("threshold")
            if outputs[1:2] != [UNKNOWN_OUTPUT] or not isinstance(threshold, (int, float)):
                raise ValueError(f"'{self.dir / 'export.json'}' says the model answers '{UNKNOWN_OUTPUT}', but "
                                 f"'{self.path.name}' has outputs {outputs} or no threshold is given; export the run "
                                 "again.")
            self.unknown_threshold = float(threshold)

    def _session(self, path: Path, input_shape: tuple[int, ...]):
        """An onnxruntime session for a file of this folder (never through a link), checked first."""

        if path.is_symlink():
            raise ValueError(f"'{path}' is a link; diycnn loads only the export folder's own files. Export the run "
                             "again.")
        if not path.is_file():
            raise FileNotFoundError(f"'{path}' is missing from the export folder; export the run again.")
        check_onnx_graph(path, input_shape)
        try:
            return onnx_session(path)
        except Exception as exc:  # onnxruntime raises its own types for damaged files
            raise ValueError(f"'{path}' is not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:300]}); "
                             "export the run again.") from None

    def _use_landmarks(self) -> None:
        """Faces are aligned with the folder's own landmarks.onnx (no torch), held by this export's
        preprocessing: two exports loaded in one process each align with their own network."""

        landmarks = self.info.get("landmarks")
        name = landmarks.get("file") if isinstance(landmarks, dict) else None
        if not isinstance(name, str) or name != Path(name).name or name in (".", ".."):
            raise ValueError(f"'{self.dir}' aligns faces but its export.json names no landmark model; export the "
                             "run again.")
        session = self._session(self.dir / name, (1, LANDMARK_INPUT, LANDMARK_INPUT, 3))
        try:  # once, on a blank face: a file that loads but answers in another shape is refused here
            got = np.asarray(session.run(None, {"image": np.zeros((1, LANDMARK_INPUT, LANDMARK_INPUT, 3), np.uint8)})[0])
        except Exception as exc:
            raise ValueError(f"'{self.dir / name}' cannot run ({type(exc).__name__}: {str(exc)[:200]}); export the run "
                             "again.") from None
        if got.shape != (1, 68, 2):
            raise ValueError(f"'{self.dir / name}' gives landmarks of shape {got.shape}, not (1, 68, 2); export the "
                             "run again.")
        self.preprocessing = dataclasses.replace(self.preprocessing,
                                                 landmarks=lambda x: session.run(None, {"image": x})[0][0])

    @property
    def name(self) -> str:
        return self.info.get("run", {}).get("name", self.dir.name)

    def predict_arrays(self, images_u8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.predict_scored(images_u8, batch_size)[0]

    def predict_scored(self, images_u8: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, unknown scores or None where the export has none), in one run of the model."""
        if len(images_u8) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32), None
        try:
            outputs = onnx_outputs(self.session, images_u8, batch_size)
        except Exception as exc:  # onnxruntime's own error types (a file that loads but cannot run)
            raise ValueError(f"'{self.path}' failed to predict ({type(exc).__name__}: {str(exc)[:300]}); export the "
                             "run again.") from None
        probs = outputs[0]
        if probs.ndim != 2 or probs.shape != (len(images_u8), len(self.class_names)):
            raise ValueError(f"'{self.path}' gives outputs of shape {probs.shape}, not one probability per class "
                             f"({len(self.class_names)}) per photo; export the run again.")
        return probs, (outputs[1].reshape(-1) if self.unknown_threshold is not None else None)


__all__ = ["OnnxRun", "read_export_json"]
