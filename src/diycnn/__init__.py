"""diycnn: turn folders of photos into an image classifier you can trust.

Public API (the CLI and the web app use only these):

    diycnn.train(data, model="seed-cnn", **settings) -> Run
    diycnn.load(run_dir) -> Run;  run.predict(paths);  run.evaluate(data)
    diycnn.summary(model) -> dict
    diycnn.Sequential, diycnn.layers  (Keras-style model specs)
"""

__version__ = "0.1.0"

from .api import backbones, summary, train  # noqa: E402
from .data.images import ImageError  # noqa: E402
from . import layers  # noqa: E402
from .models.sequential import Sequential  # noqa: E402
from .run import Run, load  # noqa: E402

__all__ = ["train", "load", "summary", "backbones", "Run", "Sequential", "layers", "ImageError", "__version__"]
