"""The web page export: a folder any static host serves (or `python -m http.server`) that classifies
webcam frames and uploaded photos in the browser, with the run's probabilities and "none of these".

It holds index.html and its scripts (webpage/ beside this module), the TF.js model with predict.js and
predict.json (the class names, the preprocessing, the class means and the threshold; tfjs_export),
TensorFlow.js' own pinned scripts and WebAssembly binaries (copied from the packages `diycnn weights
fetch` installs) and sw.js, which keeps every file so the page opens again offline. predict.js does what the run does to a
photo (Pillow's resizing, reproduced exactly) and is checked at export time under Node.js on whole
photos: the pixels it feeds the model must equal Pillow's, its probabilities and unknown scores the
run's within TOLERANCE, or nothing is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .checking import original_photos, scored_export_module, torch_probs, torch_scored
from .job import TOLERANCE, ExportError, Job
from .tfjs_export import JS as HERE  # index.html, its scripts, predict.js: one folder for every TF.js export
from .tfjs_export import run_predict_js, write_tfjs
from .tfjs_format import find_tfjs, tfjs_missing_message

PAGE_FILES = ("index.html", "page.js", "style.css", "sw.js")  # with predict.js and predict.json (write_tfjs)
SCRIPTS = {"tfjs-core": ("tf-core.min.js",), "tfjs-backend-cpu": ("tf-backend-cpu.min.js",),
           "tfjs-layers": ("tf-layers.min.js",),
           "tfjs-backend-wasm": ("tf-backend-wasm.min.js", "tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm",
                                 "tfjs-backend-wasm-threaded-simd.wasm")}


def _copy_scripts(modules: Path, folder: Path) -> list[str]:
    (folder / "tf").mkdir()
    copied = []
    for package, files in SCRIPTS.items():
        for name in files:
            shutil.copyfile(modules / "@tensorflow" / package / "dist" / name, folder / "tf" / name)
            copied.append(f"tf/{name}")
    return copied


def _check_page(job: Job, photos: list[np.ndarray], source: str) -> dict[str, Any]:
    """Run the page's code on whole photos and compare with the run on Pillow's resizing of them."""
    run = job.run
    prep = run.preprocessing
    images = np.stack([np.asarray(prep.resize_image(Image.fromarray(p)), dtype=np.uint8) for p in photos])
    scored, _ = scored_export_module(run)
    want, want_scores = torch_scored(scored, images) if scored is not None else (torch_probs(job.wrapper, images), None)
    page = run_predict_js(job.tmp, photos)
    inputs = [np.asarray(x, dtype=np.uint8).reshape(images.shape[1:]) for x in page["inputs"]]
    pixels = sum(int((got != ref).any()) for got, ref in zip(inputs, images))
    if pixels:
        raise ExportError(f"The web page resizes {pixels} of {len(images)} photos differently from the run (Pillow) "
                          f"on {source}. Nothing was written. Please report this with the run's model.json.")
    got = np.array([r["probabilities"] for r in page["results"]], dtype=np.float64)
    diff = float(np.abs(got - want).max())
    check: dict[str, Any] = {"status": "checked", "photos": len(images), "source": source, "same_pixels": True,
                             "max_abs_diff": diff, "tolerance": TOLERANCE, "backend": page["backend"],
                             "same_labels": int((got.argmax(1) == want.argmax(1)).sum())}
    if want_scores is not None:
        scores = np.array([r["unknown_score"] for r in page["results"]], dtype=np.float64)
        check["unknown_max_abs_diff"] = float(np.abs(scores - want_scores).max())
        diff = max(diff, check["unknown_max_abs_diff"])
    if not diff <= TOLERANCE:
        raise ExportError(f"The web page does not predict the same as the run: max difference {diff:.3g} > "
                          f"{TOLERANCE} (probabilities and unknown scores) on {source}. Nothing was written. "
                          "Please report this with the run's model.json.")
    return check


def write_webpage(job: Job) -> None:
    """index.html with its scripts, the TF.js model and predict.js; checked in TF.js under Node.js."""
    run = job.run
    if run.preprocessing.faces or run.preprocessing.align:
        raise ExportError("The web page cannot find faces in the browser, and this run's photos are face-cropped or "
                          "aligned; export it as onnx (which crops and aligns) or tfjs with predict.py.")
    found = find_tfjs()
    if found is None:
        raise ExportError(f"{tfjs_missing_message()} The web page ships TensorFlow.js' scripts from those packages.")
    write_tfjs(job)  # model.json, weights.bin, metadata.json, predict.js, predict.json; checked in TF.js
    for name in PAGE_FILES:
        shutil.copyfile(HERE / name, job.tmp / name)
    job.info["scripts"] = _copy_scripts(found[1], job.tmp)
    photos, source = original_photos(run, len(job.images))
    job.info["check"]["page"] = _check_page(job, photos, source)
    job.info["input"] = {"name": "photo", "what": "a photo file or a webcam frame; the page prepares it itself"}
