"""`--model auto`: train the candidate recipes that fit a time budget on one split, keep the
one with the lowest validation loss (never chosen by test), and report every candidate.

The plan, printed and kept in metrics.json["auto"]["plan"]: first a look at the photos (a face
detector on a sample of 40): when most hold a face, the face recipes go first (and photos whose
faces are small in the frame are cropped to the face); otherwise they are left out. Candidates
run in order of expected value, the cheap ones on cached features first; each one's first epoch
is timed and its full training projected before it goes on — a candidate that would not fit in
what is left of the budget is stopped there (unless nothing has been trained yet, when it runs
until the budget ends, keeping its best weights); a from-scratch CNN is skipped when a pretrained
candidate already reaches 0.9 validation accuracy, and it comes last, so it never starves a more
promising recipe.

Progressive: the first candidate that finishes is the run at once (a usable model, announced
with its figure to trust), and each better one replaces it; with few validation photos the
candidates on cached features are compared by cross-validated loss (`pick`). Ctrl-C, or the
app's Stop, keeps the best model so far as a finished run.

A stopped or interrupted auto run resumes (`diycnn train --resume RUN`): finished candidates are
reused, an interrupted one continues from its checkpoint, the rest are trained. `auto.json`,
written first, holds what is needed for that."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import pipeline
from .data.loader import decode_all
from .data.scan import ScanResult
from .data.split import Split, make_split, read_split
from .data.survey import face_survey
from .io import atomic_write_json, atomic_write_text, read_json, to_jsonable
from .loading import load
from .models.recipes import get_recipe
from .models.registry import AUTO_ORDER, FINE_TUNED, REGISTRY
from .records import MODEL_JSON, SPLIT_JSON, read_metrics, read_run_info, write_metrics, write_run_info
from .report.auto_html import render_auto_report
from .run import NEAR_SIGNATURES, Run, new_run_dir, write_manifest
from .settings import DEFAULT_BUDGET_MINUTES, TrainSettings, merge_settings
from .training.trainer import CHECKPOINT, Callback

log = logging.getLogger(__name__)

# The registry's auto order: on photos of people the face network first (its descriptors tell people
# apart), then Teachable Machine's recipe as the reference, then the ImageNet recipes; the cheap
# cached-feature baselines before fine-tuning, the from-scratch CNN last. Elsewhere, no face recipe.
FACE_CANDIDATES = AUTO_ORDER
CANDIDATES = tuple(name for name in AUTO_ORDER if not REGISTRY[name].faces)
FROM_SCRATCH = tuple(name for name in AUTO_ORDER if not REGISTRY[name].pretrained)
FACE_FRACTION = 0.4  # "most photos hold a face": at least this share of the sample
CROP_BELOW = 0.2  # crop to the face when faces cover less than this share of the photo (median)
# Validation accuracy after which a from-scratch CNN is not worth its time, nor, on photos of people
# once a face candidate reaches it, the candidates on ImageNet features (bench/default_pipeline.py:
# on kpop_idols they took about half of the default's time and reached 0.33-0.41 against the face recipes' 0.91-0.93).
GOOD_ENOUGH = 0.9
VAL_SMALL = 30  # validation photos: below this, candidates on cached features are compared cross-validated
# The winner's files that make the run (model.json, report.html and manifest.json are written afresh)
RUN_FILES = ("model.safetensors", "history.csv", "curves.png", "confusion.png", "reliability.png", "unknown.safetensors",
             NEAR_SIGNATURES)


AUTO_FILE = "auto.json"
# A candidate's lines left out of auto's output: the winner's calibration and unknown threshold are in
# the summary, every candidate's in its metrics.json
CANDIDATE_QUIET = ("Training ", "Calibrated: ", "None of these: ")
AUTO_FORMAT = "diycnn-auto"


def train_auto(data, settings: TrainSettings, out=None, split=None, runs_root="runs", callbacks=None,
               stage=None, scan: ScanResult | None = None) -> Run:
    """Train CANDIDATES within `settings.budget` minutes on one scan of the folder and one split
    (each through pipeline.train_one); the winner's files fill the run directory and
    `metrics.json["auto"]` lists every candidate's validation and test figures."""
    stage = stage or (lambda text: log.info("%s", text))
    scan = scan if scan is not None else pipeline.scan_for_training(data, settings, stage)
    run_dir = new_run_dir(out, f"{Path(scan.root).name}-auto", runs_root)
    if split is not None:
        the_split = split if isinstance(split, Split) else read_split(split)
    else:
        the_split = make_split(scan, settings.val_split, settings.test_split, settings.seed,
                               val_as_test=settings.val_as_test)
    atomic_write_json(run_dir / SPLIT_JSON, the_split.to_dict())
    log.info("auto: looking for faces in a sample of the photos")

    survey = face_survey([r.path for r in scan.records])
    plan = make_plan(survey, settings)
    atomic_write_json(run_dir / AUTO_FILE, to_jsonable({"format": AUTO_FORMAT, "data": str(scan.root),
                                                        "settings": settings.to_dict(), "plan": plan}))
    return _run_candidates(run_dir, str(scan.root), settings, callbacks, stage, scan=scan, split=the_split)


