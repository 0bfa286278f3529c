"""The TensorFlow.js export's writer: layers model + weights (tfjs_format, tfjs_backbone), and beside them
predict.js with predict.json, the code that prepares a photo as the run did and answers "none of these"
(webpage/predict.js, shared with the web page export). Checked in TF.js under Node.js where it is installed:
predict.js runs the exported model on the check photos, whose probabilities and unknown scores must equal
the run's within TOLERANCE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io import atomic_write_json
from .checking import check_scores, scored_export_module
from .job import ExportError, Job, compare, image_input, mirror_note, tm_metadata, unchecked
from .tfjs_backbone import write_tfjs_backbone
from .tfjs_format import TFJS_VERSION, find_tfjs, tfjs_missing_message
from .tfjs_format import write_tfjs as write_layers_model

JS = Path(__file__).with_name("webpage")  # predict.js and check.cjs (its Node.js runner)
PREDICT_FILES = ("predict.js", "predict.json")
TEACHABLE_PIXELS = {"input_scale": 1 / 127, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]}  # p / 127 - 1


def predict_settings(run, teachable: bool = False) -> dict[str, Any]:
    """predict.json: what predict.js needs besides the model (plain numbers and text). `teachable`: the
    model takes Teachable Machine's pixels (the tm format). A face run's model takes the aligned or cropped
    face that predict.py --save-inputs writes, so its resizing is none (the input size)."""
    from ..evaluation.open_set import COHORT_METHOD, METHOD, unit  # noqa: PLC0415 (lazy: loads torch)

    prep = run.preprocessing
    detector = getattr(run, "detector", None)
    unknown = None
    if detector is not None:
        unknown = {"class_means": unit(detector.means).tolist(), "threshold": detector.threshold,
                   "method": METHOD if detector.cohort is None else COHORT_METHOD,
                   "cohort_mean": None if detector.cohort is None else unit(detector.cohort)[0].tolist(),
                   "cohort_weight": detector.weight}
    steps = {k: v for k, v in prep.to_dict().items()
             if k in ("size", "resize", "interpolation", "input_scale", "mean", "std", "background", "crop")}
    if prep.faces or prep.align:
        steps.update(size=list(prep.output_size), resize="squash", crop=None)
    if teachable:
        steps.update(TEACHABLE_PIXELS)
    return {"run": run.name, "class_names": list(run.class_names), "test_accuracy": run.metrics.test_accuracy,
            "input_size": list(prep.output_size), "tta": bool(run.tta), "unknown": unknown,
            "takes": "the face as predict.py --save-inputs writes it" if prep.faces or prep.align else "a photo",
            "preprocessing": steps}


def run_predict_js(folder: Path, photos: list[np.ndarray] | np.ndarray, prepared: bool = False) -> dict[str, Any]:
    """The folder's predict.js under Node.js on RGB uint8 photos (whole ones; `prepared`: already the
    model's input size): {"results": [{probabilities, unknown_score, unknown}], "inputs", "backend", "version"}."""
    found = find_tfjs()
    if found is None:
        raise ExportError(tfjs_missing_message())
    node, modules = found
    with tempfile.TemporaryDirectory(prefix="diycnn-predict-js-") as tmp:
        blob, sizes, out = Path(tmp) / "photos.bin", Path(tmp) / "sizes.json", Path(tmp) / "out.json"
        blob.write_bytes(b"".join(np.ascontiguousarray(p, dtype=np.uint8).tobytes() for p in photos))
        sizes.write_text(json.dumps([list(p.shape[:2]) for p in photos]), encoding="utf-8")
        args = [node, str(JS / "check.cjs"), str(Path(folder).resolve()), str(blob), str(sizes), str(out)]
        done = subprocess.run(args + (["prepared"] if prepared else []), capture_output=True, text=True,
                              env={**os.environ, "NODE_PATH": str(modules)})
        if done.returncode:
            raise ExportError(f"The export's prediction code (predict.js) could not run in TensorFlow.js: "
                              f"{done.stderr.strip()[-1500:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def _check(job: Job) -> None:
    """predict.js on the check photos against the run: probabilities, and unknown scores where it has them."""
    info = job.info
    page = run_predict_js(job.tmp, job.images, prepared=True)
    got = np.array([r["probabilities"] for r in page["results"]], dtype=np.float32).reshape(len(job.images), -1)
    info["versions"]["tfjs"] = page["version"]
    info["check"] = compare("TensorFlow.js", got, job.want, job.source)
    info["check"]["engine"] = f"TensorFlow.js {page['version']} (Node.js, {page['backend']}), through predict.js"
    scored, why = scored_export_module(job.run)
    if scored is None:
        info["unknown"] = {"script": None, "why": why}
        return
    scores = np.array([r["unknown_score"] for r in page["results"]], dtype=np.float64)
    checked = check_scores(job.run, scored, job.images, scores, job.source, "TensorFlow.js",
                           decided=np.array([r["unknown"] for r in page["results"]], dtype=bool))
    info["unknown"] = {"script": "predict.js", **checked,
                       "rule": "predict.js's answer has unknown: true when unknown_score is above the threshold"}


def write_tfjs(job: Job, teachable: bool = False) -> None:
    """model.json + weights.bin (spec models, EfficientNet-Lite backbones, the face network) with predict.js
    and predict.json, run in TF.js under Node.js; `teachable`: taking Teachable Machine's pixels (the tm format)."""

    run, info = job.run, job.info
    adapter = run.preprocessing if teachable else None
    if run.recipe.kind == "spec":
        info["tfjs"] = write_layers_model(run.recipe.spec, run.module, job.tmp, f"diycnn {__version__}", prep=adapter)
    else:
        h, w = run.preprocessing.output_size
        info["tfjs"] = write_tfjs_backbone(run.recipe, run.module, (h, w, 3), job.tmp, f"diycnn {__version__}",
                                           prep=adapter)
    shutil.copyfile(JS / "predict.js", job.tmp / "predict.js")
    atomic_write_json(job.tmp / "predict.json", predict_settings(run, teachable))
    if run.tta:
        info["tta_note"] = mirror_note("TF.js", "average the predictions of the photo and of its mirror image "
                                                "(predict.js does)")
    info["input"] = {**image_input(job.images), "dtype": "float32",
                     "pixels": "pixels / 127 - 1 (Teachable Machine's)" if teachable
                     else "scaled and normalised as 'steps' says"}
    if find_tfjs() is None:  # written all the same: export.json and the CLI say it is unchecked, and how to check it
        info["versions"]["tfjs"] = TFJS_VERSION
        info["check"] = unchecked(tfjs_missing_message())
    else:
        _check(job)
    atomic_write_json(job.tmp / "metadata.json", tm_metadata(run, run.preprocessing.output_size,
                                                              tfjs=info["versions"]["tfjs"]))
