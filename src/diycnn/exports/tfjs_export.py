"""The TensorFlow.js export's writer: layers model + weights (tfjs_format, tfjs_backbone), checked
in TF.js under Node.js where it is installed.
"""

from __future__ import annotations

import numpy as np

from .. import __version__
from ..io import atomic_write_json
from .job import Job, compare, image_input, mirror_note, normalised, tm_metadata, unchecked
from .tfjs_backbone import write_tfjs_backbone
from .tfjs_format import TFJS_VERSION, find_tfjs, tfjs_missing_message, tfjs_predict
from .tfjs_format import write_tfjs as write_layers_model


def write_tfjs(job: Job, teachable: bool = False) -> None:
    """model.json + weights.bin (spec models, EfficientNet-Lite backbones, the face network), run in
    TF.js under Node.js; `teachable`: taking Teachable Machine's pixels (the tm format)."""

    run, info = job.run, job.info
    adapter = run.preprocessing if teachable else None
    if run.recipe.kind == "spec":
        info["tfjs"] = write_layers_model(run.recipe.spec, run.module, job.tmp, f"diycnn {__version__}", prep=adapter)
    else:

        h, w = run.preprocessing.output_size
        info["tfjs"] = write_tfjs_backbone(run.recipe, run.module, (h, w, 3), job.tmp, f"diycnn {__version__}",
                                           prep=adapter)
    scaled = (job.images.astype(np.float32) / 127 - 1 if teachable
              else normalised(run.preprocessing, job.images))
    if run.tta:
        info["tta_note"] = mirror_note("TF.js", "average the predictions of the photo and of its mirror image")
    info["input"] = {**image_input(job.images), "dtype": "float32",
                     "pixels": "pixels / 127 - 1 (Teachable Machine's)" if teachable
                     else "scaled and normalised as 'steps' says"}
    if find_tfjs() is None:  # written all the same: export.json and the CLI say it is unchecked, and how to check it
        info["versions"]["tfjs"] = TFJS_VERSION
        info["check"] = unchecked(tfjs_missing_message())
    else:
        views = np.concatenate([scaled, scaled[:, :, ::-1]]) if run.tta else scaled  # one TF.js start
        got, info["versions"]["tfjs"] = tfjs_predict(job.tmp, views)
        if run.tta:
            got = (got[:len(scaled)] + got[len(scaled):]) / 2
        info["check"] = compare("TensorFlow.js", got, job.want, job.source)
        info["check"]["engine"] = f"TensorFlow.js {info['versions']['tfjs']} (Node.js)"
    atomic_write_json(job.tmp / "metadata.json", tm_metadata(run, run.preprocessing.output_size,
                                                              tfjs=info["versions"]["tfjs"]))
