"""Export a run so it predicts the same everywhere: ONNX, TorchScript, Keras, TensorFlow.js and Teachable
Machine's files.

Every export is checked when it is written: the exported model runs the run's test photos
(or, when the data folder is gone, seeded synthetic photos) and its probabilities must equal
torch's within `TOLERANCE`, or the export fails and nothing is left behind.

ONNX and TorchScript exports take what `Preprocessing.load` gives: uint8 photos (N, H, W, 3),
already decoded, face-cropped, resized and centre-cropped as export.json records; pixel
scaling, mean/std normalisation, the softmax and (when the run uses it) test-time
augmentation are inside the exported graph, so they cannot be forgotten or done differently.
The Keras export is the spec's own layers (as the blog's readers wrote them), so it takes
float pixels already scaled and normalised, as export.json says; so does the TF.js export. The
`tm` export is what Teachable Machine's own export gives (TF.js files + metadata.json, for
`tmImage.load`): the TF.js model with a first layer that takes pixels as Teachable Machine's
library feeds them (p / 127 - 1). Runs TF.js cannot carry get ONNX with Teachable Machine's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..data.split import read_split
from ..io import atomic_write_bytes, atomic_write_json, to_jsonable
from ..settings import EXPORT_FORMATS as FORMATS, export_formats_for
from .onnx_sizes import freeze_sizes
from .runtime import EXPORT_FORMAT, EXPORT_VERSION, MODEL_FILES
from .snippets import snippets

log = logging.getLogger(__name__)

FLOAT_INPUT = ("keras", "tfjs")  # formats fed float32 pixels, scaled as the steps say (the others: uint8)
TFJS_CHECK_LIMIT = 8  # TensorFlow.js in Node.js runs the blog's model at seconds per photo
OPSET = 18
TOLERANCE = 1e-4  # max |p_export - p_torch| over every checked photo and class
CHECK_LIMIT = 1000  # test photos run through both models at export time
SYNTHETIC_PHOTOS = 16
CALIBRATION_PHOTOS = 64  # training photos that calibrate int8 activation ranges


class ExportError(ValueError):
    """The export could not be made or did not predict the same as the run."""


def formats_for(run) -> list[str]:
    """The export formats that apply to a run (settings.export_formats_for)."""
    return export_formats_for(run.recipe.kind, run.recipe.backbone)


def tm_is_tfjs(run) -> bool:
    """Whether a `tm` export of this run is TF.js, Teachable Machine's own format: when TF.js carries
    the run and its input is square (Teachable Machine's library feeds a centred square)."""
    h, w = run.preprocessing.output_size
    return "tfjs" in formats_for(run) and h == w


def _model_file(run, fmt: str) -> str:
    return "model.json" if fmt == "tm" and tm_is_tfjs(run) else MODEL_FILES[fmt]


def _export_module(run):
    """The run's model as uint8 (N, H, W, 3) photos -> probabilities (N, classes), fp32, on the CPU."""
    import torch
    from torch import nn

    prep = run.preprocessing

    class ExportModule(nn.Module):
        def __init__(self, module: nn.Module, tta: bool):
            super().__init__()
            self.module = module
            self.tta = tta
            self.scale = float(prep.input_scale)
            self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).to(torch.float32) * self.scale
            x = (x - self.mean) / self.std
            probs = torch.softmax(self.module(x), dim=1)
            if self.tta:
                probs = (probs + torch.softmax(self.module(torch.flip(x, dims=[3])), dim=1)) / 2
            return probs

    module = run.module.to("cpu", dtype=torch.float32).to(memory_format=torch.contiguous_format).eval()
    return ExportModule(module, run.tta).eval()


def _torch_probs(wrapper, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(wrapper(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))).numpy())
    return np.concatenate(out)