def make_plan(survey: dict[str, Any], settings: TrainSettings) -> dict[str, Any]:
    """Which candidates, in which order, with face crops or not, and why."""
    faces = survey["fraction"] >= FACE_FRACTION
    seen = f"{survey['with_face']} of {survey['sampled']} sampled photos hold a face"
    crop = None
    if faces and settings.crop is None and (survey["median_face_area"] or 1.0) < CROP_BELOW:
        crop = "faces"
    order = FACE_CANDIDATES if faces else CANDIDATES
    after_faces = f"; skipped once a face candidate reaches {GOOD_ENOUGH} validation accuracy" if faces else ""
    steps = [{"model": m, "reason": ("photos of people: face descriptors tell people apart" if REGISTRY[m].faces
                                     else "from scratch: last, and skipped once a pretrained candidate reaches "
                                          f"{GOOD_ENOUGH} validation accuracy" if m in FROM_SCRATCH
                                     else "pretrained ImageNet features" + after_faces)} for m in order]
    if not faces:
        steps += [{"model": m, "skip": f"not photos of people ({seen})"} for m in FACE_CANDIDATES if m not in order]
    why = (f"{seen}: face recipes first" + ("; faces are small in the frame, so photos are cropped to the face"
                                            if crop else "; faces fill the frame, so photos are used whole")
           if faces else f"{seen}: not face photos")
    return {"faces": faces, "survey": survey, "crop": crop, "why": why, "candidates": steps}


def is_auto_run(run_dir: Path) -> bool:
    return (run_dir / AUTO_FILE).is_file()


def resume_auto(run_dir: Path, callbacks=None, stage=None) -> Run:
    """Finish an interrupted auto run (see the module docstring)."""
    saved = read_json(run_dir / AUTO_FILE, missing=f"'{run_dir}' is not an auto run (no {AUTO_FILE}).",
                      damaged="Start the auto run again with a new --out.")
    if not isinstance(saved, dict):
        raise ValueError(f"'{run_dir / AUTO_FILE}' is not a diycnn auto run file.")
    if saved.get("format") != AUTO_FORMAT:
        raise ValueError(f"'{run_dir / AUTO_FILE}' is not a diycnn auto run file.")
    if _candidate_state(run_dir) == "complete" and (read_metrics(run_dir).auto or {}).get("finished", True):
        raise ValueError(f"Run '{run_dir}' is already complete; nothing to resume. Start a new run with another --out.")
    settings = merge_settings(None, {k: v for k, v in saved["settings"].items() if v is not None}, where=AUTO_FILE)
    return _run_candidates(run_dir, saved["data"], settings, callbacks, stage, resume=True)


