"""The export driver: checks the format applies, gathers the check photos, runs the format's writer
into a temporary folder, adds README.txt, labels.txt and export.json, and moves the folder into
place. One export at a time per process (torch's exporters keep process-wide state).
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, to_jsonable
from ..run import Run, versions
from ..settings import EXPORT_FORMATS as FORMATS
from ..settings import EXPORTS, TFJS_MODEL_FILE, export_formats_for
from .checking import CHECK_LIMIT, check_photos, export_module, torch_probs
from .job import Job, labels_txt
from .keras_export import write_keras
from .onnx_format import landmarks_onnx, write_onnx
from .readme import needs_face_inputs, preprocessing_steps, readme
from .runtime import EXPORT_FORMAT, EXPORT_VERSION, MODEL_FILES
from .tfjs_export import write_tfjs
from .tm_format import write_tm
from .torchscript_format import write_torchscript
from .webpage_format import write_webpage

log = logging.getLogger(__name__)


FLOAT_INPUT = tuple(name for name, f in EXPORTS.items() if f.float_input)


TFJS_CHECK_LIMIT = 8  # TensorFlow.js in Node.js runs the blog's model at seconds per photo


def formats_for(run) -> list[str]:
    """The export formats that apply to a run (settings.export_formats_for)."""
    prep = run.preprocessing
    return export_formats_for(run.recipe.kind, run.recipe.backbone, faces=prep.faces or prep.align)


def tm_is_tfjs(run) -> bool:
    """Whether a `tm` export of this run is TF.js, Teachable Machine's own format: when TF.js carries
    the run and its input is square (Teachable Machine's library feeds a centred square)."""
    h, w = run.preprocessing.output_size
    return "tfjs" in formats_for(run) and h == w


def _model_file(run, fmt: str) -> str:
    return TFJS_MODEL_FILE if fmt == "tm" and tm_is_tfjs(run) else MODEL_FILES[fmt]


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"Export folder '{out}' already exists and is not empty. Choose another --out, "
                              "or pass --force to replace it.")


# torch's exporters keep process-wide state (two at once in one process fail with "Trying to pop
# empty mode stack"): exports from several threads (the web app, a script) run one at a time.
_EXPORT_LOCK = threading.RLock()


# Each format, once: its writer makes the files and checks them against the run (settings.EXPORT_FORMATS
# lists the names; a test keeps the two in step).
WRITERS = {"onnx": write_onnx, "tm": write_tm, "torchscript": write_torchscript, "keras": write_keras,
           "tfjs": write_tfjs, "webpage": write_webpage}