def _split_photos(run, split: str, limit: int, seed: int | None = None):
    """Decoded photos of one split of the run: (uint8 images, labels, count in the split), or None
    when the data folder is gone or none of them can be read. `seed` picks a random sample."""
    from ..data.loader import decode_all

    data = Path(run.info.get("data") or "")
    split_path = run.dir / "split.json"
    if not (data.is_dir() and split_path.is_file()):
        return None
    chosen = read_split(split_path).assignment[split]
    items = [(rel, run.class_names.index(c)) for c, rels in chosen.items() if c in run.class_names for rel in rels]
    total = len(items)
    if seed is not None and len(items) > limit:
        items = [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), limit, replace=False))]
    items = items[:limit]
    images, ok, _ = decode_all([data / rel for rel, _ in items], run.preprocessing)
    if not ok:
        return None
    return images, np.array([items[i][1] for i in ok]), total


def check_photos(run, limit: int = CHECK_LIMIT) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The photos an export is checked on: (uint8 (N, H, W, 3), labels or None, where they came from).

    The run's test photos when its data folder is still there; otherwise seeded synthetic photos.
    """
    found = _split_photos(run, "test", limit)
    if found is not None:
        images, labels, total = found
        return images, labels, f"{len(images)} of the run's {total} test photos in {run.info['data']}"
    reason = f"the run's test photos in '{run.info.get('data')}' are not available"
    h, w = run.preprocessing.output_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (SYNTHETIC_PHOTOS, h, w, 3), dtype=np.uint8)
    log.warning("Export check uses %d synthetic photos: %s.", SYNTHETIC_PHOTOS, reason)
    return images, None, f"{SYNTHETIC_PHOTOS} seeded synthetic photos ({reason})"


def _compare(name: str, got: np.ndarray, want: np.ndarray, source: str) -> dict[str, Any]:
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


def _unchecked(why: str) -> dict[str, Any]:
    """export.json's check of an export written where its engine cannot run (TF.js without Node.js)."""
    log.warning("The export was written but not checked: %s", why)
    return {"status": "unchecked", "why": why, "photos": 0, "tolerance": TOLERANCE}


def check_line(check: dict[str, Any]) -> str:
    """One line on how an export was checked (the CLI and README.txt say it)."""
    if check.get("status") == "unchecked":
        return f"Not checked: {check['why']}"
    return (f"Checked on {check['source']}: max probability difference from the run {check['max_abs_diff']:.2g} "
            f"(tolerance {check['tolerance']}), same label on {check['same_labels']}/{check['photos']}.")


def _onnx(wrapper, images: np.ndarray, path: Path) -> dict[str, Any]:
    import torch

    example = torch.from_numpy(np.ascontiguousarray(images[:2] if len(images) >= 2 else np.repeat(images, 2, 0)))
    return {"opset": OPSET, "input": _image_input(images), "exporter": _to_onnx(wrapper, example, path, "probabilities")}


def _to_onnx(module, example, path: Path, output: str) -> str:
    """torch.onnx.export with a dynamic batch; returns which exporter wrote the file. The TorchScript-based
    exporter first: measured 1.7 s against the dynamo exporter's 10 s for the face network (2-core Zen 3).
    Where it fails (it is deprecated, and some graphs it cannot trace) the dynamo exporter writes it. Either
    way the caller checks the file against PyTorch."""
    import torch

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporters print progress
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=[output], dynamic_axes={"image": {0: "batch"}})
            exporter = "torchscript"
        except Exception as exc:  # noqa: BLE001 (any failure of the old exporter: the new one decides)
            log.info("TorchScript-based ONNX export failed (%s: %s); using the dynamo exporter", type(exc).__name__, exc)
            Path(path).unlink(missing_ok=True)
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=OPSET, input_names=["image"],
                              output_names=[output], dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                              external_data=False, verbose=False)
            exporter = "dynamo"
    freeze_sizes(path, (1, *example.shape[1:]))  # every shape knowable: what loading an export checks
    return exporter