def _candidate_state(cdir: Path) -> str:
    """'complete', 'checkpoint' (resumable) or 'new' for a candidate's directory."""
    if not (cdir / MODEL_JSON).is_file():
        return "new"
    info = read_json(cdir / MODEL_JSON, missing="", damaged="Delete the folder to train it again.")
    if isinstance(info, dict) and info.get("status") == "complete":
        return "complete"
    return "checkpoint" if (cdir / CHECKPOINT).is_file() else "new"


def selection_test(run_dir: Path, data, trained: list[dict[str, Any]], winner: str | None = None
                   ) -> dict[str, Any] | None:
    """How clear the pick is: the winner (default: the lowest validation loss) against the runner-up
    (the lowest validation loss of the others), photo by photo on the validation
    split (each candidate's kept weights predict every validation photo, without test-time
    augmentation, as the validation loss that picked them; Wilcoxon signed-rank test on the
    paired per-photo log-losses). The losses are recomputed through each run's prediction path
    (photos decoded as `predict` decodes them), so their means can differ a little from the
    training-time validation losses. None with fewer than two trained candidates."""
    from scipy import stats  # noqa: PLC0415 (lazy: loads SciPy)


    if len(trained) < 2:
        return None
    ranked = sorted(trained, key=lambda r: (r["model"] != winner, r["val_loss"]) if winner else r["val_loss"])
    first, second = ranked[:2]
    split = read_split(run_dir / SPLIT_JSON).to_dict()
    items = [(p, c) for c in split["class_names"] for p in split["splits"]["val"].get(c, [])]
    losses: dict[str, dict[int, float]] = {}
    for r in (first, second):
        run = load(run_dir / "candidates" / r["model"])
        run.tta = False  # as the validation loss that picked the winner was computed
        images, ok, _ = decode_all([Path(data) / p for p, _ in items], run.preprocessing)
        probs = run.predict_arrays(images) if ok else np.zeros((0, len(run.class_names)))
        truth = [run.class_names.index(items[i][1]) for i in ok]
        losses[r["model"]] = {i: float(-np.log(np.clip(probs[j, t], 1e-7, 1.0))) for j, (i, t) in enumerate(zip(ok, truth))}
    common = sorted(set(losses[first["model"]]) & set(losses[second["model"]]))
    a = np.array([losses[first["model"]][i] for i in common])
    b = np.array([losses[second["model"]][i] for i in common])
    diff = b - a
    p = 1.0 if len(common) == 0 or not np.any(diff) else float(stats.wilcoxon(diff).pvalue)
    return {"winner": first["model"], "runner_up": second["model"], "val_photos": len(common),
            "mean_val_loss_recomputed": {first["model"]: float(a.mean()) if len(a) else None,
                              second["model"]: float(b.mean()) if len(b) else None},
            "mean_difference": float(diff.mean()) if len(diff) else None,
            "photos_runner_up_worse": int((diff > 0).sum()), "photos_runner_up_better": int((diff < 0).sum()),
            "p_value": p, "method": "Wilcoxon signed-rank test on paired per-photo validation log-loss",
            "clear": p < 0.05}


class _OverBudget(Exception):
    """Raised after a candidate's first epoch when its projected training time does not fit."""


class _Projection:
    """Times a candidate's first epoch and projects its whole training; over budget, stops it."""

    def __init__(self, name: str, left: float, others_trained: bool, stage):
        outer = self
        self.projected: float | None = None

        class Hooks(Callback):
            epochs = 0
            start = 0

            def on_train_begin(self, epochs, start_epoch):
                self.epochs, self.start = epochs, start_epoch

            def on_epoch_end(self, epoch, logs):
                if epoch != self.start:
                    return
                outer.projected = logs["seconds"] * (self.epochs - self.start)
                if outer.projected > 60:  # a head on cached features needs no forecast
                    stage(f"auto: {name}: {self.epochs - self.start} epochs ~{outer.projected / 60:.1f} min "
                          f"({left / 60:.1f} min of budget left)")
                if outer.projected > left and others_trained:
                    raise _OverBudget(f"projected {outer.projected / 60:.1f} min from its first epoch "
                                      f"({logs['seconds']:.1f} s), more than the {left / 60:.1f} min left")

        self.callback = Hooks()


