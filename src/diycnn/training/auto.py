"""`--model auto`: train the candidate recipes that fit a time budget on one split, keep the
one with the lowest validation loss (never chosen by test), and report every candidate."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..data.scan import scan_folder
from ..data.split import make_split
from ..io import atomic_write_json, to_jsonable
from ..run import Run, load, new_run_dir, write_manifest
from ..settings import TrainSettings

log = logging.getLogger(__name__)

# Cheapest first, so a small budget still gets the strong frozen-feature baselines.
CANDIDATES = ("tm", "linear-probe", "seed-cnn-plus", "finetune")
DEFAULT_BUDGET_MINUTES = 20.0
RUN_FILES = ("model.safetensors", "model.json", "history.csv", "metrics.json", "curves.png", "confusion.png",
             "report.html", "manifest.json")


def kept_val_loss(metrics: dict[str, Any]) -> float:
    """Validation loss of the weights the run kept (the best epoch with early stopping, else the last)."""
    return metrics["best_val_loss"] if metrics.get("best_epoch") else metrics["final_val_loss"]


def train_auto(data, settings: TrainSettings, out=None, split=None, runs_root="runs", callbacks=None,
               stage=None) -> Run:
    """Train CANDIDATES within `settings.budget` minutes; the winner's files fill the run directory
    and `metrics.json["auto"]` lists every candidate's validation and test figures."""
    from ..api import train

    stage = stage or (lambda text: log.info("%s", text))
    scan = scan_folder(data)
    run_dir = new_run_dir(out, f"{Path(scan.root).name}-auto", runs_root)
    if split is not None:
        shutil.copyfile(split, run_dir / "split.json")
    else:
        the_split = make_split(scan, settings.val_split, settings.test_split, settings.seed,
                               val_as_test=settings.val_as_test)
        atomic_write_json(run_dir / "split.json", the_split.to_dict())
    budget = (settings.budget or DEFAULT_BUDGET_MINUTES) * 60
    shared = {k: v for k, v in settings.to_dict().items()
              if v is not None and k not in ("model", "budget", "val_split", "test_split", "val_as_test")}
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in CANDIDATES:
        left = budget - (time.perf_counter() - t0)
        if left <= 0:
            results.append({"model": name, "status": "skipped: time budget used up"})
            continue
        stage(f"auto: training candidate {name} ({left / 60:.1f} min of budget left) ...")
        try:
            run = train(data, model=name, out=run_dir / "candidates" / name, split=run_dir / "split.json",
                        callbacks=callbacks, on_stage=stage, **{**shared, "max_minutes": left / 60})
        except (ValueError, FileNotFoundError) as exc:  # e.g. no backbone weights: note it, try the next one
            results.append({"model": name, "status": f"failed: {exc}"})
            stage(f"auto: {name} failed: {exc}")
            continue
        m = run.metrics
        results.append({"model": name, "status": "trained", "val_loss": kept_val_loss(m),
                        "val_accuracy": m["final_val_accuracy"], "test_accuracy": m["test_accuracy"],
                        "test_accuracy_ci95": m["test_accuracy_ci95"], "test_loss": m["test_loss"],
                        "epochs_run": m["epochs_run"], "train_seconds": m["train_seconds"],
                        "stopped_by_budget": m.get("stopped_by_time", False)})
    trained = [r for r in results if r["status"] == "trained"]
    if not trained:
        raise ValueError(f"auto: no candidate could be trained: {results}")
    winner = min(trained, key=lambda r: r["val_loss"])
    stage(f"auto: winner by validation loss: {winner['model']} (val loss {winner['val_loss']:.4f})")
    src = run_dir / "candidates" / winner["model"]
    for name in RUN_FILES:
        shutil.copyfile(src / name, run_dir / f".{name}.tmp")
        (run_dir / f".{name}.tmp").replace(run_dir / name)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics["auto"] = {"winner": winner["model"], "chosen_by": "lowest validation loss", "budget_minutes":
                       budget / 60, "seconds": time.perf_counter() - t0, "candidates": results}
    atomic_write_json(run_dir / "metrics.json", to_jsonable(metrics))
    write_manifest(run_dir)
    info = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    info["name"] = run_dir.name
    info["auto"] = {"winner": winner["model"], "candidates_dir": "candidates"}
    atomic_write_json(run_dir / "model.json", info)
    return load(run_dir, device=settings.device)
