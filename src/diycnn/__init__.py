"""diycnn: turn folders of photos into an image classifier you can trust.

Public API (the CLI and the web app use only these):

    diycnn.train(data, model="seed-cnn", **settings) -> Run
    diycnn.load(run_or_export_dir) -> Run (or OnnxRun for an ONNX export);  .predict(paths);  .evaluate(data)
    diycnn.export(run_dir, "onnx" | "torchscript" | "keras" | "tm" | "tfjs") -> export directory
    diycnn.compare(data, ["seed-cnn", "tm"]) -> comparison directory (McNemar, galleries, Grad-CAM)
    diycnn.explain(run_dir, paths) -> Grad-CAM overlays
    diycnn.summary(model) -> dict
    diycnn.Sequential, diycnn.layers  (Keras-style model specs)

Names are imported on first use, so `import diycnn` stays light and an ONNX export can be
loaded and used without importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "train": ".api", "summary": ".models.summary", "backbones": ".models.catalog", "face_weights": ".models.face_weights",
    "load": ".loading", "Run": ".run",
    "export": ".exports", "OnnxRun": ".exports.runtime",
    "compare": ".comparison", "explain": ".explanations",
    "ImageError": ".data.images", "Callback": ".training.trainer",
    "Sequential": ".models.sequential",
}

__all__ = ["train", "load", "export", "compare", "explain", "summary", "backbones", "face_weights", "Run", "OnnxRun", "Sequential", "layers",
           "ImageError", "Callback", "__version__"]


def __getattr__(name: str):
    if name == "layers":
        return importlib.import_module(".layers", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diycnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