def _result(name: str, run: Run, projected: float | None) -> dict[str, Any]:
    """A trained candidate's line in metrics.json["auto"]["candidates"]."""
    m = run.metrics
    cv = m.cross_validation or {}
    return {"model": name, "status": "trained", "val_loss": m.kept_val_loss,
            "val_accuracy": m.final_val_accuracy, "test_accuracy": m.test_accuracy,
            "test_accuracy_ci95": m.test_accuracy_ci95, "test_loss": m.test_loss,
            "cv_accuracy": cv.get("accuracy") if m.cv_checked else None,
            "cv_loss": cv.get("loss") if m.cv_checked else None,
            "cached_features": bool(run.info.training.get("frozen")),
            "epochs_run": m.epochs_run, "train_seconds": m.train_seconds,
            "stopped_by_budget": m.stopped_by_time, "projected_seconds": projected,
            "backbone": m.backbone, "size": list(run.preprocessing.output_size),
            "seconds_per_photo": _seconds_per_photo(m.feature_cache)}


def _seconds_per_photo(cache: dict[str, float] | None) -> float | None:
    """What decoding a photo and one forward pass of the backbone took, from a candidate's feature
    extraction (None where its features came from the cache)."""
    cache = cache or {}
    return cache["seconds"] / cache["misses"] if cache.get("misses") and cache.get("seconds") else None


def fine_tuning_floor(name: str, trained: list[dict[str, Any]], train_photos: int, classes: int,
                      settings: TrainSettings) -> tuple[float, dict[str, Any]] | None:
    """A lower bound on a fine-tuned ImageNet candidate's time, before it starts: each epoch is at
    least one forward pass of its backbone over the training photos (its backward pass and
    augmentation come on top), at the rate measured extracting a trained candidate's features with
    the same backbone at the same size (decoding included, as the candidate decodes its photos
    first). (seconds, the candidate it was measured on), or None without such a measurement."""
    entry = REGISTRY[name]
    if entry.family != FINE_TUNED or entry.faces:
        return None
    recipe = get_recipe(name, classes, backbone=settings.backbone)
    epochs = settings.epochs or entry.defaults["epochs"]
    for r in trained:
        if (r.get("seconds_per_photo") and r.get("backbone") == recipe.backbone
                and r.get("size") == list(recipe.preprocessing.output_size)):
            return epochs * train_photos * r["seconds_per_photo"], r
    return None


def pick(trained: list[dict[str, Any]], val_photos: int) -> tuple[dict[str, Any], str]:
    """The candidate to keep, and how it was chosen: the lowest validation loss; but with fewer
    than VAL_SMALL validation photos, the candidates on cached features are first compared by
    their cross-validated loss (every photo predicted once, cheap on cached features), and only
    the best of them meets the others on validation loss."""
    cached = [r for r in trained if r.get("cached_features")]
    pool = [r for r in trained if not r.get("cached_features")]
    how = "lowest validation loss"
    if val_photos < VAL_SMALL and len(cached) > 1 and all(r.get("cv_loss") is not None for r in cached):
        pool.append(min(cached, key=lambda r: r["cv_loss"]))
        how = (f"lowest validation loss; among the candidates on cached features, lowest cross-validated loss "
               f"(only {val_photos} validation photos)")
    else:
        pool += cached
    return min(pool, key=lambda r: r["val_loss"]), how


