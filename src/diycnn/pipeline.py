"""One training run, top to bottom: prepare -> fit -> evaluate -> write.

    train_one(data, settings)            a new run: prepare()        -> finish()
    resume_one(run_dir)                  an interrupted run: prepare_resume() -> finish()
    finish(prepared)                     fit() -> evaluate() -> write() -> the loaded Run

`prepare` scans the folder, builds the recipe's module (and loads its backbone's weights),
decodes the photos or extracts their features, makes the split and writes model.json;
`fit` trains (LP-FT first where the recipe asks, checkpoints every epoch, torchrun-aware);
`evaluate` scores the held-out test split and gathers everything metrics.json holds; `write`
saves the weights, metrics, plots and report and marks the run complete. api.train (the public
function) calls train_one, resume_one or, for --model auto, auto.train_auto, which trains each
candidate through api.train in turn.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data.augment import feature_input_fn, image_input_fn
from .data.features import FeatureCache, extract_features
from .data.loader import ArrayBatches, Rows, ShardedBatches, decode_all, decode_cached
from .data.scan import Problem, ScanResult, find_images, scan_folder
from .data.split import (
    Split,
    check_split,
    kfold_splits,
    make_split,
    near_group_ids,
    near_section,
    read_split,
    separate_near_duplicates,
)
from .evaluation.overfit import overfitting
from .evaluation.suspects import SUSPECT_FOLDS, out_of_fold_probs, suspect_labels
from .explanations import cam_samples
from .io import atomic_save_tensors, atomic_write_bytes, atomic_write_json, atomic_write_text, plain, shown
from .loading import load
from .models.recipes import Recipe, get_recipe, recipe_from_saved
from .models.registry import listing, needs_cached_features
from .records import MODEL_JSON, SPLIT_JSON, Metrics, RunInfo, read_run_info, write_metrics, write_run_info
from .report.html import render_report
from .run import NEAR_SIGNATURES, Run, check_model_size, history_csv, new_run_dir, versions, write_manifest
from .settings import INFERENCE_PRECISION, TrainingPlan, TrainSettings
from .training import crossval, distributed, trunk
from .training.device import autocast, resolve_device, resolve_precision
from .training.trainer import (
    BEST,
    CHECKPOINT,
    Callback,
    FitConfig,
    Trainer,
    logits_and_features,
    predict_logits,
    probs_of_logits,
)

log = logging.getLogger(__name__)
Stage = Callable[[str], None]  # where a run says what it is doing (the CLI prints it; the app shows it)
ONNX_FROM = 100  # photos to extract features of, from which onnxruntime is tried (saves ~10-25 ms a photo)

@dataclasses.dataclass
class _Data:
    """Everything the fit needs, indexed like scan.records."""

    x: np.ndarray | Rows  # uint8 photos (N, H, W, 3), in memory or memory-mapped, or features (N, F)
    to_input: Callable[..., torch.Tensor]
    mode: str  # "images" or "features"
    cache: dict[str, float] | None = None  # feature-cache hits, misses and the seconds extracting
    notes: list[Problem] = dataclasses.field(default_factory=list)  # used photos with remarks (no face found)


def _load_backbone_weights(module: Any, recipe: Recipe, training: TrainingPlan) -> str:
    if recipe.backbone is None:
        raise ValueError(f"recipe {recipe.name} has no backbone to load weights into")
    from .models.backbones import load_pretrained  # noqa: PLC0415 (lazy: loads torch)

    return load_pretrained(module.backbone, recipe.backbone, training.weights)


@torch.no_grad()
def _encode(backbone: Any, x: np.ndarray, to_input: Callable[..., torch.Tensor], device: torch.device,
            precision: str, run: Callable[[torch.Tensor], np.ndarray] | None = None) -> np.ndarray:
    """Backbone features (N, F) of cached photos, evaluation-cropped (by `run`, the backbone in
    another engine, where given)."""
    backbone.eval()
    out = []
    for start in range(0, len(x), 64):
        batch = to_input(torch.from_numpy(x[start:start + 64]).to(device), False).to(memory_format=torch.channels_last)
        if run is not None:
            out.append(torch.from_numpy(run(batch)))
            continue
        with autocast(device, precision):
            out.append(backbone(batch).float().cpu())
    return torch.cat(out).numpy()


def _freeze(module: Any, training: TrainingPlan) -> None:
    if training.freeze_fraction and hasattr(module, "freeze"):
        module.freeze(training.freeze_fraction)


def _decode_or_extract(recipe: Recipe, scan: ScanResult, module: Any, training: TrainingPlan, device: torch.device,
                       precision: str, stage: Stage) -> tuple[_Data, ScanResult]:
    """Decode photos (or extract frozen-backbone features) once. Returns them with the scan of the
    photos that worked: a new ScanResult, those that failed moved to its `skipped` (the scan given
    is left as it was, so several runs can start from one)."""
    prep = recipe.preprocessing
    if training.frozen:
        from .models.backbones import weights_fingerprint  # noqa: PLC0415 (lazy: loads torch)

        backbone = module.backbone.to(device).to(memory_format=torch.channels_last).eval()
        to_image = image_input_fn(prep)

        cache = FeatureCache({"backbone": recipe.backbone, "weights": weights_fingerprint(backbone),
                              "preprocessing": prep.to_dict(), "precision": INFERENCE_PRECISION,
                              "device": device.type})
        # Features in the precision a loaded run predicts in: the head then learns from, and is scored
        # on, the numbers `diycnn predict` and the exports compute (bf16 features differ by up to 1e-2).
        # On the CPU onnxruntime computes them, about twice as fast, checked against PyTorch first,
        # where there are enough photos to extract to pay for exporting the backbone (1-2 s).
        runner: list[Any] = []
        cached = sum(cache.holds(r.sha256) for r in scan.records)
        onnx = device.type == "cpu" and INFERENCE_PRECISION == "fp32" and len(scan.records) - cached >= ONNX_FROM

        def encode(images: np.ndarray) -> np.ndarray:
            if onnx and not runner:
                from .exports.onnx_format import feature_runner  # noqa: PLC0415 (lazy: loads onnxruntime)

                runner.append(feature_runner(backbone, to_image(torch.from_numpy(images[:8]), False),
                                             lambda x: backbone(x.to(memory_format=torch.channels_last))))
            return _encode(backbone, images, to_image, device, INFERENCE_PRECISION, run=runner[0] if runner else None)

        log.info("feature cache: %s", cache.dir)
        stage(f"{recipe.backbone} features: all {cached} photos in the cache" if cached == len(scan.records)
              else f"Extracting {recipe.backbone} features of {len(scan.records) - cached} "
                   f"photo{'' if len(scan.records) - cached == 1 else 's'} ({cached} in the cache) ...")
        found: list[Problem] = []
        started = time.perf_counter()
        ctx = distributed.context()
        if ctx.active:  # each process extracts its share into the one cache, then all read it all
            mine = scan.records[ctx.rank::ctx.world]
            extract_features(mine, prep, encode, cache, notes=[])
            stage(f"Process {ctx.rank}: extracted {cache.misses} of its {len(mine)} photos' features")
            distributed.barrier()
            cache = FeatureCache(cache.key)
        feats, ok, failed = extract_features(scan.records, prep, encode, cache, notes=found)
        if ctx.active:  # each process said what it extracted; here what process 0 then read
            stage(f"Feature cache: {cache.hits} hit(s), {cache.misses} extracted")
        # (the seconds, with decoding, tell auto what a pass of this backbone over the photos costs)
        return (_Data(feats, feature_input_fn, "features", {"hits": cache.hits, "misses": cache.misses,
                                                            "seconds": round(time.perf_counter() - started, 3)},
                      found),
                _kept(scan, ok, failed))
    cache_prep = prep.for_cache()
    stage(f"Decoding {len(scan.records)} photos at {cache_prep.output_size[0]}x{cache_prep.output_size[1]} ...")
    notes: list[Problem] = []
    images, ok, failed = decode_cached(scan.records, cache_prep, notes=notes)
    where = f", memory-mapped from {getattr(images.base, 'filename', '')}" if isinstance(images, Rows) else ""
    if failed or where:
        stage(f"Decoded {len(ok)} photos ({len(failed)} unreadable){where}")
    return _Data(images, image_input_fn(prep, training.augment), "images", notes=notes), _kept(scan, ok, failed)


def _kept(scan: ScanResult, ok: list[int], failed: list[Problem]) -> ScanResult:
    """`scan` with only the records at `ok`, and `failed` added to what it skipped."""
    return dataclasses.replace(scan, records=[scan.records[i] for i in ok], skipped=[*scan.skipped, *failed])


def _arrays(split: Split, scan: ScanResult, x: np.ndarray | Rows, name: str) -> tuple[Any, np.ndarray, list[str]]:
    """One split's photos (rows of `x`, still memory-mapped where `x` is), labels and paths."""
    row = {r.rel: i for i, r in enumerate(scan.records)}
    pairs = split.paths(name)
    idx = np.array([row[p] for p, _ in pairs], dtype=np.int64)
    labels = np.array([split.class_names.index(c) for _, c in pairs], dtype=np.int64)
    return (x.take(idx) if isinstance(x, Rows) else x[idx]), labels, [p for p, _ in pairs]


