"""The run directory: what a training run leaves behind, and `Run`, which reads it back.

    runs/<name>/
      model.safetensors   weights (never pickled)
      model.json          spec, class names, preprocessing, settings, versions, status
      split.json          which photo is in train/val/test
      history.csv         epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds
      metrics.json        test metrics, counts, skipped files, duplicates
      curves.png, confusion.png, report.html
"""

from __future__ import annotations

import csv
import io
import logging
import math
import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data import neardup
from .data.images import ImageError, Preprocessing
from .data.loader import ArrayBatches, decode_all
from .data.scan import ImageRecord, Problem, find_images, scan_folder
from .data.split import read_split
from .io import atomic_write_json, file_sha256, load_tensors, read_json, tensor_shapes
from .models.catalog import BACKBONE_FACTS
from .models.recipes import Recipe, recipe_from_saved
from .records import METRICS_JSON, MODEL_JSON, SPLIT_JSON, Metrics, RunInfo, read_metrics, read_run_info
from .settings import INFERENCE_PRECISION

log = logging.getLogger(__name__)

NEAR_SIGNATURES = "training_signatures.npz"  # near-duplicate signatures of the train and val photos
PREDICT_CHUNK = 512  # photos decoded at a time by predict
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
MANIFEST = "manifest.json"
MANIFEST_FILES = ("model.safetensors", SPLIT_JSON, "history.csv", METRICS_JSON, "unknown.safetensors")


def versions() -> dict[str, str]:
    import torch  # noqa: PLC0415 (lazy: loads torch)


    return {"diycnn": __version__, "torch": torch.__version__, "python": platform.python_version()}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def new_run_dir(out: str | Path | None, name: str, runs_root: str | Path = "runs") -> Path:
    """Create the run directory. `out` must not hold files already; without `out`,
    `runs_root/<name>` is used, numbered `-2`, `-3`... so nothing is overwritten.

    Raises:
        FileExistsError: `out` exists and is not empty.
        PermissionError: the folder cannot be written.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(
                f"Output folder '{path}' already exists and is not empty; diycnn never overwrites a run. "
                f"Choose another --out, or continue an interrupted run with: diycnn train --resume {path}"
            )
    else:
        root = Path(runs_root)
        path, i = root / slug(name), 2
        while path.exists():
            path, i = root / f"{slug(name)}-{i}", i + 1
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"Cannot write to output folder '{path}' ({exc.strerror or exc}). "
                              "Choose a writable --out.") from None
    return path


def history_csv(history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv back as per-epoch dicts of numbers (what history_csv wrote; empty cells left out).

    Raises:
        OSError, ValueError, csv.Error: no such file, or not numbers.
    """
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def write_manifest(run_dir: Path) -> None:
    """manifest.json: size and SHA-256 of the run's results, written just before the run is
    marked complete, so a reader can tell a whole run from a mix of versions or a damaged file."""

    files = {name: {"bytes": (run_dir / name).stat().st_size, "sha256": file_sha256(run_dir / name)}
             for name in MANIFEST_FILES if (run_dir / name).is_file()}
    atomic_write_json(run_dir / MANIFEST, {"format": "diycnn-manifest", "files": files})


def verify_manifest(run_dir: Path, names: tuple[str, ...] = ("model.safetensors",)) -> None:
    """Check files against manifest.json (runs from before manifests have none: nothing to check).

    Raises:
        ValueError: a file differs from what the finished run wrote.
    """
    path = run_dir / MANIFEST
    if not path.is_file():
        return
    files = read_json(path, "", "the run directory is damaged.").get("files", {})
    for name in names:
        want = files.get(name)
        if want and (not (run_dir / name).is_file() or file_sha256(run_dir / name) != want["sha256"]):
            raise ValueError(f"'{run_dir / name}' is not the file this run wrote (its SHA-256 differs from "
                             f"{MANIFEST}): it was changed or damaged. Restore it or train again.")


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32: far beyond any model diycnn trains


MAX_ACTIVATION = 64 * 1024 * 1024  # elements in one layer's output for one photo (256 MB in fp32)


