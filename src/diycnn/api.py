"""The public Python API: train, load, summary. The CLI and the web app call only these."""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data.loader import ArrayBatches, decode_all
from .data.scan import ScanResult, scan_folder
from .data.split import Split, check_split, make_split, read_split
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable
from .models.recipes import Recipe, get_recipe, recipe_from_saved
from .models.sequential import Sequential, format_summary
from .run import RUN_FORMAT, RUN_VERSION, Run, history_csv, load, new_run_dir, read_model_json, versions
from .settings import TrainSettings, merge_settings, read_config_file
from .training.device import resolve_device, resolve_precision
from .training.trainer import BEST, CHECKPOINT, Callback, FitConfig, Trainer, predict_probs

log = logging.getLogger(__name__)


def summary(model: str | Sequential = "seed-cnn", num_classes: int = 2,
            print_fn: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Keras-style summary of a built-in model, a spec file, or a Sequential.

    Returns the table as data (rows and parameter totals); prints it with `print_fn`
    unless that is None.

    Example:
        >>> diycnn.summary("seed-cnn")["total_params"]
        35900130
    """
    spec = model if isinstance(model, Sequential) else get_recipe(model, num_classes).spec
    return format_summary(spec, print_fn=print_fn)


def _decode(scan: ScanResult, recipe: Recipe, progress=None) -> dict[str, np.ndarray]:
    """Decode every usable photo; drop (and report) those that fail. Returns rel -> row index map data."""
    images, ok, failed = decode_all([r.path for r in scan.records], recipe.preprocessing,
                                    names=[r.rel for r in scan.records], progress=progress)
    scan.records = [scan.records[i] for i in ok]
    scan.skipped.extend(failed)
    return images


def _arrays(split: Split, scan: ScanResult, images: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    row = {r.rel: i for i, r in enumerate(scan.records)}
    pairs = split.paths(name)
    idx = np.array([row[p] for p, _ in pairs], dtype=np.int64)
    labels = np.array([split.class_names.index(c) for _, c in pairs], dtype=np.int64)
    return images[idx], labels, [p for p, _ in pairs]


def _resolved(settings: TrainSettings, recipe: Recipe) -> dict[str, Any]:
    values = settings.to_dict()
    for key in ("epochs", "batch_size", "lr", "patience"):
        if values[key] is None:
            values[key] = recipe.defaults.get(key)
    return values


def _write_model_json(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "model.json", to_jsonable(info))


def train(data: str | Path | None = None, model: str = "seed-cnn", *, out: str | Path | None = None,
          split: str | Path | None = None, resume: str | Path | None = None, config: str | Path | None = None,
          runs_root: str | Path = "runs", callbacks: list[Callback] | None = None,
          on_stage: Callable[[str], None] | None = None, **settings: Any) -> Run:
    """Train a model on a photo folder and write a run directory.

    Args:
        data: `DATA/<class>/*` or `DATA/{train,val,test}/<class>/*`.
        model: built-in name (`seed-cnn`) or a Keras-style spec file (.yaml/.json).
        out: run directory (must be new or empty); default `runs/<data>-<model>`, auto-numbered.
        split: reuse a split.json so models are compared on the same photos.
        resume: continue an interrupted run directory (other arguments are ignored).
        config: YAML/JSON file of settings; keyword arguments override it.
        **settings: epochs, batch_size, lr, seed, val_split, test_split, patience, device, precision.

    Returns:
        The finished Run (also readable later with `diycnn.load`).

    Raises:
        FileNotFoundError, ValueError: bad data folder, model, split or settings (message says how to fix).

    Example:
        >>> run = diycnn.train("photos", model="seed-cnn", epochs=30)
        >>> run.metrics["test_accuracy"]
    """
    stage = on_stage or (lambda text: log.info("%s", text))
    if resume is not None:
        return _resume(Path(resume), callbacks, stage)
    if data is None:
        raise ValueError("train() needs a data folder (or resume=RUN_DIR).")
    cfg = read_config_file(config) if config else None
    s = merge_settings(cfg, {"model": model, **settings}, where=str(config or "settings"))

    stage(f"Scanning {data} ...")
    scan = scan_folder(data)
    recipe = get_recipe(s.model, len(scan.class_names))
    values = _resolved(s, recipe)
    run_dir = new_run_dir(out, f"{Path(scan.root).name}-{recipe.name}", runs_root)
    stage(f"Decoding {len(scan.records)} photos at {recipe.preprocessing.size[0]}x{recipe.preprocessing.size[1]} ...")
    images = _decode(scan, recipe)
    if split is not None:
        the_split = read_split(split)
        check_split(the_split, scan, where=f"split file '{split}'")
    else:
        the_split = make_split(scan, s.val_split, s.test_split, s.seed)
    for note in the_split.notes:
        stage(f"Note: {note}")
    atomic_write_json(run_dir / "split.json", the_split.to_dict())

    device = resolve_device(values["device"])
    precision = resolve_precision(values["precision"], device)
    info = {
        "format": RUN_FORMAT, "format_version": RUN_VERSION, "name": run_dir.name, "status": "training",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": str(scan.root), "layout": scan.layout, "class_names": scan.class_names,
        "model": {"name": recipe.name, "source": recipe.source, "spec": recipe.spec.get_config(),
                  "preprocessing": recipe.preprocessing.to_dict(), "defaults": recipe.defaults,
                  "params": recipe.spec.count_params()},
        "training": values, "device": str(device), "precision": precision, "versions": versions(),
        "scan": {"skipped": [p.to_dict() for p in scan.skipped], "duplicates": [p.to_dict() for p in scan.duplicates],
                 "notes": scan.notes + the_split.notes},
    }
    _write_model_json(run_dir, info)
    return _fit_and_finish(run_dir, info, recipe, scan, the_split, images, callbacks, stage, resume=False)


def _resume(run_dir: Path, callbacks, stage) -> Run:
    info = read_model_json(run_dir)
    if info["status"] == "complete":
        raise ValueError(f"Run '{run_dir}' is already complete; nothing to resume. Start a new run with another --out.")
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"Run '{run_dir}' has no {CHECKPOINT} to resume from (it stopped before its first checkpoint). "
            "Start it again with a new --out."
        )
    recipe = recipe_from_saved(info["model"], len(info["class_names"]))
    stage(f"Resuming {run_dir} on {info['data']} ...")
    scan = scan_folder(info["data"])
    images = _decode(scan, recipe)
    the_split = read_split(run_dir / "split.json")
    check_split(the_split, scan, where=f"run's split.json ({run_dir})")
    return _fit_and_finish(run_dir, info, recipe, scan, the_split, images, callbacks, stage, resume=True)


def _fit_and_finish(run_dir: Path, info: dict, recipe: Recipe, scan: ScanResult, the_split: Split,
                    images: np.ndarray, callbacks, stage, resume: bool) -> Run:
    values = info["training"]
    device = resolve_device(values["device"])
    precision = info["precision"]
    x_train, y_train, _ = _arrays(the_split, scan, images, "train")
    x_val, y_val, _ = _arrays(the_split, scan, images, "val")
    x_test, y_test, test_paths = _arrays(the_split, scan, images, "test")
    bs = values["batch_size"]
    train_batches = ArrayBatches(x_train, y_train, bs, shuffle=True, seed=values["seed"])
    val_batches = ArrayBatches(x_val, y_val, bs)
    module = recipe.spec.build(seed=values["seed"])
    trainer = Trainer(module, train_batches, val_batches, recipe.preprocessing,
                      FitConfig(values["epochs"], values["lr"], values["patience"], values["seed"]),
                      device, precision, run_dir=run_dir, callbacks=callbacks)

    class _History(Callback):  # history.csv after every epoch, so an interrupted run shows its progress
        def on_epoch_end(self, epoch, logs):
            atomic_write_text(run_dir / "history.csv", history_csv(trainer.state.history))

    trainer.callbacks.append(_History())
    stage(f"Training {recipe.name} on {len(y_train)} photos (val {len(y_val)}, test {len(y_test)}) "
          f"for up to {values['epochs']} epochs on {device} ({precision}) ...")
    state, interrupted = trainer.fit(resume=resume)
    if interrupted:
        info["status"] = "interrupted"
        _write_model_json(run_dir, info)
        raise KeyboardInterrupt(f"Training interrupted; resume with: diycnn train --resume {run_dir}")

    stage("Evaluating on the held-out test split ...")
    test_batches = ArrayBatches(x_test, y_test, bs)
    probs = predict_probs(trainer.module, test_batches, recipe.preprocessing, device, precision)
    from .evaluation.metrics import classification_metrics

    m = classification_metrics(probs, y_test, scan.class_names)
    names = scan.class_names
    misclassified = [
        {"path": p, "true": names[t], "predicted": names[int(pr.argmax())], "probability": float(pr.max()),
         "probabilities": {c: float(v) for c, v in zip(names, pr)}}
        for p, t, pr in zip(test_paths, y_test, probs) if int(pr.argmax()) != t
    ]
    counts = the_split.counts()
    trained_images = sum(len(y_train) for _ in state.history)
    step_seconds = sum(h["seconds"] for h in state.history)
    metrics = {
        "test_accuracy": m["accuracy"], "test_accuracy_ci95": m["accuracy_ci95"], "test_loss": m["loss"],
        "test_macro_f1": m["macro_f1"], "test_correct": m["correct"], "per_class": m["per_class"],
        "confusion_matrix": m["confusion_matrix"], "class_names": names,
        "counts": {s: sum(c.values()) for s, c in counts.items()}, "counts_by_class": counts,
        "final_val_loss": state.history[-1]["val_loss"], "final_val_accuracy": state.history[-1]["val_accuracy"],
        "best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss, "epochs_run": len(state.history),
        "stopped_early": state.stopped_early, "train_seconds": state.train_seconds,
        "train_images_per_second": trained_images / step_seconds if step_seconds else 0.0,
        "device": str(device), "precision": precision,
        "skipped": [p.to_dict() for p in scan.skipped], "duplicates": [p.to_dict() for p in scan.duplicates],
        "notes": scan.notes + the_split.notes, "misclassified": misclassified,
    }
    atomic_save_tensors(run_dir / "model.safetensors", trainer.module.state_dict(),
                        {"format": "diycnn", "model": recipe.name})
    atomic_write_text(run_dir / "history.csv", history_csv(state.history))
    atomic_write_json(run_dir / "metrics.json", to_jsonable(metrics))

    from .report.html import render_report
    from .report.plots import confusion_png, curves_png

    curves = curves_png(state.history, title=f"{recipe.name} on {Path(info['data']).name}")
    confusion = confusion_png(m["confusion_matrix"], names)
    atomic_write_bytes(run_dir / "curves.png", curves)
    atomic_write_bytes(run_dir / "confusion.png", confusion)
    atomic_write_text(run_dir / "report.html", render_report(info, metrics, curves, confusion, Path(info["data"])))
    info["status"] = "complete"
    _write_model_json(run_dir, info)
    for leftover in (CHECKPOINT, BEST):
        (run_dir / leftover).unlink(missing_ok=True)
    return load(run_dir, device=values["device"])