def _run_candidates(run_dir: Path, data: str | Path, settings: TrainSettings, callbacks: list[Callback] | None,
                    stage: Callable[[str], None] | None, resume: bool = False, scan: ScanResult | None = None,
                    split: Split | None = None) -> Run:
    """Train (or, on resume, reuse or continue) each candidate of the plan in auto.json, all on the
    one scan and split (scanned and read here, once, when not given). The best candidate so far
    is the run from the moment it exists (`_publish`): the first usable model is there within
    the first minute, and Ctrl-C (or the app's Stop) keeps the best so far as a finished run."""
    stage = stage or (lambda text: log.info("%s", text))
    saved = read_json(run_dir / AUTO_FILE, missing="", damaged="Start the auto run again with a new --out.")
    plan = saved.get("plan") or {"candidates": [{"model": m} for m in CANDIDATES], "why": "default order"}
    contest = _Contest(run_dir, data, settings, plan, (settings.budget or DEFAULT_BUDGET_MINUTES) * 60,
                       sum(read_split(run_dir / SPLIT_JSON).counts()["val"].values()), resume, stage,
                       callbacks, scan, split)
    stage(f"auto: {plan['why']}. Plan within {contest.budget / 60:.0f} min: {', '.join(contest.planned)}")
    for step in plan["candidates"]:
        contest.step(step)
    return contest.finish()