def _largest_activation(recipe: Recipe) -> tuple[int, str] | None:
    """The most elements one layer outputs for one photo, from shapes alone where that is exact: a
    Keras-style spec (its layers' output shapes), a catalog backbone (its largest map per input
    pixel, BACKBONE_FACTS) with its head. None for other backbones (they are run on 'meta').

    Raises:
        ValueError: a spec whose input differs from the photo size its preprocessing makes.
    """

    h, w = recipe.preprocessing.output_size
    spec = recipe.spec
    if spec.input_shape is None:
        raise ValueError("its model has no Input shape")
    shapes = [tuple(spec.input_shape)] + [tuple(s) for s in spec.layer_output_shapes()]
    largest = max((math.prod(s), f"a layer output of shape {s}") for s in shapes)
    if recipe.kind == "spec":
        if tuple(spec.input_shape[:2]) != (h, w):
            raise ValueError(f"its input is {tuple(spec.input_shape)} but its preprocessing makes {h}x{w} photos")
        return largest
    per_pixel = BACKBONE_FACTS.get(recipe.backbone or "", {}).get("activation_per_pixel")
    if per_pixel is None:
        return None
    return max(largest, (h * w * per_pixel, f"the {recipe.backbone} backbone on {h}x{w} photos"))


def _meta_activation(skeleton: Any, recipe: Recipe) -> tuple[int, str]:
    """The largest layer output of `skeleton` (on 'meta') for one photo, by running it (~1.5 s the first time)."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    largest: list[tuple[int, str]] = [(0, "")]

    def record(module: Any, _inputs: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor) and t.numel() > largest[0][0]:
                largest[0] = (t.numel(), f"{type(module).__name__} output {tuple(t.shape[1:])}")

    hooks = [m.register_forward_hook(record) for m in skeleton.modules()]
    h, w = recipe.preprocessing.output_size
    try:
        with torch.no_grad():
            skeleton(torch.empty(1, 3, h, w, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return largest[0]


def check_model_size(recipe: Recipe, where: str | Path) -> Any:
    """Build the model `where` describes on PyTorch's 'meta' device (shapes only, no memory) and
    bound its parameters and the largest layer output for one photo before anything real is
    built: a model.json someone else wrote (a 4096x4096 input into Conv2D(512), say: 17 GB per
    photo) is refused instead of exhausting memory.

    Returns the meta skeleton. Raises ValueError naming `where`.
    """
    import torch  # noqa: PLC0415 (lazy: loads torch)

    try:
        with torch.device("meta"):
            skeleton = recipe.build()
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise ValueError(f"The model in '{where}' cannot be built: {exc}") from None
    total = sum(p.numel() for p in skeleton.parameters())
    if total > MAX_PARAMETERS:
        raise ValueError(f"The model in '{where}' would have {total:,} parameters (at most "
                         f"{MAX_PARAMETERS:,}); the file is damaged or not from diycnn.")
    try:
        largest = _largest_activation(recipe) or _meta_activation(skeleton, recipe)
    except (ValueError, TypeError, RuntimeError, NotImplementedError, IndexError) as exc:
        raise ValueError(f"The model in '{where}' cannot take its own photos: {str(exc)[:300]}") from None
    if largest[0] > MAX_ACTIVATION:
        raise ValueError(f"The model in '{where}' would need {largest[0] * 4 / 1e9:.1f} GB for one layer's output on "
                         f"one photo ({largest[1]}; at most {MAX_ACTIVATION * 4 / 1e9:.2f} GB); the file is damaged "
                         "or not from diycnn.")
    return skeleton


def check_weights_fit(recipe: Recipe, weights: Path) -> None:
    """Compare the model that model.json describes with the tensors the weights file holds, before
    building it for real (`check_model_size`: shapes only, no memory; the weights' shapes come
    from the safetensors header). A model.json someone else wrote cannot make diycnn allocate
    gigabytes before refusing it.

    Raises:
        ValueError: the two disagree, or the model is implausibly large; naming the file.
    """
    shapes = tensor_shapes(weights)
    skeleton = check_model_size(recipe, weights.parent / MODEL_JSON)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: model.json needs {expected[k]}, the weights hold {shapes[k]}"
             for k in sorted(set(expected) & set(shapes)) if expected[k] != shapes[k]]
    if missing or extra or wrong:
        detail = "; ".join(wrong[:3] + ([f"missing {missing[:3]}"] if missing else [])
                           + ([f"unexpected {extra[:3]}"] if extra else []))
        raise ValueError(f"Weights in '{weights}' do not fit the model in model.json ({detail}). The run "
                         "directory is damaged or its files come from different runs; train again.")


class Classifier:
    """What every loaded model offers: `predict` files and folders, `evaluate` a labelled folder.

    Subclasses set `dir`, `class_names`, `preprocessing` and implement `predict_arrays`.
    """

    dir: Path
    class_names: list[str]
    preprocessing: Preprocessing

    def predict_arrays(self, images_u8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, classes) for decoded uint8 photos (N, H, W, 3)."""
        raise NotImplementedError

    def predict_scored(self, images_u8: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, classes), unknown scores (N,) or None where the model has no detector)."""
        return self.predict_arrays(images_u8, batch_size), None

    unknown_threshold: float | None = None  # a score above it: "none of these" (None: no detector)

    def predict(self, paths: str | Path | list[str | Path], top_k: int | None = None,
                batch_size: int = 32) -> Predictions:
        """Classify files, folders (recursively) and glob patterns.

        Returns:
            Predictions: a list of {"path", "label", "probabilities": {class: p}} (plus "top_k"
            when asked), with `.problems` listing inputs that could not be read and why.
        """

        if isinstance(paths, (str, Path)):
            paths = [paths]
        files, problems = find_images(list(paths))
        out = Predictions(problems=problems)
        for start in range(0, len(files), PREDICT_CHUNK):  # bounded memory for big folders
            chunk = files[start:start + PREDICT_CHUNK]
            notes: list[Problem] = []
            images, ok, failed = decode_all(chunk, self.preprocessing, notes=notes)
            out.problems.extend(failed)
            if ok:
                probs, scores = self.predict_scored(images, batch_size)
                faceless = {n.path for n in notes}
                self._add_predictions(out, [chunk[i] for i in ok], probs, scores, top_k, faceless)
        return out

    def _add_predictions(self, out: "Predictions", files: list[Path], probs: np.ndarray, scores: np.ndarray | None,
                         top_k: int | None, faceless: set[str]) -> None:
        """One item per photo: the top class, or "unknown" when its score passes the threshold, or
        "no face" for a face model's photo without one; the class probabilities always."""
        for i, (path, p) in enumerate(zip(files, probs)):
            item: dict[str, Any] = {"path": str(path), "label": self.class_names[int(p.argmax())],
                                    "probabilities": {c: float(v) for c, v in zip(self.class_names, p)}}
            if scores is not None and self.unknown_threshold is not None:
                item["unknown"] = bool(scores[i] > self.unknown_threshold)
                item["unknown_score"] = float(scores[i])
                if item["unknown"]:
                    item["label"] = "unknown"
            if self.preprocessing.faces:
                item["face"] = str(path) not in faceless
                if not item["face"]:
                    item["label"] = "no face"
            if top_k:
                order = np.argsort(-p)[:top_k]
                item["top_k"] = [[self.class_names[i], float(p[i])] for i in order]
            out.append(item)

    def evaluate(self, data: str | Path, batch_size: int = 32, near_duplicates: bool = True,
                 unknown_folder: str | Path | None = None) -> dict[str, Any]:
        """Score a labelled folder (`DATA/<class>/*`) with the test metrics.

        Photos the model has already seen are listed: byte-identical copies of its training or
        validation photos (`seen_in_training`) and near-identical ones (`near_duplicates_of_training`:
        resized, re-encoded, slightly cropped; needs the run's training signatures). The figures are
        given for all photos and, in `unseen`, without those.

        A model that can say "none of these" also reports, in `unknown`, the share of these photos it
        called unknown and its accuracy on the others; given `unknown_folder` (photos of none of its
        classes, in any layout), also the share of those it called unknown and the AUROC of its score.

        Raises:
            ValueError: DATA has a class the model does not know, or `unknown_folder` holds no photo.
        """
        from .evaluation.metrics import classification_metrics  # noqa: PLC0415 (lazy: loads SciPy)

        scan = scan_folder(data, min_classes=1, near_duplicates=False)
        unknown = [c for c in scan.class_names if c not in self.class_names]
        if unknown:
            raise ValueError(
                f"'{data}' has class folder(s) {unknown} that the model in '{self.dir}' does not know "
                f"(it knows {self.class_names}). Remove or rename them."
            )
        images, ok, failed = decode_all([r.path for r in scan.records], self.preprocessing,
                                        names=[r.rel for r in scan.records])
        records = [scan.records[i] for i in ok]
        if not records:
            raise ValueError(f"No usable images in '{data}'.")
        probs, scores = self.predict_scored(images, batch_size)
        labels = np.array([self.class_names.index(r.label) for r in records])
        result = classification_metrics(probs, labels, self.class_names)
        if scores is not None and self.unknown_threshold is not None:
            result["unknown"] = self._unknown_figures(probs, scores, labels, unknown_folder, batch_size)
        elif unknown_folder is not None:
            raise ValueError(f"The model in '{self.dir}' cannot say 'none of these' (trained with --no-unknown, "
                             "by an older diycnn, or an export): --unknown-folder needs a run that can.")
        result["skipped"] = [p.to_dict() for p in scan.skipped + failed]
        result["duplicates"] = [p.to_dict() for p in scan.duplicates]
        seen: set[str] = set()
        overlap = self._seen_in_training(records)
        if overlap is not None:
            result["seen_in_training"] = overlap
            seen.update(overlap)
        if near_duplicates and (self.dir / NEAR_SIGNATURES).is_file():
            try:
                near = [n for n in self._near_training(records, scan.root) if n["path"] not in seen]
            except (ValueError, OSError) as exc:  # a damaged signature file costs only this list
                log.warning("Near-duplicates of training photos not checked: %s", exc)
            else:
                result["near_duplicates_of_training"] = near
                seen.update(item["path"] for item in near)
        if seen:
            keep = np.array([r.rel not in seen for r in records])
            result["unseen"] = ({"n": 0} if not keep.any() else
                                {k: v for k, v in classification_metrics(probs[keep], labels[keep],
                                                                         self.class_names).items()
                                 if k in ("accuracy", "accuracy_ci95", "loss", "macro_f1", "correct", "n")})
        return result

    def _unknown_figures(self, probs: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                         unknown_folder: str | Path | None, batch_size: int) -> dict[str, Any]:
        """How often known photos are called unknown, the accuracy on the rest, and (with photos of
        other classes) how many of those are called unknown."""
        from .evaluation.open_set import auroc  # noqa: PLC0415 (lazy: loads torch)

        threshold = float(self.unknown_threshold or 0.0)
        kept = scores <= threshold
        right = probs.argmax(1) == labels
        out: dict[str, Any] = {"threshold": threshold, "known_called_unknown": float(1 - kept.mean()),
                               "kept": int(kept.sum()),
                               "accuracy_kept": float(right[kept].mean()) if kept.any() else None}
        if unknown_folder is not None:
            files, problems = find_images([unknown_folder])
            images, ok, failed = decode_all(files, self.preprocessing) if files else (None, [], [])
            if not ok:
                raise ValueError(f"--unknown-folder '{unknown_folder}' holds no photo diycnn can read"
                                 f"{' (' + problems[0].reason + ')' if problems else ''}.")
            assert images is not None  # ok is not empty
            _, strangers = self.predict_scored(images, batch_size)
            assert strangers is not None  # this model has a detector
            out.update({"strangers": len(ok), "strangers_called_unknown": float((strangers > threshold).mean()),
                        "auroc": auroc(scores, strangers),
                        "strangers_skipped": [p.to_dict() for p in problems + failed]})
        return out

    def _seen_in_training(self, records: list[ImageRecord]) -> list[str] | None:
        """The photos byte-identical to the run's training or validation photos (None without a split.json)."""
        split_path = self.dir / SPLIT_JSON
        if not split_path.is_file():
            return None
        split = read_split(split_path).to_dict()
        hashes = split.get("sha256", {})
        trained = {hashes[p] for s in ("train", "val") for paths in split["splits"][s].values()
                   for p in paths if p in hashes}
        overlap = [r.rel for r in records if r.sha256 in trained]
        if overlap:
            log.warning("%d of these photos are byte-identical to photos the model was trained or tuned on; "
                        "accuracy on them is not a held-out score.", len(overlap))
        return overlap

    def _near_training(self, records: list[ImageRecord], root: Path) -> list[dict[str, Any]]:
        """The photos that are near-identical (not byte-identical) copies of training/val photos."""

        split = read_split(self.dir / SPLIT_JSON).to_dict()  # manifest-checked: how many photos it trained on
        rows = sum(len(paths) for s in ("train", "val") for paths in split["splits"][s].values())
        trained, names = neardup.Signatures.from_npz(self.dir / NEAR_SIGNATURES, max_rows=rows)
        store = neardup.SignatureCache(root)
        mine = neardup.compute_signatures([r.path for r in records], [r.sha256 for r in records], store)
        store.save({r.sha256 for r in records})
        best: dict[int, neardup.NearPair] = {}
        for p in neardup.find_near_duplicates(mine, trained):
            if p.a not in best or p.score > best[p.a].score:
                best[p.a] = p
        found = [{"path": records[i].rel, "training_photo": names[p.b], "score": p.score} for i, p in sorted(best.items())]
        if found:
            log.warning("%d of these photos are near-identical copies of photos the model was trained or tuned on "
                        "(resized, re-encoded or re-cropped); see 'near_duplicates_of_training'.", len(found))
        return found