@dataclasses.dataclass
class Prepared:
    """What `prepare` hands to `fit`: the run directory and model.json's contents, the recipe and its
    module, the scanned photos, their split, and the decoded photos or cached features."""
    run_dir: Path
    info: RunInfo
    recipe: Recipe
    module: Any
    scan: ScanResult
    split: Split
    data: _Data

    @property
    def training(self) -> TrainingPlan:
        """The run's plan, as model.json records it (after an adaptation, the adapted one)."""
        return TrainingPlan.from_record(self.info.training)


@dataclasses.dataclass
class Fitted:
    """What `fit` hands to `evaluate`: the run's record as training left it (a new plan after an
    adaptation), the trained module (the head alone on cached features), the trainer's state, the
    split's arrays, and an untrained copy of the head for cross-validation."""
    info: RunInfo
    fit_module: Any
    state: Any
    untrained_head: Any
    arrays: dict[str, tuple[Any, np.ndarray, list[str]]]


def train_one(data: str | Path, s: TrainSettings, *, out: str | Path | None = None,
              split: str | Path | Split | None = None, scan: ScanResult | None = None, runs_root: str | Path = "runs",
              callbacks: list[Callback] | None = None, stage: Callable[[str], None] | None = None) -> Run | None:
    """A new run of one recipe with settings `s`: prepare, then fit, evaluate, write.

    `split` is a split.json or a Split; `scan`, the folder's ScanResult when the caller has it
    (auto and compare scan once for all their runs)."""
    stage = stage or (lambda text: log.info("%s", text))
    return finish(prepare(data, s, out=out, split=split, scan=scan, runs_root=runs_root, stage=stage), callbacks,
                  stage)