def _landmarks_onnx(path: Path) -> dict[str, Any]:
    """face-api's landmark network as ONNX (uint8 (N, 112, 112, 3) -> (N, 68, 2) in [0, 1] of the
    padded square), for runs that align faces: the export folder then aligns without torch.
    Checked against the PyTorch network on seeded inputs."""
    import torch

    from ..data import align
    from ..models import face_weights
    from ..models.face_net import LandmarksFromPixels, load_face_landmark_net

    manifest = face_weights.landmark_manifest()
    module = LandmarksFromPixels(load_face_landmark_net(manifest)).eval()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, align.LANDMARK_INPUT, align.LANDMARK_INPUT, 3), dtype=np.uint8)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    # The network is the same for every face run: exported once (~10 s) and kept beside its weights,
    # named by what made it; every copy is checked against PyTorch below all the same.
    kept = manifest.parent / f"landmarks-opset{OPSET}-torch{torch.__version__.split('+')[0]}.onnx"
    if kept.is_file() and not kept.is_symlink():
        shutil.copyfile(kept, path)
    else:
        _to_onnx(module, torch.from_numpy(x), path, "landmarks")
    try:
        got = onnx_session(path).run(None, {"image": x})[0]
    except Exception as exc:  # a damaged kept copy: onnxruntime raises its own types
        got, why = None, f"{type(exc).__name__}: {exc}"
    diff = float(np.abs(got - want).max()) if got is not None and got.shape == want.shape else float("inf")
    if not diff <= 1e-4:
        kept.unlink(missing_ok=True)  # made again by the next export
        raise ExportError(f"The landmark network's ONNX export differs from PyTorch ({diff:.2g} > 1e-4"
                          + (f"; {why}" if got is None else "") + "). Export again.")
    if not kept.is_file():
        with contextlib.suppress(OSError):  # a read-only weights folder: exported again next time
            atomic_write_bytes(kept, path.read_bytes())
    return {"file": path.name, "input": "uint8 (N, 112, 112, 3): the photo padded to a centred black square, "
                                        "resized (bilinear)", "output": "(N, 68, 2) x, y in [0, 1] of that square",
            "eyes": list(align.EYES), "max_abs_diff": diff}


def _image_input(images: np.ndarray) -> dict[str, Any]:
    """export.json's description of the model input: uint8 photos, batch first, channels last."""
    return {"name": "image", "dtype": "uint8", "layout": "NHWC (batch, height, width, RGB)",
            "shape": [None, *images.shape[1:]]}


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probs(session, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: np.ascontiguousarray(images[i:i + batch_size])})[0]
                           for i in range(0, len(images), batch_size)])


def _int8(run, path: Path, out: Path, images: np.ndarray, labels: np.ndarray | None,
          fp32: np.ndarray) -> dict[str, Any]:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on up to CALIBRATION_PHOTOS
    training photos, with the accuracy change it costs on the checked photos."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    found = _split_photos(run, "train", CALIBRATION_PHOTOS, seed=0)
    calibration, source = ((found[0], f"{len(found[0])} training photos") if found is not None
                           else (images, "the checked photos (training photos not available)"))

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        pre.unlink(missing_ok=True)
    probs = onnx_probs(onnx_session(out), images)
    result = {"file": out.name, "method": "static int8 (QDQ, per-channel weights)", "calibrated_on": source,
              "size_bytes": out.stat().st_size, "fp32_size_bytes": path.stat().st_size,
              "max_abs_diff_vs_fp32": float(np.abs(probs - fp32).max()),
              "same_labels_as_fp32": int((probs.argmax(1) == fp32.argmax(1)).sum()), "photos": int(len(images))}
    if labels is not None:
        acc32, acc8 = float((fp32.argmax(1) == labels).mean()), float((probs.argmax(1) == labels).mean())
        result.update({"test_accuracy_fp32": acc32, "test_accuracy_int8": acc8, "accuracy_change": acc8 - acc32})
    return result


