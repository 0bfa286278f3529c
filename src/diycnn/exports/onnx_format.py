"""ONNX: the run's model (and, for aligned faces, the landmark network) through torch's exporter,
checked in onnxruntime; optional static int8.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..data import align
from ..io import atomic_write_bytes, atomic_write_json
from ..models import face_weights
from .checking import check_scores, scored_export_module, split_photos
from .job import ExportError, Job, compare, image_input, tm_metadata
from .onnx_sizes import freeze_sizes

log = logging.getLogger(__name__)


OPSET = 18


UNKNOWN_OUTPUT = "unknown_score"  # the ONNX model's second output, where the run can say "none of these"

CALIBRATION_PHOTOS = 64  # training photos that calibrate int8 activation ranges


def onnx_session(path: Path):
    import onnxruntime as ort  # noqa: PLC0415 (lazy: loads onnxruntime)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


FEATURES_AGREE = 1e-4  # onnxruntime's features against PyTorch's, relative to their largest magnitude


def feature_runner(backbone, example, torch_forward) -> Any:
    """A frozen backbone in onnxruntime, for extracting features on the CPU: a function of
    normalised float32 batches (B, 3, H, W) (torch tensors) -> (B, F) numpy features. None (PyTorch
    extracts them, `torch_forward`) where the backbone cannot be exported, where its features
    there differ from PyTorch's on the batch `example` by more than FEATURES_AGREE, or where
    onnxruntime is not faster on it. Measured on 2 Zen 4 cores, fp32: EfficientNet-Lite0 at 224 px
    12 ms a photo against PyTorch's 18-35 (channels-last), the same numbers to 1e-5; the face
    network about level (6-9 ms), so the check batch decides."""
    import tempfile  # noqa: PLC0415

    import onnxruntime as ort  # noqa: PLC0415 (lazy: loads onnxruntime)
    import torch  # noqa: PLC0415 (lazy: loads torch)

    try:
        net = copy.deepcopy(backbone).float().to(memory_format=torch.contiguous_format).eval()
        with tempfile.TemporaryDirectory(prefix="diycnn-features-") as tmp:
            path = Path(tmp) / "backbone.onnx"
            with torch.no_grad():
                to_onnx(net, example[:1].contiguous(), path, "features", freeze=False)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(batch) -> np.ndarray:
            return session.run(None, {"image": np.ascontiguousarray(batch.numpy(), dtype=np.float32)})[0]

        def torch_features(x) -> np.ndarray:
            with torch.no_grad():
                return torch_forward(x).detach().float().numpy()

        def timed(forward) -> tuple[float, np.ndarray]:
            forward(example)  # (warm-up: the first call prepares kernels)
            start = time.perf_counter()
            result = forward(example)
            return time.perf_counter() - start, result

        (torch_seconds, want), (onnx_seconds, got) = timed(torch_features), timed(run)
        seconds = {"torch": torch_seconds, "onnxruntime": onnx_seconds}
        worst = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)
    except Exception as exc:  # noqa: BLE001 (any failure: PyTorch extracts the features instead)
        log.warning("Features are extracted with PyTorch: onnxruntime could not run the backbone (%s: %s)",
                    type(exc).__name__, exc)
        return None
    if worst > FEATURES_AGREE:
        log.warning("Features are extracted with PyTorch: onnxruntime's differ by %.2g (relative)", worst)
        return None
    if seconds["onnxruntime"] >= seconds["torch"]:
        log.info("Features extracted with PyTorch (onnxruntime %.3f s, PyTorch %.3f s on %d photos)",
                 seconds["onnxruntime"], seconds["torch"], len(example))
        return None
    log.info("Features extracted with onnxruntime (%.3f s against PyTorch's %.3f s on %d photos; relative "
             "difference %.1g)", seconds["onnxruntime"], seconds["torch"], len(example), worst)
    return run


def onnx_probs(session, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return onnx_outputs(session, images, batch_size)[0]


def onnx_outputs(session, images: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
    """Every output of the model (probabilities, and the unknown score where it has one) for all photos."""
    name = session.get_inputs()[0].name
    batches = [session.run(None, {name: np.ascontiguousarray(images[i:i + batch_size])})
               for i in range(0, len(images), batch_size)]
    return [np.concatenate([b[k] for b in batches]) for k in range(len(batches[0]))]


def _onnx(wrapper, images: np.ndarray, path: Path, outputs: tuple[str, ...] = ("probabilities",)) -> dict[str, Any]:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    example = torch.from_numpy(np.ascontiguousarray(images[:2] if len(images) >= 2 else np.repeat(images, 2, 0)))
    return {"opset": OPSET, "input": image_input(images), "exporter": to_onnx(wrapper, example, path, *outputs)}


def to_onnx(module, example, path: Path, *outputs: str, freeze: bool = True) -> str:
    """torch.onnx.export with a dynamic batch; returns which exporter wrote the file. The TorchScript-based
    exporter first: measured 1.7 s against the dynamo exporter's 10 s for the face network (2-core Zen 3).
    Where it fails (it is deprecated, and some graphs it cannot trace) the dynamo exporter writes it. Either
    way the caller checks the file against PyTorch."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporters print progress
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=list(outputs), dynamic_axes={"image": {0: "batch"}})
            exporter = "torchscript"
        except Exception as exc:  # noqa: BLE001 (any failure of the old exporter: the new one decides)
            log.info("TorchScript-based ONNX export failed (%s: %s); using the dynamo exporter", type(exc).__name__, exc)
            Path(path).unlink(missing_ok=True)
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=OPSET, input_names=["image"],
                              output_names=list(outputs), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                              external_data=False, verbose=False)
            exporter = "dynamo"
    if freeze:  # (an export's input is uint8 photos)
        freeze_sizes(path, (1, *example.shape[1:]))  # every shape knowable: what loading an export checks
    return exporter