def scan_for_training(data: str | Path, s: TrainSettings, stage: Callable[[str], None]) -> ScanResult:
    """Scan the photo folder as a run does, saying what was found."""
    stage(f"Scanning {data} ...")
    scan = scan_folder(data, near_duplicates=s.near_duplicates)
    layout = "given train/val/test folders" if scan.layout == "split-folders" else "one folder per class"
    stage(f"Found {len(scan.records)} photos in {len(scan.class_names)} classes ({layout})"
          + (f", {len(scan.skipped)} skipped" if scan.skipped else ""))
    if scan.near:
        conflicts = sum(n.kind == "label-conflict" for n in scan.near)
        stage(f"Near-duplicates: {len(scan.near) - conflicts} pair(s) within a class (kept on one side of the split)"
              + (f", {conflicts} across classes (likely label conflicts, see the report)" if conflicts else ""))
    for note in scan.notes:
        stage(f"Note: {note}")
    return scan


def prepare(data: str | Path, s: TrainSettings, *, out: str | Path | None = None, split: str | Path | Split | None = None,
            scan: ScanResult | None = None, runs_root: str | Path = "runs", stage: Stage) -> Prepared:
    """Scan (unless given), build, decode or extract features, split; model.json written with
    status 'training'."""
    if s.unknown_folder is not None and not Path(s.unknown_folder).is_dir():  # before any work, or a run folder
        raise ValueError(f"--unknown-folder '{s.unknown_folder}' is not a folder: give a folder of photos "
                         "of none of the classes (any layout), or leave the option out.")
    ctx = distributed.context()
    scan = scan if scan is not None else scan_for_training(data, s, stage)
    recipe = get_recipe(s.model, len(scan.class_names), backbone=s.backbone)
    if s.crop == "faces":
        recipe = dataclasses.replace(recipe, preprocessing=dataclasses.replace(recipe.preprocessing, faces=True,
                                                                               no_face=s.no_face))
    training = TrainingPlan.merge(recipe.defaults, s)
    if training.suspects and not training.frozen:
        raise needs_cached_features("--suspects on", recipe.name,
                                    "each photo's out-of-fold prediction would cost a training run. Use diycnn "
                                    "compare --folds K, which lists suspect labels from the models' out-of-fold "
                                    "predictions.")
    if training.cross_validate and not training.frozen:
        raise needs_cached_features("--cv on", recipe.name,
                                    f"{crossval.CV_FOLDS}-fold cross-validation would cost {crossval.CV_FOLDS} more "
                                    f"full trainings. Use diycnn compare --folds {crossval.CV_FOLDS} --models "
                                    f"{recipe.name}, which reports the out-of-fold accuracy over all photos.")
    # a given split is read first: a malformed file is refused before a run folder is made or a photo decoded
    # (near-duplicate separation edits the split: a Split given is copied, the caller's stays as it was)
    given = copy.deepcopy(split) if isinstance(split, Split) else read_split(split) if split is not None else None
    run_dir = distributed.on_main(lambda: new_run_dir(out, f"{Path(scan.root).name}-{recipe.name}", runs_root))
    device = distributed.device_for(resolve_device(training.device))
    precision = resolve_precision(training.precision, device, training.cpu_precision)
    module = recipe.build(seed=training.seed)
    weights_source = _load_backbone_weights(module, recipe, training) if recipe.kind == "backbone" else None
    _freeze(module, training)
    data_, scan = _decode_or_extract(recipe, scan, module, training, device, precision, stage)
    if given is not None:
        the_split = given
        check_split(the_split, scan, where="the split given" if isinstance(split, Split) else f"split file '{split}'")
    else:
        the_split = make_split(scan, s.val_split, s.test_split, s.seed, val_as_test=s.val_as_test)
    left_out = separate_near_duplicates(the_split, scan) if scan.near_checked else []
    for note in the_split.notes:
        stage(f"Note: {note}")
    if ctx.main:
        atomic_write_json(run_dir / SPLIT_JSON, the_split.to_dict())
    info = RunInfo(
        name=run_dir.name, status="training", created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        data=str(scan.root), layout=scan.layout, class_names=list(scan.class_names),
        model={**recipe.to_dict(), "params": sum(p.numel() for p in module.parameters()),
               "weights_source": weights_source},
        training=training.record(), device=str(device), precision=precision,
        inference={"tta": bool(training.tta) and data_.mode == "images"}, versions=versions(),
        scan={"skipped": [p.to_dict() for p in scan.skipped], "duplicates": [p.to_dict() for p in scan.duplicates],
              "notes": scan.notes + the_split.notes, "near_left_out": left_out})
    if ctx.main:
        write_run_info(run_dir, info)
    return Prepared(run_dir, info, recipe, module, scan, the_split, data_)


def resume_one(run_dir: Path, callbacks: list[Callback] | None = None, stage: Stage | None = None) -> Run | None:
    """Finish an interrupted run from its checkpoint: prepare_resume, then fit, evaluate, write."""
    stage = stage or (lambda text: log.info("%s", text))
    return finish(prepare_resume(run_dir, stage), callbacks, stage, resume=True)


