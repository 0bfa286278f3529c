"""Background training for the web app: one training at a time per project, in a thread that
calls the same `diycnn.train` as the CLI, with live per-epoch figures and cancel."""

from __future__ import annotations

import csv
import datetime as _dt
import logging
import math
import threading
import time
import typing
from pathlib import Path
from typing import Any

from ..models.registry import PRETRAINED_RECIPES, RECIPE_NAMES
from ..records import Metrics, RunInfo
from ..run import read_history
from ..settings import DEFAULT_MODEL, TrainSettings
from .project import Project, ProjectError, number, read_document, read_record

log = logging.getLogger(__name__)

# The recipes the page offers: auto first, the default everywhere (API, CLI and app), then the built-in
# ones (listed once, in settings.py), pretrained first -- they suit a handful of photos -- then the
# from-scratch CNNs.
RECIPES = (DEFAULT_MODEL, *PRETRAINED_RECIPES, *(name for name in RECIPE_NAMES if name not in PRETRAINED_RECIPES))
DEFAULT_RECIPE = RECIPES[0]
# The settings the page's Advanced fields set, with the range the page accepts; each is a field of
# TrainSettings, whose type (whole number or not) and rules apply too.
LIMITS = {"epochs": (1, 1000), "batch_size": (1, 1024), "lr": (1e-7, 1.0)}
WHOLE = {name for name in LIMITS if "int" in str(typing.get_type_hints(TrainSettings)[name])}


def training_settings(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate what the page sends: a known recipe and in-range numbers (None = the recipe's default)."""
    model = body.get("model") or DEFAULT_RECIPE
    if model not in RECIPES:
        raise ProjectError(f"Unknown recipe {model!r}; choose one of {', '.join(RECIPES)}.")
    settings: dict[str, Any] = {}
    for key, (low, high) in LIMITS.items():
        value = body.get(key)
        if value in (None, ""):
            continue
        kind = int if key in WHOLE else float
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ProjectError(f"{key} must be a finite number, received {value!r}.")
        try:
            number = float(value)
            value = kind(number)
        except (TypeError, ValueError, OverflowError):
            raise ProjectError(f"{key} must be a number, received {value!r}.") from None
        if kind is int and value != number:  # "2.5" epochs is a mistake to say, not to round
            raise ProjectError(f"{key} must be a whole number, received {number:g}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProjectError(f"{key} must be a finite number, received {value!r}.")
        if not low <= value <= high:
            raise ProjectError(f"{key} must be between {low} and {high}, received {value}.")
        settings[key] = value
    try:  # and the rules every training follows, whichever door it comes in by (settings.TrainSettings)
        TrainSettings(model=model, **settings)
    except ValueError as exc:
        raise ProjectError(str(exc)) from None
    return model, settings


class TrainingJob:
    """State of the project's current (or last) training, readable from any thread."""

    def __init__(self, project: Project):
        self.project = project
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: dict[str, Any] = {"status": "idle"}

    def status(self) -> dict[str, Any]:
        with self._lock:
            state = {**self.state, "history": list(self.state.get("history", []))}
        if state.get("run") and state.get("model") == "auto":
            try:
                state["auto"] = auto_progress(self.project.runs_dir / state["run"])
            except ProjectError:  # .diycnn/runs became a link: the job itself says what went wrong
                state["auto"] = None
        return state

    def _update(self, **values: Any) -> None:
        with self._lock:
            self.state.update(values)

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        model, settings = training_settings(body)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ProjectError("A training is already running in this project; wait for it to finish or "
                                   "cancel it first.", 409)
            counts = {c: len(self.project.photos(c)) for c in self.project.classes()}
            usable = [c for c, n in counts.items() if n > 0]
            if len(usable) < 2:
                raise ProjectError("Training needs at least two classes with photos (has "
                                   f"{len(usable)}). Add classes and photos first.")
            empty = [c for c, n in counts.items() if n == 0]
            if empty:
                raise ProjectError(f"Class(es) {', '.join(map(repr, empty))} have no photos; add photos or "
                                   "delete them before training.")
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = self.project.runs_dir / f"{model}-{stamp}"
            i = 2
            while out.exists() or out.is_symlink():
                out, i = self.project.runs_dir / f"{model}-{stamp}-{i}", i + 1
            self._launch(model, settings, out, resume=False)
        return self.status()

    def resume(self, body: dict[str, Any]) -> dict[str, Any]:
        """Continue a cancelled (or killed) run of this project from its last checkpoint."""
        name = body.get("run")
        if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
            raise ProjectError(f"Resume needs the name of one of this project's runs, received {name!r}.")
        out = self.project.runs_dir / name
        if out.is_symlink():
            raise ProjectError(f"Run {name!r} is a link to a folder elsewhere; diycnn resumes only runs inside the "
                               "project.", 409)
        info = read_record(out, RunInfo)
        if info is None:
            raise ProjectError(f"Run {name!r} does not exist in this project.", 404)
        if info.status == "complete":
            raise ProjectError(f"Run {name!r} is already complete; there is nothing to resume.", 409)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ProjectError("A training is already running in this project; wait for it to finish or "
                                   "cancel it first.", 409)
            model = info.model.get("name")
            self._launch(model if isinstance(model, str) else "run", {}, out, resume=True)
        return self.status()

    def _launch(self, model: str, settings: dict[str, Any], out: Path, resume: bool) -> None:
        """Start the training thread (the lock is held)."""
        self._cancel.clear()
        self.state = {"status": "running", "model": model, "settings": settings, "run": out.name,
                      "stage": "resuming" if resume else "starting", "epoch": 0, "epochs": settings.get("epochs"),
                      "history": [], "batch": 0, "batches": 0, "started": time.time(), "message": ""}
        self._thread = threading.Thread(target=self._work, args=(model, settings, out, resume), daemon=True,
                                        name="diycnn-training")
        self._thread.start()

    def cancel(self) -> dict[str, Any]:
        if self._thread is None or not self._thread.is_alive():
            raise ProjectError("No training is running.", 409)
        self._cancel.set()
        self._update(stage="cancelling after this batch ...")
        return self.status()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self, model: str, settings: dict[str, Any], out: Path, resume: bool = False) -> None:
        from .. import Callback, train  # noqa: PLC0415 (lazy: loads torch; the public API's)

        job = self

        class Hooks(Callback):
            def on_train_begin(self, epochs, start_epoch):
                job._update(epochs=epochs, epoch=start_epoch)
                if start_epoch == 0:  # auto's next candidate: its own curves
                    job._update(history=[])

            def on_epoch_begin(self, epoch, num_batches, start_batch):
                job._update(epoch=epoch, batch=start_batch, batches=num_batches, stage=f"training epoch {epoch + 1}")

            def on_batch_end(self, batch, logs):
                job._update(batch=batch, loss=logs["loss"], accuracy=logs["accuracy"])
                if job._cancel.is_set():
                    raise KeyboardInterrupt

            def on_epoch_end(self, epoch, logs):
                row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in
                                              ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs}}
                with job._lock:
                    job.state["history"].append(row)
                    job.state["epoch"] = epoch + 1

        def stage(text: str) -> None:
            job._update(stage=text)
            # auto: stop between candidates too (auto then keeps the best model so far as the run)
            if job._cancel.is_set() and text.startswith(("auto: training candidate", "auto: resuming candidate")):
                raise KeyboardInterrupt

        self.project.app_folder("runs", create=True)
        try:
            if resume:
                run = train(resume=out, callbacks=[Hooks()], on_stage=stage)
            else:
                run = train(self.project.root, model=model, out=out, callbacks=[Hooks()], on_stage=stage, **settings)
        except KeyboardInterrupt:
            self._update(status="cancelled", stage="cancelled", resumable=out.name,
                         message=f"Training cancelled. Resume it here, or with: diycnn train --resume {out}")
        except Exception as exc:  # shown on the page; the server keeps running
            log.exception("training failed")
            self._update(status="failed", stage="failed", message=str(exc))
        else:
            m = run.metrics
            history = self.state.get("history", [])
            if m.auto:  # the curves of the model kept, not of the last candidate tried
                history = history_rows(run.dir) or history
            self._update(status="done", stage="done", test_accuracy=m.test_accuracy, test_loss=m.test_loss,
                         message=done_message(m), history=history)


