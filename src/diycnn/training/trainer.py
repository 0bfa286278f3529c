"""The training loop: Adam with Keras' defaults, cross-entropy, early stopping, resumable checkpoints.

A checkpoint is one safetensors file (weights, Adam state, RNG state) whose metadata
holds the loop's position and history as JSON, written atomically at every epoch end
and when training is interrupted (Ctrl-C), so a resumed run continues exactly where it
stopped and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import ArrayBatches
from ..io import atomic_save_tensors, load_tensors, shown
from ..models.inference import inference_forward
from . import distributed
from .device import autocast, reuse_freed_memory

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


class Callback:
    """Hooks the CLI and UI use for progress; all optional. `brief` is set by the trainer before
    on_train_begin: True when epochs are trivially quick (a head on cached features), so that a
    progress display shows a summary rather than hundreds of epoch lines."""

    brief: bool = False

    def on_train_begin(self, epochs: int, start_epoch: int) -> None: ...
    def on_epoch_begin(self, epoch: int, num_batches: int, start_batch: int) -> None: ...
    def on_batch_end(self, batch: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, interrupted: bool) -> None: ...


@dataclasses.dataclass
class FitConfig:
    """How to fit. Defaults are the blog's recipe: Keras' Adam, constant learning rate."""

    epochs: int
    lr: float
    patience: int | None
    seed: int
    optimizer: str = "adam"  # "adam" (Keras defaults) or "adamw"
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "cosine" (per step, after warm-up)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    layer_decay: float | None = None  # backbone layer-wise learning-rate decay
    shuffle: bool | str = True  # True: every epoch; "once": one fixed order
    max_seconds: float | None = None  # stop after the epoch that passes this much training time

    @classmethod
    def from_training(cls, values: dict[str, Any]) -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in names})
        if values.get("max_minutes"):
            config.max_seconds = values["max_minutes"] * 60
        return config


@dataclasses.dataclass
class LoopState:
    """Where the loop is; saved in checkpoints."""

    epoch: int = 0  # 0-based epoch being run (or next to run)
    batch: int = 0  # next batch within `epoch`
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    stopped_by_time: bool = False
    train_seconds: float = 0.0


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current batch; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Stopping after this batch and saving a checkpoint (Ctrl-C again to abort at once)...")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _param_groups(module: torch.nn.Module, cfg: FitConfig) -> list[dict[str, Any]]:
    """One group per learning-rate scale. With layer decay (backbone recipes) earlier
    backbone stages learn more slowly than later ones and the head, via timm's grouping."""
    backbone = getattr(module, "backbone", None)
    if cfg.layer_decay and backbone is not None:
        from timm.optim import param_groups_layer_decay  # noqa: PLC0415 (lazy: loads timm and torch)

        groups = param_groups_layer_decay(backbone, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
        head = [p for p in module.head.parameters() if p.requires_grad]
        groups.append({"params": head, "weight_decay": cfg.weight_decay, "lr_scale": 1.0})
    else:
        groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr_scale": 1.0,
                   "weight_decay": cfg.weight_decay}]
    for g in groups:
        g["initial_lr"] = cfg.lr * g.get("lr_scale", 1.0)
        g["lr"] = g["initial_lr"]
    return [g for g in groups if g["params"]]