def prepare_resume(run_dir: Path, stage: Stage) -> Prepared:
    """The Prepared of an interrupted run, rebuilt from its model.json and split.json."""
    info = read_run_info(run_dir)
    if info.status == "complete":
        raise ValueError(f"Run '{run_dir}' is already complete; nothing to resume. Start a new run with another --out.")
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"Run '{run_dir}' has no {CHECKPOINT} to resume from (it stopped before its first checkpoint). "
            "Start it again with a new --out."
        )
    where = run_dir / MODEL_JSON
    try:
        recipe = recipe_from_saved(info.model, len(info.class_names))
        training = TrainingPlan.from_record(info.training)
        data_dir, precision = Path(info.data), info.precision
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ValueError(f"'{where}' does not describe a run diycnn can resume ({type(exc).__name__}: "
                         f"{shown(str(exc), 200, quote=False)}); the run directory is damaged. Start it again with a "
                         "new --out.") from None
    check_model_size(recipe, where)  # before anything is allocated
    distributed.setup(training.device)
    device = distributed.device_for(resolve_device(training.device))
    stage(f"Resuming {run_dir} on {data_dir} ...")
    scan = scan_folder(data_dir, near_duplicates=training.near_duplicates)
    # the split is checked against the folder first: model.json naming another folder is refused
    # before any photo is decoded or any feature extracted
    the_split = read_split(run_dir / SPLIT_JSON)
    check_split(the_split, scan, where=f"run's {SPLIT_JSON} ({run_dir})")
    module = recipe.build(seed=training.seed)
    if recipe.kind == "backbone":
        _load_backbone_weights(module, recipe, training)
    _freeze(module, training)
    data_, scan = _decode_or_extract(recipe, scan, module, training, device, precision, stage)
    check_split(the_split, scan, where=f"run's {SPLIT_JSON} ({run_dir})")  # a photo that no longer decodes
    return Prepared(run_dir, info, recipe, module, scan, the_split, data_)


def _linear_probe_init(module: Any, data_: _Data, x_train: Any, y_train: np.ndarray, x_val: Any, y_val: np.ndarray,
                       training: TrainingPlan, device: torch.device, precision: str, stage: Stage) -> float:
    """LP-FT (Kumar et al., 2022): fit the new head on frozen features first, so fine-tuning
    starts from a good classifier instead of a random one that would disturb the backbone."""
    backbone = module.backbone.to(device).to(memory_format=torch.channels_last)
    f_train = _encode(backbone, x_train, data_.to_input, device, precision)
    f_val = _encode(backbone, x_val, data_.to_input, device, precision)
    config = FitConfig(epochs=100, lr=1e-3, patience=10, seed=training.seed, optimizer="adamw", weight_decay=1e-4)
    probe = Trainer(module.head, ArrayBatches(f_train, y_train, 32, shuffle=True, seed=training.seed),
                    ArrayBatches(f_val, y_val, 32), feature_input_fn, config, device, precision)
    state, _ = probe.fit()
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    stage(f"LP-FT: head fitted on frozen features, val_loss {state.best_val_loss:.4f} "
          f"val_acc {best['val_accuracy']:.3f}")
    return best["val_accuracy"]