def history_rows(run_dir: Path) -> list[dict[str, Any]]:
    """A run's history.csv as the page's curve rows ([] when it cannot be read)."""


    try:
        history = read_history(run_dir)
    except (OSError, ValueError, TypeError, csv.Error):
        return []
    return [{"epoch": i + 1, **{k: h[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in h}}
            for i, h in enumerate(history)]


def auto_progress(run_dir: Path) -> dict[str, Any] | None:
    """An auto run's plan and each candidate's result so far, for the page: from auto.json and
    each finished candidate's metrics.json (read as any project file is: checked, never trusted)."""
    plan = read_document(run_dir / "auto.json")
    steps = ((plan or {}).get("plan") or {}).get("candidates")
    if not isinstance(steps, list):
        return None
    published = read_record(run_dir, Metrics)
    contest = published.auto if published is not None else None  # as of the last model published
    kept = contest.get("winner") if isinstance(contest, dict) else None
    out = []
    for step in steps:
        name = step.get("model") if isinstance(step, dict) else None
        if not isinstance(name, str) or name != Path(name).name:
            continue
        row: dict[str, Any] = {"model": name, "status": "skipped" if step.get("skip") else "waiting"}
        cdir = run_dir / "candidates" / name
        info = read_record(cdir, RunInfo)
        if info is not None:
            row["status"] = "trained" if info.status == "complete" else "training"
        m = read_record(cdir, Metrics) if row["status"] == "trained" else None
        if m is not None:
            cv = m.cross_validation if isinstance(m.cross_validation, dict) else {}
            for key, value in (("val_accuracy", m.final_val_accuracy), ("test_accuracy", m.test_accuracy),
                               ("cv_accuracy", cv.get("accuracy") if m.cv_checked else None)):
                if (checked := number(value)) is not None:
                    row[key] = checked
        out.append(row)
    if isinstance(contest, dict) and isinstance(contest.get("candidates"), list):  # why one was not trained
        said = {c.get("model"): c.get("status") for c in contest["candidates"] if isinstance(c, dict)}
        for row in out:
            if isinstance(said.get(row["model"]), str) and row["status"] != "trained":
                row["status"] = said[row["model"]][:120]
    return {"candidates": out, "kept": kept if isinstance(kept, str) else None}


def done_message(m: Metrics) -> str:
    """'Done: test accuracy 75.0% (95% CI 30.1%-95.4%) on 4 held-out photos; cross-validated 86.7% ...'."""
    from ..training.crossval import describe  # noqa: PLC0415 (torch, loaded by now: training ran)

    text = (f"Done: test accuracy {m.test_accuracy:.1%}{f' ({m.ci95_text})' if m.ci95_text else ''} on "
            f"{m.counts['test']} held-out photos, loss {m.test_loss:.4f}")
    if m.cv_checked:
        text += f"; cross-validated {describe(m.cross_validation)}"  # the CLI's words for it
    auto = m.auto or {}
    if auto and not auto.get("finished", True):
        text = (f"Stopped: kept {auto.get('winner')}, the best model so far (the rest of auto's plan can still be "
                f"trained with diycnn train --resume). {text}")
    return text + "."