def _one_at_a_time(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _EXPORT_LOCK:
            return fn(*args, **kwargs)
    return locked


@_one_at_a_time
def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, int8: bool = False,
           force: bool = False, check_limit: int = CHECK_LIMIT) -> Path:
    """Export a finished run and prove the export predicts the same as the run.

    Thread-safe: concurrent calls in one process run one after the other.

    Args:
        run_dir: a run directory from `diycnn train`.
        fmt: "onnx", "torchscript", "keras" (Keras-style spec models only), "tm" (ONNX plus
            Teachable Machine's labels.txt and metadata.json) or "tfjs" (TensorFlow.js layers
            model plus those files; spec models only; checked in TensorFlow.js under Node.js, on
            at most TFJS_CHECK_LIMIT photos).
        out: export folder (default RUN/export-FORMAT); must be new or empty unless `force`.
        int8: ONNX formats only: also write model.int8.onnx (static int8, calibrated on training
            photos) and report its accuracy change on the checked photos.

    Returns:
        The export folder; its export.json records the format, preprocessing and the check.

    Raises:
        ValueError: unknown or inapplicable format (the message lists the formats that apply),
            or the export did not predict the same (ExportError).
        FileExistsError: `out` holds files and `force` is off.
    """

    run, model_file = _run_and_model_file(run_dir, fmt, int8)
    if model_file == TFJS_MODEL_FILE or fmt == "webpage":
        check_limit = min(check_limit, TFJS_CHECK_LIMIT)
    out = Path(out) if out is not None else run.dir / f"export-{fmt}"
    _prepare_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    images, labels, source = check_photos(run, check_limit)
    wrapper = export_module(run)
    t0 = time.perf_counter()
    want = torch_probs(wrapper, images)
    info = _export_info(run, fmt, model_file)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        job = Job(fmt, run, wrapper, images, labels, want, source, tmp, tmp / model_file, info, int8)
        WRITERS[fmt](job)  # writes the model files into tmp and fills info["check"] (and more) by running them
        if needs_face_inputs(run, model_file):
            # predict.py (with landmarks.onnx to align) writes the faces the model takes from photos,
            # without diycnn or torch (README.txt says how)
            shutil.copyfile(Path(__file__).with_name("standalone_predict.py"), tmp / "predict.py")
            if run.preprocessing.align:
                info["landmarks"] = landmarks_onnx(tmp / "landmarks.onnx")
        info["check"]["labels_agree_with_run_predict"] = int((run.predict_arrays(images).argmax(1)
                                                              == want.argmax(1)).sum())
        info["seconds"] = time.perf_counter() - t0
        (tmp / "labels.txt").write_text(labels_txt(run.class_names), encoding="utf-8")
        (tmp / "README.txt").write_text(readme(fmt, run, info), encoding="utf-8")
        atomic_write_json(tmp / "export.json", to_jsonable(info))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _run_and_model_file(run_dir: str | Path, fmt: str, int8: bool) -> tuple[Run, str]:
    """The run, loaded on the CPU, and the file `fmt` writes for it.

    Raises:
        ValueError: an unknown format, one that does not apply to this run, an export folder given
            as the run, or --int8 for a format that is not ONNX.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format '{fmt}'. Formats: {', '.join(FORMATS)}.")
    if (Path(run_dir) / "export.json").is_file():
        raise ValueError(f"'{run_dir}' is already an export; export from the run directory it came from.")
    run = Run(run_dir, device="cpu")
    allowed = formats_for(run)
    if fmt not in allowed:
        raise ValueError(
            f"Format '{fmt}' does not apply to run '{run.name}': its model '{run.recipe.name}' is on the backbone "
            f"{run.recipe.backbone}; Keras exports cover Keras-style spec models (seed-cnn, seed-cnn-plus, your "
            f".yaml/.json specs), TensorFlow.js those, the EfficientNet-Lite backbones and the face network; the web "
            f"page those TF.js carries whose photos are not face-cropped or aligned (the page does not find faces). "
            f"Formats for this run: {', '.join(allowed)}."
        )
    model_file = _model_file(run, fmt)
    if int8 and not model_file.endswith(".onnx"):
        raise ValueError(f"--int8 applies to ONNX exports only ('onnx'; 'tm' only for runs TF.js cannot carry), "
                         f"not '{fmt}' of this run ({model_file}). Export with --format onnx --int8.")
    return run, model_file


def _export_info(run: Run, fmt: str, model_file: str) -> dict[str, Any]:
    """export.json's contents before the model is written and checked (the writer adds "check")."""
    feed = ("teachable" if fmt == "tm" and model_file == TFJS_MODEL_FILE else "float32" if fmt in FLOAT_INPUT
            else "page" if fmt == "webpage" else "uint8")
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "export_format": fmt,
        "model_file": model_file, "class_names": list(run.class_names),
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(run.class_names)]},
        "preprocessing": run.preprocessing.to_dict(), "steps": preprocessing_steps(run.preprocessing, feed),
        "tta": run.tta,
        "run": {"name": run.name, "dir": str(run.dir.resolve()), "recipe": run.recipe.name,
                "backbone": run.recipe.backbone, "test_accuracy": run.metrics.test_accuracy},
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished export into place; an old export is removed only after the new one is there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
