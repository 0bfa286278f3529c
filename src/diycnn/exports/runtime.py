"""Predict with an ONNX export using onnxruntime, numpy and Pillow only (torch is never imported).

The photos go through diycnn's own decoding and resizing code (`Preprocessing.load`), the same
code that prepared the training photos, so the export sees exactly what the run saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import Preprocessing
from ..io import check_format, read_json
from ..run import Classifier

EXPORT_FORMAT = "diycnn-export"
EXPORT_VERSION = 1
REQUIRED = ("export_format", "model_file", "class_names", "preprocessing")
MODEL_FILES = {"onnx": "model.onnx", "tm": "model.onnx", "torchscript": "model.torchscript.pt", "keras": "model.keras",
               "tfjs": "model.json"}  # a tm export in TF.js (exports.tm_is_tfjs) writes model.json


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
        from . import onnx_session

        self.dir = Path(export_dir)
        self.info = read_export_json(self.dir)
        self.class_names = list(self.info["class_names"])
        self.preprocessing = Preprocessing.from_dict(self.info["preprocessing"])
        path = self.dir / (model_file or self.info["model_file"])
        if path.is_symlink() and not path.resolve().is_relative_to(self.dir.resolve()):
            raise ValueError(f"'{path}' is a link to a file outside the export folder; refused. Export the run again.")
        if not path.is_file():
            raise FileNotFoundError(f"'{path}' is missing from the export folder; export the run again.")
        try:
            self.session = onnx_session(path)
        except Exception as exc:  # onnxruntime raises its own types for damaged files
            raise ValueError(f"'{path}' is not a loadable ONNX model ({type(exc).__name__}: {exc}); "
                             "export the run again.") from None
        if self.preprocessing.align:
            self._use_landmarks()

    def _use_landmarks(self) -> None:
        """Faces are aligned with the folder's own landmarks.onnx (no torch), held by this export's
        preprocessing: two exports loaded in one process each align with their own network."""
        from . import onnx_session

        name = (self.info.get("landmarks") or {}).get("file")
        if not isinstance(name, str) or name != Path(name).name or not (self.dir / name).is_file():
            raise ValueError(f"'{self.dir}' aligns faces but its landmark model is missing from export.json or the "
                             "folder; export the run again.")
        session = onnx_session(self.dir / name)
        self.preprocessing = dataclasses.replace(self.preprocessing,
                                                 landmarks=lambda x: session.run(None, {"image": x})[0][0])

    @property
    def name(self) -> str:
        return self.info.get("run", {}).get("name", self.dir.name)

    def predict_arrays(self, images_u8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        from . import onnx_probs

        if len(images_u8) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return onnx_probs(self.session, images_u8, batch_size)


__all__ = ["OnnxRun", "read_export_json"]