@dataclasses.dataclass
class _Contest:
    """An auto run in progress: the plan, what each candidate did so far, the best one (which is
    the run), and the time spent (candidates finished before a resume count against the budget)."""

    run_dir: Path
    data: str | Path
    settings: TrainSettings
    plan: dict[str, Any]
    budget: float  # seconds
    val_photos: int
    resume: bool
    stage: Callable[[str], None]
    callbacks: list[Callback] | None
    scan: ScanResult | None  # made at the first candidate that needs it, when not given
    split: Split | None
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None
    spent_before: float = 0.0
    interrupted: bool = False
    t0: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def planned(self) -> list[str]:
        return [c["model"] for c in self.plan["candidates"] if not c.get("skip")]

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.t0

    def trained(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "trained"]

    def step(self, step: dict[str, Any]) -> None:
        """Train, reuse or skip one candidate of the plan, and publish it if it is the best so far."""
        name = step["model"]
        cdir = self.run_dir / "candidates" / name
        state = _candidate_state(cdir) if self.resume else "new"
        skip = self._why_skip(step, state)
        if skip is not None:
            self.results.append({"model": name, "status": skip})
            return
        left = self.budget - self.elapsed()
        projection = _Projection(name, left, bool(self.trained()), self.stage)
        try:
            run = self._train(name, cdir, state, left, projection)
        except _OverBudget as exc:
            self._note(name, f"skipped: {exc}", f"auto: {name} stopped after its first epoch: {exc}")
            shutil.rmtree(cdir, ignore_errors=True)
        except KeyboardInterrupt:
            if self.best is None:  # nothing usable yet: the run stays resumable
                raise KeyboardInterrupt("Training interrupted; resume with: diycnn train --resume "
                                        f"{self.run_dir}") from None
            self.interrupted = True
            self._note(name, "stopped by the user (its checkpoint is kept)",
                       f"auto: stopped; keeping {self.best['model']}, the best model so far")
        except (ValueError, FileNotFoundError) as exc:  # e.g. no backbone weights: note it, try the next one
            self._note(name, f"failed: {exc}", f"auto: {name} failed: {exc}")
        else:
            self.results.append(_result(name, run, projection.projected))
            self._publish_if_better(name, run)

    def _note(self, name: str, status: str, said: str) -> None:
        self.results.append({"model": name, "status": status})
        self.stage(said)

    def _why_skip(self, step: dict[str, Any], state: str) -> str | None:
        """Why a candidate is not trained now (its status line), or None."""
        name = step["model"]
        if self.interrupted:
            return "not trained: stopped by the user"
        if step.get("skip"):
            return f"skipped: {step['skip']}"
        if state == "complete":
            return None
        best_val = max((r["val_accuracy"] for r in self.trained()), default=0.0)
        face_val = max((r["val_accuracy"] for r in self.trained() if REGISTRY[r["model"]].faces), default=0.0)
        if not REGISTRY[name].faces and face_val >= GOOD_ENOUGH:
            self.stage(f"auto: {name} skipped: a face candidate reaches {face_val:.3f} val accuracy already")
            return (f"skipped: a face candidate already reaches {face_val:.3f} validation accuracy; features made "
                    "for objects are not expected to tell these people apart better")
        if name in FROM_SCRATCH and best_val >= GOOD_ENOUGH:
            self.stage(f"auto: {name} skipped: {best_val:.3f} val accuracy reached already")
            return (f"skipped: a pretrained candidate already reaches {best_val:.3f} validation accuracy; a "
                    "from-scratch CNN is not expected to beat it on this many photos")
        left = self.budget - self.elapsed()
        if left <= 0:
            return "skipped: time budget used up"
        floor = self._fine_tuning_floor(name)
        if floor is not None and floor[0] > left:
            seconds, source = floor
            self.stage(f"auto: {name} skipped: it would take at least {seconds / 60:.1f} min, "
                       f"{left / 60:.1f} min of budget left")
            return (f"skipped: its epochs would take at least {seconds / 60:.1f} min (one forward pass over the "
                    f"training photos each, at the {source['seconds_per_photo'] * 1000:.0f} ms a photo measured "
                    f"extracting {source['model']}'s features), more than the {left / 60:.1f} min left")
        return None

    def _fine_tuning_floor(self, name: str) -> tuple[float, dict[str, Any]] | None:
        """fine_tuning_floor on this contest's split (read only once a candidate has measured a rate)."""
        if not any(r.get("seconds_per_photo") for r in self.trained()):
            return None
        split = self.split or read_split(self.run_dir / SPLIT_JSON)
        return fine_tuning_floor(name, self.trained(), sum(split.counts()["train"].values()), len(split.class_names),
                                 self.settings)

    def _train(self, name: str, cdir: Path, state: str, left: float, projection: _Projection) -> Run:
        """A candidate's run: reused when finished, continued from its checkpoint, or trained."""
        if state == "complete":
            self.stage(f"auto: reusing finished candidate {name}")
            run = load(cdir)
            assert isinstance(run, Run)
            self.spent_before += run.metrics.train_seconds
            return run
        if state == "checkpoint":
            self.stage(f"auto: resuming candidate {name} ({left / 60:.1f} min of budget left) ...")
            resumed = pipeline.resume_one(cdir, self.callbacks, self.stage)
            assert resumed is not None  # auto runs outside torchrun only
            return resumed
        if cdir.exists():  # started but stopped before its first checkpoint: nothing to keep
            shutil.rmtree(cdir)
        self.stage(f"auto: training candidate {name} ({left / 60:.1f} min of budget left) ...")
        if self.scan is None:
            self.scan = pipeline.scan_for_training(self.data, self.settings, self.stage)
        if self.split is None:
            self.split = read_split(self.run_dir / SPLIT_JSON)
        settings = dataclasses.replace(self.settings, model=name, budget=None,
                                       crop=self.settings.crop or self.plan.get("crop"),
                                       max_minutes=round(left / 60, 2))
        run = pipeline.train_one(self.data, settings, out=cdir, split=self.split, scan=self.scan,
                                 callbacks=[*(self.callbacks or []), projection.callback],
                                 stage=lambda text: None if text.startswith(CANDIDATE_QUIET) else self.stage(text))
        assert run is not None
        return run

    def _publish_if_better(self, name: str, run: Run) -> None:
        new_best, _ = pick(self.trained(), self.val_photos)
        if self.best is not None and new_best["model"] == self.best["model"]:
            return
        elapsed = self.elapsed()
        _publish(self.run_dir, new_best["model"], _auto_section(new_best, self.results, self.plan, self.budget,
                                                                elapsed, self.resume, self.val_photos,
                                                                finished=False))
        lead = "first usable model" if self.best is None else "better model"
        self.stage(f"auto: {lead} after {elapsed:.0f} s: {new_best['model']}, {_figure_to_trust(run)}; it is the "
                   "run now" + ("; auto goes on improving (Ctrl-C keeps it)"
                                if self.best is None and name != self.planned[-1] else ""))
        self.best = new_best

    def finish(self) -> Run:
        """The winner, tested against the runner-up, published with the whole contest."""
        trained = self.trained()
        if not trained:
            raise ValueError("auto: no candidate could be trained: "
                             + "; ".join(f"{r['model']} {r['status']}" for r in self.results))
        winner, how = pick(trained, self.val_photos)
        try:
            selection = selection_test(self.run_dir, self.data, trained, winner["model"])
        except Exception as exc:  # a report on the pick must never cost the run
            log.warning("auto: could not test how clear the pick is: %s", exc)
            selection = {"error": str(exc)}
        section = _auto_section(winner, self.results, self.plan, self.budget, self.elapsed(), self.resume,
                                self.val_photos, finished=not self.interrupted, how=how, selection=selection)
        _publish(self.run_dir, winner["model"], section)
        run = load(self.run_dir, device=self.settings.device)
        assert isinstance(run, Run)
        return run


