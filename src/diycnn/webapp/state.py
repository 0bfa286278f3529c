"""The app's state: one project, its training job, the loaded model of the run being previewed,
and the thumbnails; each route (webapp/routes/) asks it for what it answers."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import anyio
from PIL import ImageOps

from .. import exports
from ..data import loader
from ..data.images import ImageError, Preprocessing, open_image, probe, to_rgb
from ..data.scan import ScanResult, scan_folder
from ..io import atomic_write_bytes, atomic_write_text, sign, signed
from ..loading import load
from ..models import face_weights
from ..models.recipes import get_recipe
from ..models.registry import RECIPE_GUIDE, RECIPE_NAMES
from ..records import METRICS_JSON, Metrics, RunInfo
from ..settings import DEFAULT_MODEL, EXPORT_FORMATS, export_formats_for
from .jobs import TrainingJob
from .project import MAX_UPLOAD_BYTES, Project, ProjectError, number, read_record
from .schemas import Evaluation, RunRow

log = logging.getLogger(__name__)

IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp",
               "WEBP": "image/webp", "TIFF": "image/tiff"}
THUMB_DECODES = threading.BoundedSemaphore(2)  # big photos cost hundreds of MB each while decoded
MAX_THUMB_SOURCE = 64 * 1024 * 1024  # a file placed by hand may be larger than an upload
THUMB = 160
MAX_THUMB_BYTES = 1 << 20  # a 160-pixel JPEG is a few KB
CHECK_WORKERS = 2  # decode threads of one check (one check at a time)
CHECK_DECODE = 400  # photos /api/check decodes at most per call (a hobbyist's project: all of them)
PREDICT_WORKERS = 2  # predictions decoding and inferring at once, in worker threads


class App:
    """Holds the project, its training job and the loaded model of the latest run."""

    def __init__(self, project_dir: str | Path):
        self.project = Project(project_dir)
        self.job = TrainingJob(self.project)
        self._model_lock = threading.Lock()
        self._export_lock = threading.Lock()  # torch's exporter keeps global state: one export at a time
        self._loaded: tuple[Path, Any] | None = None
        self._thumbs: dict[tuple[str, int, float], bytes] = {}
        # check(recipe): each photo's decode verdict per preprocessing, so a page refresh decodes only new photos
        self._verdicts: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._check_lock = threading.Lock()
        self.predict_limiter: anyio.CapacityLimiter | None = None

    def check(self, recipe: str | None = None) -> dict[str, Any]:
        """What training would leave out, before it runs: per class, the usable photos and each file
        left out (unreadable, not an image, exact duplicate, the same photo in two classes). The scan
        is the one training does (its cache makes a repeat cheap). Given the recipe about to train,
        the photos are also decoded as it prepares them (face crop and alignment included, up to
        CHECK_DECODE photos not seen before): files that fail to decode or show no face are listed
        too, and photos used without a face crop are noted."""
        try:
            scan = scan_folder(self.project.root, min_classes=1, near_duplicates=False)
        except (ValueError, FileNotFoundError) as exc:
            return {"classes": {}, "note": str(exc)}
        usable = scan.count_by_class()
        out = {c: {"usable": usable.get(c, 0), "left_out": [], "notes": []} for c in scan.class_names}
        for problem in [*scan.skipped, *scan.duplicates]:
            cls, _, photo = problem.path.partition("/")
            if cls in out and photo:
                out[cls]["left_out"].append({"photo": photo, "reason": problem.reason})
        if recipe == DEFAULT_MODEL:  # every plan of auto's trains tm: decode as it does (faces are surveyed at training)
            recipe = "tm"
        note = self._decode_check(scan, recipe, out) if recipe in RECIPE_NAMES else None
        return {"classes": out, "note": note}

    def _decode_check(self, scan: ScanResult, recipe: str, out: dict[str, Any]) -> str | None:
        """Decode the scan's photos as `recipe` prepares them (verdicts remembered per photo and
        preprocessing); add failures to `out`'s left_out and face-crop remarks to its notes."""

        prep = get_recipe(recipe, max(len(scan.class_names), 2)).preprocessing
        if prep.align:
            if face_weights.installed() is None:  # a GET never fetches: training will, or says how
                return ("Photos were not checked for faces: the face weights are not installed. "
                        + face_weights.how_to_get())
        with self._check_lock:  # one check decodes at a time (and two workers): big photos cost 100s of MB each
            return self._decode_unknown(scan, prep, out)

    def _decode_unknown(self, scan: ScanResult, prep: Preprocessing, out: dict[str, Any]) -> str | None:
        key = json.dumps(prep.to_dict(), sort_keys=True)
        unknown = [r for r in scan.records if (r.sha256, key) not in self._verdicts]
        if len(unknown) > CHECK_DECODE:
            what = "fail to decode or show no face" if prep.faces or prep.align else "fail to decode"
            return (f"{len(unknown)} photos are new since the last check: photos that {what} are listed after "
                    "training.")
        if unknown:
            notes: list[Any] = []
            _, ok, failed = loader.decode_all([r.path for r in unknown], prep, names=[r.rel for r in unknown],
                                              notes=notes, workers=CHECK_WORKERS)
            by_rel = {r.rel: r for r in unknown}
            for r in unknown:
                self._verdicts[(r.sha256, key)] = None
            for kind, problems in (("left_out", failed), ("notes", notes)):
                for problem in problems:
                    if problem.path in by_rel:
                        self._verdicts[(by_rel[problem.path].sha256, key)] = (kind, problem.reason)
        for r in scan.records:
            verdict = self._verdicts.get((r.sha256, key))
            cls, _, photo = r.rel.partition("/")
            if verdict is None or cls not in out:
                continue
            out[cls][verdict[0]].append({"photo": photo, "reason": verdict[1]})
            if verdict[0] == "left_out":
                out[cls]["usable"] -= 1
        return None

    def runs(self) -> list[RunRow]:
        """Finished runs; a run folder with damaged or foreign metadata is left out (and logged)."""
        out = []
        if not self.project.runs_dir.is_dir():
            return out
        for d in sorted(self.project.runs_dir.iterdir()):
            if d.is_symlink() or not d.is_dir():
                continue
            info = read_record(d, RunInfo)
            if info is None or info.status != "complete" or not (d / METRICS_JSON).is_file():
                continue
            m = read_record(d, Metrics)  # damaged: listed, and its evaluation says so
            out.append(RunRow(name=d.name, model=_model_name(info),
                              export_formats=export_formats_for(_text(info.model.get("kind")),
                                                                _text(info.model.get("backbone")),
                                                                faces=_crops_faces(info.model)),
                              created=info.created or None, test_accuracy=number(m.test_accuracy) if m else None,
                              test_loss=number(m.test_loss) if m else None, class_names=info.class_names))
        return sorted(out, key=lambda r: (r.created or "", r.name))

    def run_dir(self, name: str | None = None) -> Path:
        runs = self.runs()
        if not runs:
            raise ProjectError("No trained model yet: train one first.", 409)
        if name is None:
            return self.project.runs_dir / runs[-1].name
        if name not in {r.name for r in runs}:
            raise ProjectError(f"No finished run {name!r}.", 404)
        return self.project.runs_dir / name

    def model(self, name: str | None = None) -> Any:
        path = self.run_dir(name)
        with self._model_lock:
            if self._loaded is None or self._loaded[0] != path:
                self._loaded = (path, load(path))
            return self._loaded[1]

    def predict(self, data: bytes, run: str | None = None) -> dict[str, Any]:
        """Decode and classify one photo (called in a worker thread: it blocks)."""

        if len(data) > MAX_UPLOAD_BYTES:
            raise ProjectError(f"Photo too large ({len(data) / 1e6:.1f} MB; at most "
                               f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB).", 413)
        model = self.model(run)
        notes: list[str] = []
        try:
            arr = model.preprocessing.load(data, notes=notes)
        except ImageError as exc:
            if "no face" in exc.reason:  # a face run that skips photos without a face
                return {"run": model.dir.name, "label": None, "no_face": True, "probabilities": {}}
            raise ProjectError(f"Cannot read this photo: {exc.reason}.") from None
        prep = model.preprocessing
        with self._model_lock:
            all_probs, scores = model.predict_scored(arr[None])
        probs = all_probs[0]
        threshold = model.unknown_threshold
        # A face run tells people apart by their faces: with none found, the page says so rather than
        # name a person (the probabilities, of the whole photo as `diycnn predict` gives them, stay in
        # the answer for whoever calls the API).
        no_face = bool(prep.faces or prep.align) and any(n.startswith("no face") for n in notes)
        # "none of these" (evaluation/open_set.py): None where the run cannot say it (--no-unknown, older runs)
        unknown = None if scores is None or threshold is None else bool(scores[0] > threshold)
        return {"run": model.dir.name, "label": model.class_names[int(probs.argmax())], "no_face": no_face,
                "unknown": unknown, "unknown_score": None if scores is None else float(scores[0]),
                "unknown_threshold": threshold,
                "probabilities": {c: float(p) for c, p in zip(model.class_names, probs)}}

    def evaluation(self, run: str | None = None) -> Evaluation:
        """The run's test figures, checked for shape and type (a run folder may come from anyone)."""
        path = self.run_dir(run)
        m, info = read_record(path, Metrics), read_record(path, RunInfo)
        try:
            if m is None:
                raise ValueError("missing or damaged")
            names = m.class_names
            per_class = {c: {"accuracy": number(m.per_class[c]["recall"]),
                             "support": int(m.per_class[c]["support"]), **_split_counts(m, c)} for c in names}
            matrix = m.confusion_matrix
            if len(matrix) != len(names) or any(len(row) != len(names) for row in matrix):
                raise ValueError("confusion matrix does not match the classes")
            counts = {k: v for k, v in m.counts.items() if k in ("train", "val", "test")}
            overfit = m.overfitting or {}
            return Evaluation(
                **self._data_checks(m), run=path.name, model=_model_name(info), class_names=names,
                test_accuracy=number(m.test_accuracy), test_accuracy_ci95=_interval(m.test_accuracy_ci95),
                cross_validation=_cross_validation(m.cross_validation), left_out=_left_out(m),
                overfitting=_text(overfit.get("app_message") or overfit.get("message")),
                test_loss=number(m.test_loss), counts=counts, per_class=per_class, confusion_matrix=matrix,
                report=f"runs/{path.name}/report.html", auto=_text((m.auto or {}).get("winner")))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # pydantic's too: a ValueError
            raise ProjectError(f"Run {path.name!r} has damaged results (metrics.json: {exc}); train again.", 422) from None

    def _data_checks(self, m: Metrics) -> dict[str, Any]:
        """Suspect labels still in place (a photo moved or deleted since is left out) and the
        near-duplicate counts, typed; a damaged section only costs itself."""
        out: dict[str, Any] = {"suspects": [], "suspects_checked": False, "near_left_out": 0, "label_conflicts": 0}
        try:
            section = m.suspect_labels or {}
            out["suspects_checked"] = section.get("checked") is True
            out["suspects_why"] = _text(section.get("why"))
            classes = set(self.project.classes())
            for item in section.get("items", [])[:60]:
                parts = str(item["path"]).split("/")
                if len(parts) != 2 or parts[0] not in classes:
                    continue
                try:
                    self.project.photo_path(parts[0], parts[1])
                except ProjectError:
                    continue  # moved or deleted since training
                out["suspects"].append({"class": parts[0], "photo": parts[1], "suggested": _text(item["suggested"]),
                                        "p_label": number(item["p_label"]),
                                        "p_suggested": number(item["p_suggested"])})
            near = m.near_duplicates or {}
            out["near_left_out"] = len(near.get("left_out") or [])
            out["label_conflicts"] = len(near.get("label_conflicts") or [])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            log.warning("metrics.json: suspect labels or near-duplicates unreadable (%s)", exc)
        return out

    def photo(self, cls: str, photo: str) -> tuple[bytes, str]:
        """A photo's bytes and its content type, from its decoded format (never its name)."""

        path = self.project.photo_path(cls, photo)
        data = _read_bounded(path, photo)
        try:
            fmt, _ = probe(data)
        except ImageError as exc:
            raise ProjectError(f"{photo!r} is not a photo diycnn can show ({exc.reason}).", 415) from None
        return data, IMAGE_TYPES[fmt]

    def thumbnail(self, cls: str, photo: str) -> bytes:
        """A small JPEG of a photo, cached in memory and on disk by content hash. Decoding is
        bounded: at most two at a time, JPEGs decoded at reduced scale (`draft`)."""
        path = self.project.photo_path(cls, photo)
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime)
        if key in self._thumbs:
            return self._thumbs[key]
        data = _read_bounded(path, photo)
        digest = hashlib.sha256(data).hexdigest()
        out = self._disk_thumbnail(digest)
        if out is None:
            with THUMB_DECODES:
                out = _make_thumbnail(data, photo)
            try:
                folder = self.project.app_folder("thumbs", create=True)
                cached = folder / f"{digest}-{THUMB}.jpg"
                atomic_write_bytes(cached, out)
                atomic_write_text(cached.with_suffix(".sig"), sign("thumbnail", digest, str(THUMB), out))
            except (OSError, ProjectError):  # a read-only project, or a linked .diycnn: shown, not cached
                pass
        if len(self._thumbs) > 5000:
            self._thumbs.clear()
        self._thumbs[key] = out
        return out

    def _disk_thumbnail(self, digest: str) -> bytes | None:
        """The thumbnail cached in `.diycnn/thumbs` for a photo of this content, if this user's key
        signed it: a thumbnail planted in a project someone else made is regenerated, never shown."""
        try:
            cached = self.project.app_folder("thumbs") / f"{digest}-{THUMB}.jpg"
            if cached.is_symlink() or not cached.is_file() or cached.stat().st_size > MAX_THUMB_BYTES:
                return None
            out = cached.read_bytes()
            signature = cached.with_suffix(".sig").read_text(encoding="ascii")[:128]
        except (OSError, ValueError, ProjectError):
            return None
        return out if signed(signature, "thumbnail", digest, str(THUMB), out) else None

    def export_zip(self, fmt: str, run: str | None = None) -> Path:
        if fmt not in EXPORT_FORMATS:
            raise ProjectError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
        path = self.run_dir(run)
        with self._export_lock:  # a second export waits for the first (torch's exporter is not re-entrant)
            folder = path / f"export-{fmt}"
            if folder.is_symlink():
                raise ProjectError(f"{folder.name} in run {path.name!r} is a link; refused.", 422)
            # always a fresh export: a folder the run came with (e.g. a planted predict.py) is replaced, never zipped
            try:
                folder = exports.export(path, fmt, force=True)  # looked up at call time (tests track it)
            except (ValueError, ImportError, OSError) as exc:
                raise ProjectError(f"Export as {fmt} failed: {exc}", 422) from None
            target = path / f"{path.name}-{fmt}.zip"
            fd, tmp = tempfile.mkstemp(dir=path, suffix=".zip.tmp")
            try:
                with open(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                    for f in sorted(folder.rglob("*")):
                        if f.is_file() and not f.is_symlink():
                            zf.write(f, f"{path.name}-{fmt}/{f.relative_to(folder)}")
                Path(tmp).replace(target)  # replaces a link of that name; never writes through it
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return target


def add_photo(project: Project, name: str, filename: str | None, data: bytes) -> str:
    """Add an uploaded photo (decoded to check it, two at a time with the thumbnails)."""
    with THUMB_DECODES:
        return project.add_photo(name, filename, data)


def _model_name(info: RunInfo | None) -> str | None:
    """model.json's model name, if it is there and is text."""
    return _text(info.model.get("name")) if info is not None else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# One line per recipe and its defaults, for the training card (the same text as `train --help`).
RECIPE_HELP = {**RECIPE_GUIDE, DEFAULT_MODEL: {
    "about": "looks for faces, then trains the recipes that fit the time budget and keeps the best by validation "
             "loss", "epochs": None, "batch_size": None, "lr": None, "patience": None}}


def _split_counts(m: Metrics, cls: str) -> dict[str, int | None]:
    """A class's train and val photo counts (None where metrics.json lacks them)."""
    return {split: m.counts_by_class.get(split, {}).get(cls) for split in ("train", "val")}


def _left_out(m: Metrics) -> dict[str, int]:
    """How many photos the run did not use, by reason."""
    return {"unreadable": len(m.skipped), "duplicates": len(m.duplicates), "no_face": len(m.no_face)}


def _interval(value: Any) -> list[float] | None:
    """A [low, high] pair of numbers, or None."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    low, high = number(value[0]), number(value[1])
    return None if low is None or high is None else [low, high]


def _cross_validation(section: Any) -> dict[str, Any] | None:
    """The K-fold estimate, typed (None when not run or damaged)."""
    if not isinstance(section, dict) or section.get("checked") is not True:
        return None
    out = {"accuracy": number(section.get("accuracy")), "accuracy_ci95": _interval(section.get("accuracy_ci95")),
           "loss": number(section.get("loss")), "folds": section.get("folds"), "photos": section.get("photos")}
    if None in out.values() or not all(isinstance(out[k], int) and not isinstance(out[k], bool) for k in ("folds", "photos")):
        return None
    return out


def _read_bounded(path: Path, shown: str) -> bytes:
    if path.stat().st_size > MAX_THUMB_SOURCE:
        raise ProjectError(f"{shown!r} is too large to show ({path.stat().st_size / 1e6:.0f} MB).", 422)
    return path.read_bytes()


def _make_thumbnail(data: bytes, shown: str) -> bytes:
    try:
        im = open_image(data)  # format and pixel-count checks (decompression bombs) from the header
    except ImageError as exc:
        raise ProjectError(f"Cannot show {shown!r}: {exc.reason}.", 422) from None
    try:
        with im:
            if im.format == "JPEG":
                im.draft("RGB", (THUMB * 2, THUMB * 2))  # decode at 1/2..1/8 scale: a fraction of the memory
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            small = to_rgb(ImageOps.exif_transpose(im), (255, 255, 255))
            small.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=80)
            return buf.getvalue()
    except Exception as exc:  # a file put there by hand may be anything
        raise ProjectError(f"Cannot show {shown!r}: {type(exc).__name__}: {exc}", 422) from None


def _crops_faces(model: dict[str, Any]) -> bool:
    """Whether a model.json's preprocessing crops or aligns faces (formats that cannot are not offered)."""
    prep = model.get("preprocessing")
    return isinstance(prep, dict) and bool(prep.get("faces") or prep.get("align"))