def make_optimizer(module: torch.nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Adam with Keras' defaults (betas 0.9/0.999, epsilon 1e-7) or AdamW; fused kernels where torch has them."""
    groups = _param_groups(module, cfg)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"lr": cfg.lr, "betas": (0.9, 0.999), "eps": 1e-7}
    try:
        return cls(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return cls(groups, foreach=True, **kwargs)


def lr_factor(cfg: FitConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then constant or cosine decay to 1% of the base rate."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


@torch.no_grad()
def predict_logits(module: torch.nn.Module, batches: ArrayBatches, to_input: Callable, device: torch.device,
                   precision: str, tta: bool = False, keep_plan: bool = False) -> np.ndarray:
    """Logits (V, N, C) for every item of `batches`, in order: V = 1 view, or 2 with `tta` (the
    photo and its mirror image; not for features).

    keep_plan: keep the prepared fast forward on the module for later calls (predict-only models).
    One autocast context covers all batches, so each weight is cast to bf16 once per call
    rather than once per batch; CPU models run through `inference_forward`'s faster path.
    """
    module.eval()
    forward = inference_forward(module, device, precision, keep=keep_plan)
    out = []
    with autocast(device, precision), reuse_freed_memory():
        for x, _ in batches.iterate():
            x = to_input(x.to(device, non_blocking=True), False)
            views = [forward(x).float()]
            if tta and x.dim() == 4:
                views.append(forward(torch.flip(x, dims=[3])).float())
            out.append(torch.stack(views).cpu())
    return torch.cat(out, dim=1).numpy() if out else np.zeros((1, 0, 0), dtype=np.float32)


def logits_and_features(module: torch.nn.Module, batches: Any, to_input: Callable, device: torch.device,
                        precision: str, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits (V, N, C), features (V, N, F)) of every item of `batches`: V views as in
    predict_logits, F the width of what the last linear layer reads. Runs the module as it
    is (the fast CPU path replaces its layers, and with them the hook that reads the features)."""
    from ..evaluation.calibration import last_linear  # noqa: PLC0415 (lazy: loads SciPy)

    module.eval()
    layer = None
    logits_out: list[torch.Tensor] = []
    features_out: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    hook = None
    try:
        with torch.no_grad(), autocast(device, precision):
            for x, _ in batches.iterate():
                x = to_input(x.to(device, non_blocking=True), False)
                if layer is None:
                    layer = last_linear(module, x[:2])
                    if layer is None:
                        raise ValueError("the model's logits do not come from a final linear layer")
                    hook = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].float()))
                views = [x, torch.flip(x, dims=[3])] if tta and x.dim() == 4 else [x]
                logits, feats = [], []
                for view in views:
                    seen.clear()
                    logits.append(module(view).float())
                    feats.append(seen[-1].flatten(1))
                logits_out.append(torch.stack(logits).cpu())
                features_out.append(torch.stack(feats).cpu())
    finally:
        if hook is not None:
            hook.remove()
    if not logits_out:
        return np.zeros((1, 0, 0), dtype=np.float32), np.zeros((1, 0, 0), dtype=np.float32)
    return torch.cat(logits_out, dim=1).numpy(), torch.cat(features_out, dim=1).numpy()


def probs_of_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax probabilities (N, C) of `predict_logits`' (V, N, C), averaged over the views, as a
    loaded run and every export predict; `temperature` divides the logits first."""
    if logits.shape[1] == 0:
        return np.zeros(logits.shape[1:], dtype=np.float32)
    return torch.softmax(torch.from_numpy(logits) / temperature, dim=2).mean(0).numpy()


def predict_probs(module: torch.nn.Module, batches: ArrayBatches, to_input: Callable, device: torch.device,
                  precision: str, tta: bool = False, keep_plan: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C) for every item of `batches`, in order.

    tta: also predict the mirrored photo and average (test-time augmentation).
    """
    return probs_of_logits(predict_logits(module, batches, to_input, device, precision, tta, keep_plan))


def _val_metrics(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(p_true).mean()), float((probs.argmax(1) == labels).mean())


class Trainer:
    """Fits a classifier module on decoded photos.

    Args:
        module: returns logits (B, classes) for (B, 3, H, W) input.
        train, val: batches over the training and validation photos (or cached features).
        to_input: (x on device, train?) -> model input: augmentation, crop, normalisation.
        config: epochs, lr, patience (early stopping on val loss; None = off), seed, optimiser...
        run_dir: where checkpoints go (None: no checkpoints).
    """

    def __init__(self, module, train: ArrayBatches, val: ArrayBatches, to_input: Callable,
                 config: FitConfig, device: torch.device, precision: str, run_dir: Path | None = None,
                 callbacks: list[Callback] | None = None, brief: bool = False):
        self.device = device
        self.brief = brief
        self.precision = precision
        self.module = module.to(device).to(memory_format=torch.channels_last)
        self.forward_module = distributed.wrap(self.module, device)  # DDP under torchrun
        self.main = distributed.context().main  # only process 0 writes checkpoints
        self.train, self.val, self.to_input, self.config = train, val, to_input, config
        self.run_dir = Path(run_dir) if run_dir else None
        self.callbacks = callbacks or []
        self.optimizer = make_optimizer(self.module, config)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
        self.state = LoopState()
        self._best_weights: dict[str, torch.Tensor] | None = None

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.run_dir is None or not self.main:
            return
        tensors = {f"model.{k}": v for k, v in self.module.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, pstate in opt["state"].items():
            for key, value in pstate.items():
                tensors[f"optim.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {"loop": json.dumps(dataclasses.asdict(self.state)),
                "param_groups": json.dumps([{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]])}
        atomic_save_tensors(self.run_dir / CHECKPOINT, tensors, meta)

    def load_checkpoint(self) -> None:
        """Restore weights, Adam state, RNG and loop position from the run directory.

        Raises:
            ValueError: the checkpoint is damaged, or from another model (one line naming it).
        """

        try:
            self._restore()
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ValueError(f"'{self.run_dir / CHECKPOINT}' cannot be resumed from ({type(exc).__name__}: "
                             f"{shown(str(exc), 200, quote=False)}): it is damaged or was written for another model. "
                             "Start the run again with a new --out.") from None

    def _restore(self) -> None:
        tensors, meta = load_tensors(self.run_dir / CHECKPOINT)
        self.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt = self.optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        # Moments must have their parameter's memory layout: fused Adam walks raw memory, and a
        # channels-last conv weight with contiguous moments would silently mix up elements.
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for pid, pstate in state.items():
            for name, value in pstate.items():
                if value.shape == params[pid].shape:
                    pstate[name] = torch.empty_like(params[pid]).copy_(value)
        groups = json.loads(meta["param_groups"])
        for group, saved in zip(opt["param_groups"], groups):
            group.update({k: v for k, v in saved.items() if k in group})
        self.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.state = LoopState(**json.loads(meta["loop"]))
        if self.config.patience and (self.run_dir / BEST).is_file():
            best, _ = load_tensors(self.run_dir / BEST)
            self._best_weights = best

    # -- the loop ----------------------------------------------------------------------------
    def _train_step(self, x, labels) -> tuple[float, int]:
        step = self.state.epoch * len(self.train) + self.state.batch
        factor = lr_factor(self.config, step, len(self.train))
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        x = self.to_input(x.to(self.device, non_blocking=True), True)
        y = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits = self.forward_module(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())

    def _end_epoch(self, epoch: int) -> bool:
        """Validate, record history, handle early stopping. Returns True to stop."""
        s, cfg = self.state, self.config
        probs = predict_probs(self.module, self.val, self.to_input, self.device, self.precision)
        val_loss, val_acc = _val_metrics(probs, self.val.labels.numpy())
        loss_sum, correct, seen = distributed.all_reduce_sums([s.loss_sum, s.correct, s.seen], self.device)
        logs = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": self.optimizer.param_groups[-1]["lr"],
                "seconds": s.epoch_seconds}
        s.history.append(logs)
        s.train_seconds += s.epoch_seconds
        stop = False
        if cfg.patience:
            if s.best_val_loss is None or val_loss < s.best_val_loss:
                s.best_val_loss, s.best_epoch, s.bad_epochs = val_loss, epoch + 1, 0
                self._best_weights = {k: v.detach().clone().cpu() for k, v in self.module.state_dict().items()}
                if self.run_dir is not None and self.main:
                    atomic_save_tensors(self.run_dir / BEST, self._best_weights)
            else:
                s.bad_epochs += 1
                stop = s.bad_epochs >= cfg.patience
                s.stopped_early = stop
        s.epoch, s.batch, s.loss_sum, s.correct, s.seen, s.epoch_seconds = epoch + 1, 0, 0.0, 0, 0, 0.0
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)
        return stop

    def fit(self, resume: bool = False) -> tuple[LoopState, bool]:
        """Train until `epochs`, early stopping, or Ctrl-C.

        Returns:
            (loop state with history, interrupted)
        """
        if resume:
            self.load_checkpoint()
        else:  # a run killed in its first epoch (even with SIGKILL) can be resumed from here
            self.save_checkpoint()
        s, cfg = self.state, self.config
        interrupted = False
        for cb in self.callbacks:
            cb.brief = self.brief
            cb.on_train_begin(cfg.epochs, s.epoch)
        with _StopFlag() as stop_flag:
            try:
                while s.epoch < cfg.epochs and not s.stopped_early:
                    epoch = s.epoch
                    if s.batch == 0:
                        # Dropout masks depend only on (seed, epoch): resumable and reproducible.
                        torch.manual_seed(cfg.seed * 100_003 + epoch)
                    for cb in self.callbacks:
                        cb.on_epoch_begin(epoch, len(self.train), s.batch)
                    self.module.train()
                    t_last = time.perf_counter()
                    for x, labels in self.train.iterate(epoch, start_batch=s.batch):
                        loss, correct = self._train_step(x, labels)
                        now = time.perf_counter()
                        s.epoch_seconds += now - t_last
                        t_last = now
                        s.loss_sum += loss * len(labels)
                        s.correct += correct
                        s.seen += len(labels)
                        s.batch += 1
                        for cb in self.callbacks:
                            cb.on_batch_end(s.batch, {"loss": s.loss_sum / s.seen, "accuracy": s.correct / s.seen})
                        if stop_flag.requested:
                            raise KeyboardInterrupt
                    t0 = time.perf_counter()
                    stop = self._end_epoch(epoch)
                    s.history[-1]["seconds"] += time.perf_counter() - t0
                    s.train_seconds += time.perf_counter() - t0
                    if cfg.max_seconds and s.train_seconds >= cfg.max_seconds and s.epoch < cfg.epochs:
                        log.warning("Time limit reached after epoch %d; stopping.", s.epoch)
                        s.stopped_by_time = stop = s.stopped_early = True
                    # under torchrun every process must stop at the same epoch: process 0 decides
                    stop, s.stopped_early, s.stopped_by_time = distributed.broadcast(
                        (stop, s.stopped_early, s.stopped_by_time))
                    if s.epoch < cfg.epochs and not stop:
                        self.save_checkpoint()
            except KeyboardInterrupt:
                interrupted = True
                self.save_checkpoint()
                log.warning("Training interrupted at epoch %d, batch %d; checkpoint saved.", s.epoch + 1, s.batch)
        if not interrupted and cfg.patience and self._best_weights is not None:
            self.module.load_state_dict(self._best_weights)
            log.info("Restored the best weights (epoch %s, val_loss %.4f)", s.best_epoch, s.best_val_loss)
        for cb in self.callbacks:
            cb.on_train_end(interrupted)
        return s, interrupted
