"""The public Python API: train, face_weights (and load, from loading.py; summary, from
models/summary.py, which imports no PyTorch). The CLI and the web app call these; the training itself is
pipeline.py (one run, top to bottom) and auto.py (--model auto: several pipeline runs on one scan and split)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from . import pipeline
from .auto import is_auto_run, resume_auto, train_auto
from .models.face_weights import face_weights  # noqa: F401 (part of this API; loads no PyTorch)
from .models.registry import check_model_name
from .models.summary import summary  # noqa: F401 (part of this API; lives below so it loads no PyTorch)
from .run import Run
from .settings import DEFAULT_MODEL, merge_settings, read_config_file
from .training import distributed
from .training.trainer import Callback

log = logging.getLogger(__name__)


def train(data: str | Path | None = None, model: str = DEFAULT_MODEL, *, out: str | Path | None = None,
          split: str | Path | None = None, resume: str | Path | None = None, config: str | Path | None = None,
          runs_root: str | Path = "runs", callbacks: list[Callback] | None = None,
          on_stage: Callable[[str], None] | None = None, **settings: Any) -> Run | None:
    """Train a model on a photo folder and write a run directory.

    Args:
        data: `DATA/<class>/*` or `DATA/{train,val,test}/<class>/*`.
        model: `auto` (the default, as in the CLI and the web app: looks for faces, then trains
            the recipes that fit `budget` minutes, keeping the best so far as the run), a recipe
            (`seed-cnn`, `seed-cnn-plus`, `tm`, `linear-probe`, `finetune`, `face-probe`,
            `face-finetune`) or a Keras-style spec file (.yaml/.json).
        out: run directory (must be new or empty); default `runs/<data>-<model>`, auto-numbered.
        split: reuse a split.json so models are compared on the same photos.
        resume: continue an interrupted run directory (other arguments are ignored).
        config: YAML/JSON file of settings; keyword arguments override it.
        **settings: epochs, batch_size, lr, seed, val_split, test_split, patience, device, precision,
            backbone, weights, tta, budget, crop, no_face.

    Returns:
        The finished Run (also readable later with `diycnn.load`); None in the processes other
        than process 0 under torchrun (they train, process 0 evaluates and writes).

    Raises:
        FileNotFoundError, ValueError: bad data folder, model, split or settings (message says how to fix).

    Example:
        >>> run = diycnn.train("photos")                     # auto
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
    check_model_name(s.model)  # a typo is reported before the photos are scanned
    ctx = distributed.setup(s.device)
    if ctx.active and s.model == DEFAULT_MODEL:
        raise ValueError("--model auto is not supported under torchrun yet: pick one recipe (e.g. --model finetune).")
    if s.model == DEFAULT_MODEL:
        return train_auto(data, s, out=out, split=split, runs_root=runs_root, callbacks=callbacks, stage=stage)
    return pipeline.train_one(data, s, out=out, split=split, runs_root=runs_root, callbacks=callbacks, stage=stage)


def _resume(run_dir: Path, callbacks: list[Callback] | None, stage: Callable[[str], None]) -> Run | None:
    if is_auto_run(run_dir):
        return resume_auto(run_dir, callbacks, stage)
    return pipeline.resume_one(run_dir, callbacks, stage)


__all__ = ["train", "summary", "face_weights", "Callback"]