def _figure_to_trust(run: Run) -> str:
    """'98.8% cross-validated' where the test split is small, else '95.0% on 54 test photos'."""
    m = run.metrics
    if m.cv_checked:
        cv = m.cross_validation or {}
        return f"{cv['accuracy']:.1%} cross-validated on {cv['photos']} photos"
    return f"{m.test_accuracy:.1%} on {m.counts['test']} test photos"


def _auto_section(winner: dict[str, Any], results: list[dict[str, Any]], plan: dict[str, Any], budget: float,
                  seconds: float, resume: bool, val_photos: int, finished: bool, how: str = "lowest validation loss",
                  selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json["auto"]: the contest so far (finished False while candidates are still to come
    or when the user stopped it; --resume then trains the rest)."""
    return {"winner": winner["model"], "chosen_by": how, "budget_minutes": budget / 60, "seconds": seconds,
            "resumed": resume, "finished": finished, "val_photos": val_photos, "plan": plan,
            "candidates": list(results), "selection": selection}


def _publish(run_dir: Path, name: str, section: dict[str, Any]) -> None:
    """Make candidate `name` the run: its model and results copied in (each file atomically),
    metrics.json with the contest, the contest's report.html, manifest.json, and model.json last,
    which makes the run usable ("complete"). Called for the first usable model, for each better
    one, and at the end."""

    src = run_dir / "candidates" / name
    for file in RUN_FILES:  # (a candidate finished by an older diycnn may lack manifest.json: written below)
        if (src / file).is_file():
            shutil.copyfile(src / file, run_dir / f".{file}.tmp")
            (run_dir / f".{file}.tmp").replace(run_dir / file)
    theirs = read_metrics(src)
    metrics = theirs.replace(auto=section, suspect_labels=_suspects_for(run_dir, name, theirs.suspect_labels, section))
    write_metrics(run_dir, metrics)
    info = read_run_info(src).replace(name=run_dir.name, auto={"winner": name, "candidates_dir": "candidates"})
    atomic_write_text(run_dir / "report.html", render_auto_report(run_dir, info, metrics))
    write_manifest(run_dir)
    write_run_info(run_dir, info)


def _suspects_for(run_dir: Path, name: str, own: dict[str, Any] | None, section: dict[str, Any]) -> dict[str, Any] | None:
    """Suspect labels come from the model that is kept, never from a losing candidate. A kept
    face-finetune (which trains the network, so lists none of its own) takes them from the face
    descriptors it started from, as face-probe computed them on the same split."""
    if (own or {}).get("checked") or name != "face-finetune":
        return own
    probe = run_dir / "candidates" / "face-probe"
    if not any(r["model"] == "face-probe" and r["status"] == "trained" for r in section["candidates"]):
        return own
    theirs = read_metrics(probe).suspect_labels
    if not (theirs or {}).get("checked"):
        return own
    return {**theirs, "how": f"{theirs.get('how', '')} (the face descriptors face-finetune starts from)"}