def _misclassified(paths: list[str], y: np.ndarray, probs: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    return [{"path": p, "true": names[t], "predicted": names[int(pr.argmax())], "probability": float(pr.max()),
             "probabilities": {c: float(v) for c, v in zip(names, pr)}}
            for p, t, pr in zip(paths, y, probs) if int(pr.argmax()) != t]


def _report_cams(module: Any, recipe: Recipe, paths: list[str], y: np.ndarray, probs: np.ndarray, names: list[str],
                 data_root: Path,
                 tta: bool = False) -> list[dict[str, Any]]:
    """Grad-CAM for a few wrong and right test photos; a failure only costs the report section."""

    predictions = [{"path": p, "true": names[t], "predicted": names[int(pr.argmax())]} for p, t, pr in zip(paths, y, probs)]
    try:
        return cam_samples(module, recipe.preprocessing, names, predictions, data_root, per_kind=4, tta=tta)
    except Exception as exc:  # e.g. a model without image-shaped feature maps
        log.warning("Grad-CAM for the report failed: %s", exc)
        return []


def _suspects(the_split: Split, scan: ScanResult, data_: _Data, training: TrainingPlan, stage: Stage) -> dict[str, Any]:
    """Suspect labels among all the split's photos, from K-fold out-of-fold predictions on the
    cached features (evaluation/suspects.py); recipes that train the whole network are not covered."""
    if training.suspects is False:
        return {"checked": False, "why": "turned off (--suspects off)"}
    if data_.mode != "features":
        return {"checked": False, "why": f"needs a recipe on cached features ({listing()}) or diycnn compare --folds"}
    parts = [_arrays(the_split, scan, data_.x, s) for s in ("train", "val", "test")]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    paths = [path for p in parts for path in p[2]]
    log.info("Looking for suspect labels: %d-fold out-of-fold predictions on the cached features of %d photos",
             SUSPECT_FOLDS, len(paths))
    probs = out_of_fold_probs(x, y, len(the_split.class_names), near_group_ids(paths, scan), seed=training.seed)
    section = suspect_labels(probs, y, paths, the_split.class_names,
                             how=f"{SUSPECT_FOLDS}-fold logistic regression on the {data_.mode} of the run's backbone")
    return section


def _cross_validation(scan: ScanResult, data_: _Data, untrained_head: Any, training: TrainingPlan, test_photos: int,
                      device: torch.device, precision: str, stage: Stage) -> dict[str, Any]:
    """K-fold accuracy over all photos when the test split is small (training/crossval.py)."""
    run_it, why = crossval.plan(training.cross_validate, test_photos, data_.mode,
                                distributed.context().active)
    if not run_it:
        return {"checked": False, "why": why}
    section = crossval.cross_validate(
        scan, lambda split, name: _arrays(split, scan, data_.x, name), lambda: copy.deepcopy(untrained_head),
        data_.to_input, FitConfig.from_training(training.record()), training.batch_size, device, precision,
        training.seed, why, stage)
    if section["checked"]:
        stage(f"Cross-validated: {crossval.describe(section)}")
    return section


def _calibrate(p: Prepared, f: Fitted, training: TrainingPlan, device: torch.device, precision: str, tta: bool,
               stage: Stage) -> tuple[dict[str, Any], float]:
    """Fit a temperature on held-out photos and fold it into the model's last linear layer
    (evaluation/calibration.py): (metrics.json's section, the temperature now in the weights)."""
    from .evaluation import calibration as cal  # noqa: PLC0415 (lazy: loads SciPy)

    if not training.calibrate:
        return {"calibrated": False, "why": "turned off (--calibrate off)"}, 1.0
    data_ = p.data
    x_val, y_val, _ = f.arrays["val"]
    if len(y_val) >= cal.MIN_PHOTOS:
        logits = predict_logits(f.fit_module, ArrayBatches(x_val, y_val, training.batch_size), data_.to_input, device,
                                INFERENCE_PRECISION, tta=tta)
        labels, source = y_val, f"the {len(y_val)} validation photos"
    elif data_.mode == "features" and f.untrained_head is not None and not distributed.context().active:
        # (not under torchrun: process 0 alone calibrates, and a head trained there would wait for the others)
        pool = {path for name in ("train", "val") for path, _ in p.split.paths(name)}
        held = dataclasses.replace(p.scan, records=[r for r in p.scan.records if r.rel in pool])
        folds = crossval.fold_count(held)
        if folds < 2:
            return {"calibrated": False, "why": "a class has fewer than 4 training and validation photos"}, 1.0
        logits, labels, _, _ = crossval.out_of_fold(
            kfold_splits(held, folds, seed=training.seed), lambda split, name: _arrays(split, p.scan, data_.x, name),
            lambda: copy.deepcopy(f.untrained_head), data_.to_input, FitConfig.from_training(training.record()),
            training.batch_size, device, precision, training.seed)
        source = f"{folds}-fold out-of-fold predictions on the {len(labels)} training and validation photos"
    else:
        return {"calibrated": False, "why": f"only {len(y_val)} validation photos (calibration needs "
                                            f"{cal.MIN_PHOTOS}, or a recipe on cached features: {listing()}, "
                                            "outside torchrun)"}, 1.0
    temperature = cal.fit_temperature(logits, labels)
    example = data_.to_input(next(iter(ArrayBatches(x_val, y_val, 8).iterate()))[0].to(device), False)
    if not cal.fold_temperature(f.fit_module, temperature, example):
        return {"calibrated": False, "why": "the model's logits do not come from a final linear layer"}, 1.0
    section = {"calibrated": True, "temperature": temperature, "fitted_on": source, "photos": len(labels),
               "fitted_loss_before": cal.log_loss(logits, labels, 1.0),
               "fitted_loss_after": cal.log_loss(logits, labels, temperature)}
    stage(f"Calibrated: temperature {temperature:.3f}, fitted on {source}"
          + (f" (only {len(y_val)} validation photos)" if len(y_val) < cal.MIN_PHOTOS else ""))
    return section, temperature


def _cohort_features(p: Prepared, f: Fitted, training: TrainingPlan, device: torch.device,
                     stage: Stage) -> tuple[np.ndarray, dict[str, Any]]:
    """The features the last linear layer reads of the unknown folder's photos (one view each, as the
    class means are taken), and what was used: photos that did not decode, and a face run's photos
    with no face (those are answered "no face", not scored), are left out and named."""
    folder = Path(str(training.unknown_folder))
    files, problems = find_images([folder])
    prep = p.recipe.preprocessing
    notes: list[Problem] = []
    # decoded as the run's own photos are: whole for a frozen backbone, for the evaluation crop otherwise
    images, ok, failed = decode_all(files, prep if p.data.mode == "features" else prep.for_cache(), notes=notes)
    faceless = {n.path for n in notes} if prep.faces else set()
    keep = [j for j, i in enumerate(ok) if str(files[i]) not in faceless]
    if not keep:
        raise ValueError(f"--unknown-folder '{folder}' holds no photo diycnn can use"
                         + (" (no face found in any)" if faceless else "")
                         + ": give a folder of photos of none of the classes (other people, for a face run).")
    x = images[keep]
    if p.data.mode == "features":
        x = _encode(p.module.backbone, x, image_input_fn(prep), device, INFERENCE_PRECISION)
    _, feats = logits_and_features(f.fit_module, ArrayBatches(x, np.zeros(len(x)), training.batch_size),
                                   p.data.to_input, device, INFERENCE_PRECISION, tta=False)
    skipped = [pr.to_dict() for pr in problems + failed] + [{"path": n, "reason": "no face found"}
                                                           for n in sorted(faceless)]
    stage(f"None of these: {len(keep)} photos of others from {folder}"
          + (f" ({len(skipped)} left out)" if skipped else ""))
    return feats[0], {"folder": str(folder), "photos": len(keep), "skipped": skipped}


def _open_set(p: Prepared, f: Fitted, training: TrainingPlan, device: torch.device, tta: bool, probs: np.ndarray,
              y_test: np.ndarray, stage: Stage) -> dict[str, Any]:
    """'None of these' (evaluation/open_set.py): class means (and a cohort, from --unknown-folder) and a
    threshold saved beside the weights and named in model.json (f.info); metrics.json's section, with
    the test photos' figures."""
    from .evaluation import open_set as osr  # noqa: PLC0415 (lazy: loads SciPy)

    if not training.unknown:
        return {"enabled": False, "why": "turned off (--no-unknown)"}
    data_, classes = p.data, len(p.scan.class_names)

    def features(name: str, views: bool = tta) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = f.arrays[name]
        _, feats = logits_and_features(f.fit_module, ArrayBatches(x, y, training.batch_size), data_.to_input, device,
                                       INFERENCE_PRECISION, tta=views)
        return feats, y

    try:
        # the means from the photos as they are; the scores over the run's views (cached features have one)
        (f_train, y_train), (f_val, y_val), (f_test, _) = features("train", False), features("val"), features("test")
    except ValueError as exc:  # no final linear layer to read features from
        return {"enabled": False, "why": str(exc)}
    cohort, others = None, None
    if training.unknown_folder is not None:
        found, others = _cohort_features(p, f, training, device, stage)
        cohort = osr.cohort_mean(found)
    if data_.mode == "features":  # every training and validation photo, each against means without it
        pooled, labels = np.concatenate([f_train[0], f_val[0]]), np.concatenate([y_train, y_val])
        means = osr.class_means(pooled, labels, classes)
        known = osr.leave_one_out_scores(pooled, labels, classes, cohort)
        fitted_on = f"the {len(labels)} training and validation photos, each left out of its class mean"
    else:
        means = osr.class_means(f_train[0], y_train, classes)
        known = osr.scores(f_val, means, cohort)
        fitted_on = f"the {len(y_val)} validation photos (class means of the {len(y_train)} training photos)"
    test_scores = osr.scores(f_test, means, cohort)
    method = osr.METHOD if cohort is None else osr.COHORT_METHOD
    threshold = osr.threshold_for(known)
    osr.save(p.run_dir, means, threshold, cohort)
    f.info = f.info.replace(inference={**f.info.inference, "unknown": {
        "method": method, "threshold": threshold, "file": osr.UNKNOWN_FILE}})
    kept = test_scores <= threshold
    right = probs.argmax(1) == y_test
    section = {"enabled": True, "method": method, "threshold": threshold,
               "target_known_rejected": osr.TARGET_KNOWN_REJECTED, "fitted_on": fitted_on,
               "fitted_known_rejected": float((known > threshold).mean()),
               "test_known_rejected": float(1 - kept.mean()) if len(kept) else 0.0,
               "test_kept": int(kept.sum()), "test_accuracy_kept": float(right[kept].mean()) if kept.any() else None}
    if others is not None:
        section["unknown_folder"] = others
    stage(f"None of these: a photo scoring above {threshold:.3f} is unknown; "
          f"{section['test_known_rejected']:.1%} of the test photos were (target at most "
          f"{osr.TARGET_KNOWN_REJECTED:.0%})")
    return section


def _test_calibration(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The test photos' expected calibration error and reliability bins, without and with the temperature."""
    from .evaluation import metrics as cal  # noqa: PLC0415 (lazy: loads SciPy)

    return {"bins": cal.ECE_BINS,
            "test_ece_before": cal.expected_calibration_error(before, labels),
            "test_ece_after": cal.expected_calibration_error(after, labels),
            "reliability_before": cal.reliability(before, labels), "reliability_after": cal.reliability(after, labels)}


def _write_signatures(run_dir: Path, scan: ScanResult, the_split: Split) -> None:
    """Near-duplicate signatures of the training and validation photos (a few KB each), so
    `evaluate` can tell which photos it is given are copies of them, without the data folder."""
    if scan.signatures is None:
        return
    rows = {rel: i for i, rel in enumerate(scan.signature_rels)}
    seen = [p for s in ("train", "val") for p, _ in the_split.paths(s) if p in rows]
    signatures: Any = scan.signatures  # neardup.Signatures
    atomic_write_bytes(run_dir / NEAR_SIGNATURES, signatures.subset([rows[p] for p in seen]).to_npz(seen))


def finish(p: Prepared, callbacks: list[Callback] | None = None, stage: Stage | None = None,
           resume: bool = False) -> Run | None:
    """fit -> evaluate -> write; None in torchrun's other processes (process 0 evaluates and writes)."""
    stage = stage or (lambda text: log.info("%s", text))
    fitted = fit(p, callbacks, stage, resume)
    if fitted is None:
        return None
    metrics, probs = evaluate(p, fitted, stage)
    return write(p, fitted, metrics, probs, stage)


def _device_and_precision(p: Prepared) -> tuple[torch.device, str]:
    return distributed.device_for(resolve_device(p.training.device)), p.info.precision


def fit(p: Prepared, callbacks: list[Callback] | None, stage: Stage, resume: bool) -> Fitted | None:
    """Train (LP-FT first where the recipe asks); model.json says 'interrupted' on Ctrl-C."""
    run_dir, info, recipe, module, data_ = p.run_dir, p.info, p.recipe, p.module, p.data
    training = p.training
    device, precision = _device_and_precision(p)
    ctx = distributed.context()
    arrays = {name: _arrays(p.split, p.scan, data_.x, name) for name in ("train", "val", "test")}
    (x_train, y_train, _), (x_val, y_val, _), (_, y_test, _) = arrays["train"], arrays["val"], arrays["test"]
    if training.lp_init and not resume:
        probe_acc = _linear_probe_init(module, data_, x_train, y_train, x_val, y_val, training, device, precision,
                                       stage)
        if training.adapt and probe_acc < (training.adapt_below or 0):
            stage(f"Frozen features reach only {probe_acc:.3f} val accuracy: fine-tuning more of the network "
                  f"({plain(training.adapt)})")
            training = training.adapted_plan()
            info = info.replace(training=training.record())
            _freeze(module, training)
            if ctx.main:
                write_run_info(run_dir, info)  # a resumed run must use the adapted settings
    bs = training.batch_size
    config = FitConfig.from_training(training.record())
    # Each process gets its part of every global batch (all of it outside torchrun: world 1).
    train_batches = ShardedBatches(x_train, y_train, bs, shuffle=config.shuffle, seed=training.seed,
                                   rank=ctx.rank, world=ctx.world)
    val_batches = ArrayBatches(x_val, y_val, bs)
    fit_module = module.head if data_.mode == "features" else module
    untrained_head = copy.deepcopy(fit_module) if data_.mode == "features" else None  # for cross-validation
    trained, to_input = fit_module, data_.to_input
    cut = _cached_trunk(p, training, x_train, x_val, device, precision, stage) if data_.mode == "images" else None
    if cut is not None:  # the frozen stages ran once per view: the epochs train the rest on their activations
        trained, to_input = cut.module, trunk.view_input
        train_batches = ShardedBatches(cut.train, y_train, bs, shuffle=config.shuffle, seed=training.seed,
                                       rank=ctx.rank, world=ctx.world)
        val_batches = ArrayBatches(cut.val, y_val, bs)
    trainer = Trainer(trained, train_batches, val_batches, to_input, config, device, precision,
                      run_dir=run_dir, callbacks=list(callbacks or []), brief=data_.mode == "features")

    class _History(Callback):  # history.csv after every epoch, so an interrupted run shows its progress
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            atomic_write_text(run_dir / "history.csv", history_csv(trainer.state.history))

    if ctx.main:
        trainer.callbacks.append(_History())
    stage(f"Training {recipe.name} on {len(y_train)} photos (val {len(y_val)}, test {len(y_test)}): "
          f"up to {training.epochs} epochs, {device} {precision}")
    state, interrupted = trainer.fit(resume=resume)
    if interrupted:
        if ctx.main:
            write_run_info(run_dir, info.replace(status="interrupted"))
        raise KeyboardInterrupt(f"Training interrupted; resume with: diycnn train --resume {run_dir}")
    if not ctx.main:  # the weights are the same in every process; process 0 evaluates and writes
        return None
    return Fitted(info, fit_module, state, untrained_head, arrays)


@dataclasses.dataclass
class _Cut:
    """A network cut after its frozen stages (training/trunk.py): the top, and the activations."""
    module: Any
    train: np.ndarray  # (N, V, P, C, H, W)
    val: np.ndarray  # (N, 1, P, C, H, W)


def _cached_trunk(p: Prepared, training: TrainingPlan, x_train: Any, x_val: Any, device: torch.device,
                  precision: str, stage: Stage) -> _Cut | None:
    """The frozen stages run once per augmented view (training/trunk.py), where the network can be
    cut there, the photos are in memory and their activations fit; None otherwise (or when
    `trunk_views` is 0 or unset)."""
    stages = trunk.frozen_trunk(p.module)
    if not stages or not training.trunk_views or isinstance(x_train, Rows):
        return None
    size = tuple((training.augment or {}).get("size") or p.recipe.preprocessing.output_size)
    augmented = bool(training.augment)  # without augmentation one view, the un-augmented one, is all there is
    views = trunk.views_that_fit(p.module, stages, size, len(x_train), len(x_val),
                                 min(training.trunk_views, training.epochs) if augmented else 1)
    if not views:
        return None
    stage(f"Frozen stages ({stages} of {len(p.module.backbone.stages())}): "
          + (f"{views} augmented views of " if augmented else "") + f"{len(x_train)} training photos through them once ...")
    h_train = trunk.activations(p.module, stages, x_train, p.data.to_input, views if augmented else 0, size, device,
                                precision, training.seed)
    h_val = trunk.activations(p.module, stages, x_val, p.data.to_input, 0, p.recipe.preprocessing.output_size,
                              device, precision, training.seed)
    return _Cut(trunk.TopOfTrunk(p.module, stages), h_train, h_val)


def evaluate(p: Prepared, f: Fitted, stage: Stage) -> tuple[Metrics, np.ndarray]:
    """metrics.json's contents (test figures with intervals, curves' summary, over-fitting, data
    problems, suspect labels, cross-validation) and the test photos' probabilities."""
    from .evaluation.metrics import classification_metrics  # noqa: PLC0415 (lazy: loads SciPy)

    info, recipe, scan, the_split, data_ = f.info, p.recipe, p.scan, p.split, p.data
    training = TrainingPlan.from_record(info.training)  # as the fit left it (adapted, perhaps)
    device, precision = _device_and_precision(p)
    state = f.state
    x_test, y_test, test_paths = f.arrays["test"]
    log.info("Evaluating on the held-out test split")
    tta = info.tta and data_.mode == "images"
    # scored as `diycnn predict` and the exports predict: fp32, whatever the training precision
    test_logits = predict_logits(f.fit_module, ArrayBatches(x_test, y_test, training.batch_size), data_.to_input,
                                 device, INFERENCE_PRECISION, tta=tta)
    calibration, temperature = _calibrate(p, f, training, device, precision, tta, stage)
    probs = probs_of_logits(test_logits, temperature)  # what the saved (temperature-folded) weights predict
    calibration.update(_test_calibration(probs_of_logits(test_logits), probs, y_test))
    unknown = _open_set(p, f, training, device, tta, probs, y_test, stage)
    names = list(scan.class_names)
    m = classification_metrics(probs, y_test, names)
    counts = the_split.counts()
    trained_images = len(f.arrays["train"][1]) * len(state.history)
    step_seconds = sum(h["seconds"] for h in state.history)
    metrics = Metrics(
        model=recipe.name, backbone=recipe.backbone,
        test_accuracy=m["accuracy"], test_accuracy_ci95=list(m["accuracy_ci95"]), test_loss=m["loss"],
        test_macro_f1=m["macro_f1"], test_correct=m["correct"], per_class=m["per_class"],
        confusion_matrix=m["confusion_matrix"], class_names=names,
        counts={s: sum(c.values()) for s, c in counts.items()}, counts_by_class=counts,
        final_val_loss=state.history[-1]["val_loss"], final_val_accuracy=state.history[-1]["val_accuracy"],
        best_val_loss=min(h["val_loss"] for h in state.history),
        best_epoch=state.best_epoch, epochs_run=len(state.history),
        overfitting=overfitting(state.history, kept_best=state.best_epoch is not None, model=recipe.name),
        stopped_early=state.stopped_early, stopped_by_time=state.stopped_by_time,
        train_seconds=state.train_seconds,
        train_images_per_second=trained_images / step_seconds if step_seconds else 0.0,
        device=str(device), precision=precision, inference_precision=INFERENCE_PRECISION,
        feature_cache=data_.cache, tta=tta,
        skipped=[x.to_dict() for x in scan.skipped], duplicates=[x.to_dict() for x in scan.duplicates],
        notes=scan.notes + the_split.notes, misclassified=_misclassified(test_paths, y_test, probs, names),
        test_probabilities={path: [round(float(v), 6) for v in pr] for path, pr in zip(test_paths, probs)},
        no_face=[x.to_dict() for x in data_.notes],
        near_duplicates=near_section(scan, info.scan.get("near_left_out", [])),
        suspect_labels=_suspects(the_split, scan, data_, training, stage),
        cross_validation=_cross_validation(scan, data_, f.untrained_head, training, len(y_test), device,
                                           precision, stage),
        calibration=calibration, unknown=unknown,
    )
    return metrics, probs


def write(p: Prepared, f: Fitted, metrics: Metrics, probs: np.ndarray, stage: Stage) -> Run:
    """Weights, history, signatures, metrics.json, plots and report.html; then the manifest and
    model.json's status 'complete' (last: a run is complete only when everything is there)."""
    from .report.plots import confusion_png, curves_png, reliability_png  # noqa: PLC0415 (lazy: loads matplotlib)

    run_dir, info, recipe, module = p.run_dir, f.info, p.recipe, p.module
    _, y_test, test_paths = f.arrays["test"]
    module.cpu()
    atomic_save_tensors(run_dir / "model.safetensors", module.state_dict(), {"format": "diycnn", "model": recipe.name})
    atomic_write_text(run_dir / "history.csv", history_csv(f.state.history))
    _write_signatures(run_dir, p.scan, p.split)
    write_metrics(run_dir, metrics)
    log.info("Writing the report in %s", run_dir)
    names = metrics.class_names
    curves = curves_png(f.state.history, title=f"{recipe.name} on {Path(info.data).name}")
    confusion = confusion_png(metrics.confusion_matrix, names)
    atomic_write_bytes(run_dir / "curves.png", curves)
    atomic_write_bytes(run_dir / "confusion.png", confusion)
    cal = metrics.calibration or {}
    reliability = (reliability_png(cal["reliability_before"], cal["reliability_after"], cal["bins"],
                                   cal.get("temperature")) if cal.get("reliability_before") else None)
    if reliability:
        atomic_write_bytes(run_dir / "reliability.png", reliability)
    cams = _report_cams(module, recipe, test_paths, y_test, probs, names, Path(info.data), tta=metrics.tta)
    atomic_write_text(run_dir / "report.html", render_report(info, metrics, curves, confusion, Path(info.data),
                                                             cams=cams, reliability=reliability))
    write_manifest(run_dir)
    write_run_info(run_dir, info.replace(status="complete"))
    for leftover in (CHECKPOINT, BEST):
        (run_dir / leftover).unlink(missing_ok=True)
    run = load(run_dir, device=TrainingPlan.from_record(info.training).device)
    assert isinstance(run, Run)  # a run directory, not an export folder
    return run