def landmarks_onnx(path: Path) -> dict[str, Any]:
    """face-api's landmark network as ONNX (uint8 (N, 112, 112, 3) -> (N, 68, 2) in [0, 1] of the
    padded square), for runs that align faces: the export folder then aligns without torch.
    Checked against the PyTorch network on seeded inputs."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    from ..models.face_net import LandmarksFromPixels, load_face_landmark_net  # noqa: PLC0415 (lazy: loads torch)

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
        to_onnx(module, torch.from_numpy(x), path, "landmarks")
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


def _int8(run, path: Path, out: Path, images: np.ndarray, labels: np.ndarray | None,
          fp32: np.ndarray) -> dict[str, Any]:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on up to CALIBRATION_PHOTOS
    training photos, with the accuracy change it costs on the checked photos."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: PLC0415 (lazy: loads onnxruntime)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415 (lazy: loads onnxruntime)

    found = split_photos(run, "train", CALIBRATION_PHOTOS, seed=0)
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


def _unknown_output(run, scored, images: np.ndarray, got: np.ndarray, source: str) -> dict[str, Any]:
    """export.json's "unknown": the output, the run's threshold, and the check of the ONNX scores."""
    return {"output": UNKNOWN_OUTPUT, **check_scores(run, scored, images, got, source, "ONNX"),
            "rule": f"a photo whose {UNKNOWN_OUTPUT} is above the threshold is of none of the classes"}


def write_onnx(job: Job) -> None:
    """model.onnx (+ int8, predict.py, landmarks.onnx for aligned faces, TM's metadata for `tm`)."""
    import onnxruntime  # noqa: PLC0415 (lazy: loads onnxruntime)

    run, info = job.run, job.info
    scored, why = scored_export_module(run)
    if scored is None:
        info.update(_onnx(job.wrapper, job.images, job.model_path))
        info["unknown"] = {"output": None, "why": why}
    else:
        info.update(_onnx(scored, job.images, job.model_path, outputs=("probabilities", UNKNOWN_OUTPUT)))
    info["versions"]["onnxruntime"] = onnxruntime.__version__
    outputs = onnx_outputs(onnx_session(job.model_path), job.images)
    got = outputs[0]
    info["check"] = compare("ONNX", got, job.want, job.source)
    if scored is not None:
        info["unknown"] = _unknown_output(run, scored, job.images, outputs[1], job.source)
    if job.int8:
        info["int8"] = _int8(run, job.model_path, job.tmp / "model.int8.onnx", job.images, job.labels, got)
    shutil.copyfile(Path(__file__).with_name("standalone_predict.py"), job.tmp / "predict.py")
    if run.preprocessing.align:  # the folder aligns faces itself, with the landmark network in ONNX
        info["landmarks"] = landmarks_onnx(job.tmp / "landmarks.onnx")
    if job.fmt == "tm":
        atomic_write_json(job.tmp / "metadata.json", tm_metadata(run, run.preprocessing.output_size))