class Run(Classifier):
    """A finished training run, loaded for prediction and evaluation.

    Example:
        >>> run = diycnn.load("runs/iu-vs-suzy")
        >>> first = run.predict(["new.jpg"])[0]
        >>> first["label"]
        'iu'
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", precision: str | None = None):
        """precision: fp32 unless given ("bf16", "fp16" or "auto" trade exactness for speed)."""
        self.dir = Path(run_dir)
        self.info: RunInfo = read_run_info(self.dir)  # a wrong path is reported before PyTorch loads (~2 s)
        if self.info.status != "complete":
            raise ValueError(
                f"Run '{self.dir}' is not complete (status: {self.info.status}). "
                f"Finish it with: diycnn train --resume {self.dir}"
            )
        import torch  # noqa: PLC0415 (lazy: loads torch)

        from .training.device import resolve_device, resolve_precision  # noqa: PLC0415 (lazy: loads torch)

        self.class_names: list[str] = list(self.info.class_names)
        try:
            self.recipe = recipe_from_saved(self.info.model, len(self.class_names))
        except (KeyError, TypeError, AttributeError, RecursionError, ValueError) as exc:
            raise ValueError(f"'{self.dir / MODEL_JSON}' does not describe a model diycnn can build "
                             f"({type(exc).__name__}: {exc}); the run directory is damaged.") from None
        self.preprocessing: Preprocessing = self.recipe.preprocessing
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision or INFERENCE_PRECISION, self.device)
        verify_manifest(self.dir)
        check_weights_fit(self.recipe, self.dir / "model.safetensors")  # before anything is allocated
        tensors, _ = load_tensors(self.dir / "model.safetensors")
        self.module = self.recipe.build()
        self.tta = self.info.tta
        try:
            self.module.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"Weights in '{self.dir / 'model.safetensors'}' do not fit the model in model.json: {exc}") from None
        self.module.to(self.device).to(memory_format=torch.channels_last).eval()
        from .evaluation.open_set import UNKNOWN_FILE, Detector  # noqa: PLC0415 (lazy: loads torch)

        self.detector: Detector | None = None
        if self.info.inference.get("unknown"):
            if not (self.dir / UNKNOWN_FILE).is_file():
                raise ValueError(f"Run '{self.dir}' lacks {UNKNOWN_FILE}, which its model.json names (the class "
                                 "means that tell 'none of these'); the run directory is incomplete. Copy the "
                                 "whole run folder, or train it again.")
            verify_manifest(self.dir, (UNKNOWN_FILE,))
            self.detector = Detector.load(self.dir, len(self.class_names))
            self.unknown_threshold = self.detector.threshold

    @property
    def name(self) -> str:
        return self.info.name or self.dir.name

    @property
    def metrics(self) -> Metrics:
        """The run's metrics.json, read afresh (a file an auto run replaces as it goes)."""
        return read_metrics(self.dir)

    def predict_arrays(self, images_u8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, classes) for decoded uint8 photos (N, H, W, 3)."""
        from .data.augment import image_input_fn  # noqa: PLC0415 (lazy: loads torch)
        from .training.trainer import predict_probs  # noqa: PLC0415 (lazy: loads torch)

        batches = ArrayBatches(images_u8, np.zeros(len(images_u8)), batch_size)
        return predict_probs(self.module, batches, image_input_fn(self.preprocessing), self.device, self.precision,
                             tta=self.tta, keep_plan=True)

    def predict_scored(self, images_u8: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, unknown scores) in one forward pass; the scores are None without a detector."""
        if self.detector is None:
            return self.predict_arrays(images_u8, batch_size), None
        from .data.augment import image_input_fn  # noqa: PLC0415 (lazy: loads torch)
        from .training.trainer import logits_and_features, probs_of_logits  # noqa: PLC0415 (lazy: loads torch)

        batches = ArrayBatches(images_u8, np.zeros(len(images_u8)), batch_size)
        logits, features = logits_and_features(self.module, batches, image_input_fn(self.preprocessing), self.device,
                                               self.precision, tta=self.tta)
        return probs_of_logits(logits), self.detector.scores(features)


class Predictions(list[dict[str, Any]]):
    """A list of prediction dicts with `.problems`: the inputs that could not be predicted."""

    def __init__(self, items: Iterable[dict[str, Any]] = (), problems: list[Problem] | None = None) -> None:
        super().__init__(items)
        self.problems = problems if problems is not None else []


__all__ = ["Classifier", "Run", "Predictions", "ImageError"]
