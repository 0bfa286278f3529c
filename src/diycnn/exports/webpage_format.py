"""The web page export: a folder any static host serves (or `python -m http.server`) that classifies
webcam frames and uploaded photos in the browser, with the run's probabilities and "none of these".

It holds index.html and its scripts (webpage/ beside this module), the TF.js model (tfjs_export),
TensorFlow.js' own pinned scripts and WebAssembly binaries (copied from the packages `diycnn weights
fetch` installs), page.json (the class names, the preprocessing, the class means and the threshold) and
sw.js, which keeps every file so the page opens again offline. predict.js does what the run does to a
photo (Pillow's resizing, reproduced exactly) and is checked at export time under Node.js on whole
photos: the pixels it feeds the model must equal Pillow's, its probabilities and unknown scores the
run's within TOLERANCE, or nothing is written.
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
from PIL import Image

from ..io import atomic_write_json
from .checking import original_photos, scored_export_module, torch_probs, torch_scored
from .job import TOLERANCE, ExportError, Job
from .tfjs_export import write_tfjs
from .tfjs_format import find_tfjs, tfjs_missing_message

PAGE_FILES = ("index.html", "page.js", "predict.js", "style.css", "sw.js")
SCRIPTS = {"tfjs-core": ("tf-core.min.js",), "tfjs-backend-cpu": ("tf-backend-cpu.min.js",),
           "tfjs-layers": ("tf-layers.min.js",),
           "tfjs-backend-wasm": ("tf-backend-wasm.min.js", "tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm",
                                 "tfjs-backend-wasm-threaded-simd.wasm")}
HERE = Path(__file__).with_name("webpage")


def page_config(run) -> dict[str, Any]:
    """page.json: what predict.js needs besides the model (plain numbers and text)."""
    from ..evaluation.open_set import METHOD  # noqa: PLC0415 (lazy: loads torch)

    prep = run.preprocessing
    detector = getattr(run, "detector", None)
    unknown = None
    if detector is not None:
        means = detector.means / np.maximum(np.linalg.norm(detector.means, axis=1, keepdims=True), 1e-12)
        unknown = {"class_means": means.tolist(), "threshold": detector.threshold, "method": METHOD}
    return {"run": run.name, "class_names": list(run.class_names), "test_accuracy": run.metrics.test_accuracy,
            "input_size": list(prep.output_size), "tta": bool(run.tta), "unknown": unknown,
            "preprocessing": {k: v for k, v in prep.to_dict().items()
                              if k in ("size", "resize", "interpolation", "input_scale", "mean", "std", "background",
                                       "crop")}}


def _copy_scripts(modules: Path, folder: Path) -> list[str]:
    (folder / "tf").mkdir()
    copied = []
    for package, files in SCRIPTS.items():
        for name in files:
            shutil.copyfile(modules / "@tensorflow" / package / "dist" / name, folder / "tf" / name)
            copied.append(f"tf/{name}")
    return copied


def run_page(folder: Path, photos: list[np.ndarray]) -> dict[str, Any]:
    """predict.js under Node.js on whole RGB photos: {"results": [...], "inputs": [...], "backend"}."""
    found = find_tfjs()
    if found is None:
        raise ExportError(tfjs_missing_message())
    node, modules = found
    with tempfile.TemporaryDirectory(prefix="diycnn-page-") as tmp:
        blob, sizes, out = Path(tmp) / "photos.bin", Path(tmp) / "sizes.json", Path(tmp) / "out.json"
        blob.write_bytes(b"".join(np.ascontiguousarray(p, dtype=np.uint8).tobytes() for p in photos))
        sizes.write_text(json.dumps([list(p.shape[:2]) for p in photos]), encoding="utf-8")
        done = subprocess.run([node, str(HERE / "check.cjs"), str(folder.resolve()), str(blob), str(sizes), str(out)],
                              capture_output=True, text=True, env={**os.environ, "NODE_PATH": str(modules)})
        if done.returncode:
            raise ExportError(f"The web page's prediction code could not run in TensorFlow.js: "
                              f"{done.stderr.strip()[-1500:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def _check_page(job: Job, photos: list[np.ndarray], source: str) -> dict[str, Any]:
    """Run the page's code on whole photos and compare with the run on Pillow's resizing of them."""
    run = job.run
    prep = run.preprocessing
    images = np.stack([np.asarray(prep.resize_image(Image.fromarray(p)), dtype=np.uint8) for p in photos])
    scored, _ = scored_export_module(run)
    want, want_scores = torch_scored(scored, images) if scored is not None else (torch_probs(job.wrapper, images), None)
    page = run_page(job.tmp, photos)
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
    """index.html with its scripts, the TF.js model and page.json; checked in TF.js under Node.js."""
    run = job.run
    if run.preprocessing.faces or run.preprocessing.align:
        raise ExportError("The web page cannot find faces in the browser, and this run's photos are face-cropped or "
                          "aligned; export it as onnx (which crops and aligns) or tfjs with predict.py.")
    found = find_tfjs()
    if found is None:
        raise ExportError(f"{tfjs_missing_message()} The web page ships TensorFlow.js' scripts from those packages.")
    write_tfjs(job)  # model.json, weights.bin, metadata.json; their probabilities checked in TF.js
    for name in PAGE_FILES:
        shutil.copyfile(HERE / name, job.tmp / name)
    job.info["scripts"] = _copy_scripts(found[1], job.tmp)
    config = page_config(run)
    atomic_write_json(job.tmp / "page.json", config)
    photos, source = original_photos(run, len(job.images))
    job.info["check"]["page"] = _check_page(job, photos, source)
    job.info["input"] = {"name": "photo", "what": "a photo file or a webcam frame; the page prepares it itself"}
    if config["unknown"]:
        job.info["unknown"] = {"threshold": config["unknown"]["threshold"], "method": config["unknown"]["method"],
                               "max_abs_diff": job.info["check"]["page"].get("unknown_max_abs_diff")}