def _torchscript(wrapper, images: np.ndarray, path: Path) -> np.ndarray:
    import torch

    example = torch.from_numpy(np.ascontiguousarray(images[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still works
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        path.write_bytes(buf.getvalue())
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return _torch_probs(loaded, images)


def _labels_txt(class_names: list[str]) -> str:
    return "".join(f"{i} {c}\n" for i, c in enumerate(class_names))


def _tm_metadata(run, image_size: tuple[int, int], tfjs: str | None = None) -> dict[str, Any]:
    """Teachable Machine's metadata.json fields, filled truthfully (an ONNX model unless `tfjs`
    gives the TensorFlow.js version the export was checked with)."""
    from .. import __version__

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
        "modelFile": "model.json" if tfjs else "model.onnx",
        "preprocessingFile": "export.json",
    }


def _steps(prep, feed: str) -> list[str]:
    """The preprocessing in words, in order; `feed` is what the model takes: "uint8" pixels,
    "float32" pixels normalised as the run does, or "teachable" (pixels / 127 - 1)."""
    steps = ["decode the photo, apply its EXIF orientation, first frame of animations",
             f"convert to RGB; transparent pixels become RGB{tuple(prep.background)}"]
    if prep.faces:
        steps.append(f"crop the largest face (OpenCV haarcascade_frontalface_default) with a margin of "
                     f"{prep.face_margin} of its size per side; no face: {prep.no_face} the photo")
    if prep.align:
        from ..data.align import EYES

        steps.append(f"align the face: 68 landmarks from face-api.js's landmark network (landmarks.onnx in ONNX "
                     f"exports), then rotate and scale so the eye centres sit at ({EYES[0]:.0%}, {EYES[2]:.0%}) and "
                     f"({EYES[1]:.0%}, {EYES[2]:.0%}) of a {max(prep.size)}-pixel square (bilinear); landmarks "
                     f"that do not look like a face's: {prep.no_face} the photo")
    h, w = prep.size
    steps.append({"squash": f"resize to {w}x{h} (width x height), ignoring the aspect ratio",
                  "center-crop": f"crop the largest centred square, resize it to {w}x{h}",
                  "shorter": f"resize so the shorter side is {h}, keeping the aspect ratio"}[prep.resize]
                 + f" ({prep.interpolation} interpolation, Pillow)")
    if prep.crop:
        steps.append(f"crop the centre {prep.crop[1]}x{prep.crop[0]}")
    norm = f"pixels * {prep.input_scale:.8g}, then (x - mean {list(prep.mean)}) / std {list(prep.std)} per channel"
    if feed == "teachable":
        if prep.resize != "center-crop" or prep.crop:
            steps.append("(Teachable Machine's library crops the centred square and resizes it with the browser's "
                         "canvas instead of the resizing above: photos that are not square are seen differently)")
        steps.append(f"pixels / 127 - 1, as Teachable Machine's library feeds them; feed float32 (N, H, W, 3); the "
                     f"model's first layer does the run's own scaling ({norm}), softmax last")
    elif feed == "float32":
        steps.append(f"{norm}; feed float32 (N, H, W, 3)")
    else:
        steps.append(f"feed uint8 (N, H, W, 3); the model itself does: {norm}, softmax")
    return steps


def _readme(fmt: str, run, info: dict[str, Any]) -> str:
    lines = [f"diycnn export of run '{run.name}' ({info['run']['recipe']}), format {fmt}.", "",
             f"Classes (output order): {', '.join(run.class_names)}", "", "Preprocessing, in order:"]
    lines += [f"  {i + 1}. {s}" for i, s in enumerate(info["steps"])]
    lines.append("")
    tfjs = info["model_file"] == "model.json"
    if fmt in ("onnx", "tm") and not tfjs:
        lines += ["Use it without diycnn (pip install onnxruntime pillow numpy):",
                  "    python predict.py photo.jpg [more photos or folders] [--model model.int8.onnx]",
                  "or with diycnn (torch is not imported):",
                  "    diycnn predict THIS_FOLDER photo.jpg --json"]
    elif fmt == "torchscript":
        lines += ["Load it with torch only:", "    model = torch.jit.load('model.torchscript.pt').eval()",
                  "    probabilities = model(uint8_tensor_of_shape_N_H_W_3)"]
    elif fmt == "tm" and info["model_file"] == "model.json":
        lines += ["Teachable Machine's own export format: load it with its library (@teachablemachine/image 0.8 "
                  "or later reads imageSize from metadata.json) or with TensorFlow.js:",
                  "    const model = await tmImage.load('model.json', 'metadata.json');",
                  "    const predictions = await model.predict(imageOrCanvasOrVideo);",
                  "The model takes float32 (n, height, width, 3) pixels / 127 - 1, as Teachable Machine's library "
                  "feeds them."]
    elif fmt == "tfjs":
        lines += ["Load it with TensorFlow.js (browser or Node.js; serve this folder over HTTP for a browser):",
                  "    const model = await tf.loadLayersModel('model.json');",
                  "    const probabilities = model.predict(tf.tensor(float32Pixels, [n, height, width, 3]));",
                  "metadata.json has Teachable Machine's fields; pixels are scaled as the steps above say "
                  "(not as Teachable Machine's own library scales them)."]
    else:
        lines += ["Load it with Keras 3 (any backend):", "    model = keras.saving.load_model('model.keras')",
                  "    probabilities = model.predict(float32_array_of_shape_N_H_W_3)"]
    if _needs_face_inputs(run, info["model_file"]):
        lines += ["", _face_input_note(run.preprocessing)]
    for snippet in snippets(info):
        lines += ["", f"{snippet['language']}, to copy and paste:", ""]
        lines += ["    " + line for line in snippet["code"].splitlines()]
    lines += ["", "At export time: " + check_line(info["check"])]
    return "\n".join(lines) + "\n"


def _needs_face_inputs(run, model_file: str) -> bool:
    """Whether the exported model takes a face the run cropped or aligned but cannot do that itself (every
    format but ONNX, whose folder crops and aligns): such folders ship predict.py --save-inputs."""
    return not model_file.endswith(".onnx") and (run.preprocessing.faces or run.preprocessing.align)


def _face_input_note(prep) -> str:
    """README.txt's words for an export whose model takes the cropped or aligned face (_needs_face_inputs):
    what it takes and how to make that from a photo."""
    h, w = prep.output_size
    what = ("the face aligned as diycnn aligns it: eyes levelled at (30%, 30%) and (70%, 30%) of the image by "
            "face-api's 68-point landmark network (landmarks.onnx here)" if prep.align
            else "the largest face cropped with OpenCV's Haar cascade, as the steps above say")
    return (f"This model takes {what}, {w}x{h} pixels; a whole photo gives wrong answers. Make those images "
            "from photos with predict.py (pip install onnxruntime pillow numpy"
            + (" opencv-python-headless" if prep.faces else "") + "):\n"
            "    python predict.py --save-inputs inputs/ photo.jpg [more photos or folders]\n"
            "then give inputs/*.png to the model as the snippet below does.")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"Export folder '{out}' already exists and is not empty. Choose another --out, "
                              "or pass --force to replace it.")


# torch's exporters keep process-wide state (two at once in one process fail with "Trying to pop
# empty mode stack"): exports from several threads (the web app, a script) run one at a time.
_EXPORT_LOCK = threading.RLock()


@dataclasses.dataclass
class _Job:
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


def _write_onnx(job: _Job) -> None:
    """model.onnx (+ int8, predict.py, landmarks.onnx for aligned faces, TM's metadata for `tm`)."""
    import onnxruntime

    run, info = job.run, job.info
    info.update(_onnx(job.wrapper, job.images, job.model_path))
    info["versions"]["onnxruntime"] = onnxruntime.__version__
    got = onnx_probs(onnx_session(job.model_path), job.images)
    info["check"] = _compare("ONNX", got, job.want, job.source)
    if job.int8:
        info["int8"] = _int8(run, job.model_path, job.tmp / "model.int8.onnx", job.images, job.labels, got)
    shutil.copyfile(Path(__file__).with_name("standalone_predict.py"), job.tmp / "predict.py")
    if run.preprocessing.align:  # the folder aligns faces itself, with the landmark network in ONNX
        info["landmarks"] = _landmarks_onnx(job.tmp / "landmarks.onnx")
    if job.fmt == "tm":
        atomic_write_json(job.tmp / "metadata.json", _tm_metadata(run, run.preprocessing.output_size))


def _write_torchscript(job: _Job) -> None:
    job.info["input"] = _image_input(job.images)
    job.info["check"] = _compare("TorchScript", _torchscript(job.wrapper, job.images, job.model_path), job.want,
                                 job.source)


def _mirror_note(engine: str, how: str) -> str:
    return f"the run averages each photo with its mirror image; the {engine} model does not: {how}"


def _write_tfjs(job: _Job, teachable: bool = False) -> None:
    """model.json + weights.bin (spec models, EfficientNet-Lite backbones, the face network), run in
    TF.js under Node.js; `teachable`: taking Teachable Machine's pixels (the tm format)."""
    from .. import __version__
    from .tfjs_format import TFJS_VERSION, find_tfjs, tfjs_missing_message, tfjs_predict, write_tfjs

    run, info = job.run, job.info
    adapter = run.preprocessing if teachable else None
    if run.recipe.kind == "spec":
        info["tfjs"] = write_tfjs(run.recipe.spec, run.module, job.tmp, f"diycnn {__version__}", prep=adapter)
    else:
        from .tfjs_backbone import write_tfjs_backbone

        h, w = run.preprocessing.output_size
        info["tfjs"] = write_tfjs_backbone(run.recipe, run.module, (h, w, 3), job.tmp, f"diycnn {__version__}",
                                           prep=adapter)
    scaled = (job.images.astype(np.float32) / 127 - 1 if teachable
              else _normalised(run.preprocessing, job.images))
    if run.tta:
        info["tta_note"] = _mirror_note("TF.js", "average the predictions of the photo and of its mirror image")
    info["input"] = {**_image_input(job.images), "dtype": "float32",
                     "pixels": "pixels / 127 - 1 (Teachable Machine's)" if teachable
                     else "scaled and normalised as 'steps' says"}
    if find_tfjs() is None:  # written all the same: export.json and the CLI say it is unchecked, and how to check it
        info["versions"]["tfjs"] = TFJS_VERSION
        info["check"] = _unchecked(tfjs_missing_message())
    else:
        views = np.concatenate([scaled, scaled[:, :, ::-1]]) if run.tta else scaled  # one TF.js start
        got, info["versions"]["tfjs"] = tfjs_predict(job.tmp, views)
        if run.tta:
            got = (got[:len(scaled)] + got[len(scaled):]) / 2
        info["check"] = _compare("TensorFlow.js", got, job.want, job.source)
        info["check"]["engine"] = f"TensorFlow.js {info['versions']['tfjs']} (Node.js)"
    atomic_write_json(job.tmp / "metadata.json", _tm_metadata(run, run.preprocessing.output_size,
                                                              tfjs=info["versions"]["tfjs"]))


def _write_keras(job: _Job) -> None:
    """model.keras (Keras 3), run through Keras itself."""
    from .keras_format import export_keras

    run, info = job.run, job.info
    scaled = _normalised(run.preprocessing, job.images)
    model, info["versions"]["keras"] = export_keras(run, job.model_path)

    def predict(x):
        return np.asarray(model.predict(np.ascontiguousarray(x), verbose=0, batch_size=32))

    info["input"] = {**_image_input(job.images), "dtype": "float32", "pixels": "scaled and normalised as 'steps' says"}
    got = predict(scaled)
    if run.tta:
        info["tta_note"] = _mirror_note("Keras", "average model(x) and model(x[:, :, ::-1]) to get the same numbers")
        got = (got + predict(scaled[:, :, ::-1])) / 2
    info["check"] = _compare("Keras", got, job.want, job.source)


def _write_tm(job: _Job) -> None:
    """Teachable Machine's files: TF.js taking its pixels where TF.js carries the run (export() chose
    the model file with tm_is_tfjs), else ONNX."""
    if job.model_path.name == "model.json":
        _write_tfjs(job, teachable=True)
    else:
        _write_onnx(job)


# Each format, once: its writer makes the files and checks them against the run (settings.EXPORT_FORMATS
# lists the names; a test keeps the two in step).
WRITERS = {"onnx": _write_onnx, "tm": _write_tm, "torchscript": _write_torchscript, "keras": _write_keras,
           "tfjs": _write_tfjs}


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
    from ..run import Run, versions

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
            f".yaml/.json specs), TensorFlow.js those, the EfficientNet-Lite backbones and the face network. "
            f"Formats for this run: {', '.join(allowed)}."
        )
    model_file = _model_file(run, fmt)
    if int8 and not model_file.endswith(".onnx"):
        raise ValueError(f"--int8 applies to ONNX exports only ('onnx'; 'tm' only for runs TF.js cannot carry), "
                         f"not '{fmt}' of this run ({model_file}). Export with --format onnx --int8.")
    if model_file == "model.json":
        check_limit = min(check_limit, TFJS_CHECK_LIMIT)
    feed = ("teachable" if fmt == "tm" and model_file == "model.json" else "float32" if fmt in FLOAT_INPUT
            else "uint8")
    out = Path(out) if out is not None else run.dir / f"export-{fmt}"
    _prepare_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    images, labels, source = check_photos(run, check_limit)
    wrapper = _export_module(run)
    t0 = time.perf_counter()
    want = _torch_probs(wrapper, images)
    info: dict[str, Any] = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "export_format": fmt,
        "model_file": model_file, "class_names": list(run.class_names),
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(run.class_names)]},
        "preprocessing": run.preprocessing.to_dict(), "steps": _steps(run.preprocessing, feed), "tta": run.tta,
        "run": {"name": run.name, "dir": str(run.dir.resolve()), "recipe": run.recipe.name,
                "backbone": run.recipe.backbone, "test_accuracy": run.metrics.get("test_accuracy")},
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        job = _Job(fmt, run, wrapper, images, labels, want, source, tmp, tmp / model_file, info, int8)
        WRITERS[fmt](job)  # writes the model files into tmp and fills info["check"] (and more) by running them
        if _needs_face_inputs(run, model_file):
            # predict.py (with landmarks.onnx to align) writes the faces the model takes from photos,
            # without diycnn or torch (README.txt says how)
            shutil.copyfile(Path(__file__).with_name("standalone_predict.py"), tmp / "predict.py")
            if run.preprocessing.align:
                info["landmarks"] = _landmarks_onnx(tmp / "landmarks.onnx")
        info["check"]["labels_agree_with_run_predict"] = int((run.predict_arrays(images).argmax(1)
                                                              == want.argmax(1)).sum())
        info["seconds"] = time.perf_counter() - t0
        (tmp / "labels.txt").write_text(_labels_txt(run.class_names), encoding="utf-8")
        (tmp / "README.txt").write_text(_readme(fmt, run, info), encoding="utf-8")
        atomic_write_json(tmp / "export.json", to_jsonable(info))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _normalised(prep, images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) * np.float32(prep.input_scale)
    return ((x - np.array(prep.mean, np.float32)) / np.array(prep.std, np.float32)).astype(np.float32)


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished export into place; an old export is removed only after the new one is there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


__all__ = ["export", "FORMATS", "formats_for", "check_line", "ExportError", "TOLERANCE"]
