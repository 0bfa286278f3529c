"""`diycnn compare`: train several models on one split (or K folds) and compare them honestly.

    COMPARE_DIR/
      split.json              the one split every model used (single-split mode)
      runs/<model>/           each model's own run directory (folds/<k>/<model>/ with --folds)
      comparison.json         per-model figures, pairwise McNemar tests, fold statistics
      comparison.html         self-contained report: table, curves, confusion matrices,
                              misclassified galleries, Grad-CAM samples
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import pipeline
from .auto import train_auto
from .data.loader import decode_all
from .data.split import Split, kfold_splits, make_split, read_split
from .explanations import cam_samples
from .io import atomic_write_json, atomic_write_text, shown, to_jsonable
from .loading import load
from .models.registry import check_model_name
from .records import SPLIT_JSON, read_metrics, read_run_info
from .report.compare_html import render_comparison
from .run import Run, new_run_dir, read_history
from .settings import DEFAULT_MODEL, merge_settings

log = logging.getLogger(__name__)

ALPHA = 0.05
EXACT_BELOW = 25  # McNemar: exact binomial test when fewer discordant pairs than this


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test on paired correctness (same test photos): exact binomial when the
    discordant pairs are few, chi-square with continuity correction otherwise."""
    from scipy import stats  # noqa: PLC0415 (lazy: loads SciPy)

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        p, method = 1.0, "exact binomial (no discordant pairs)"
    elif n < EXACT_BELOW:
        p, method = float(stats.binomtest(only_a, n, 0.5).pvalue), "exact binomial"
    else:
        chi2 = (abs(only_a - only_b) - 1) ** 2 / n
        p, method = float(stats.chi2.sf(chi2, 1)), "chi-square with continuity correction"
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": min(1.0, p), "method": method,
            "significant": p < ALPHA}


def paired_folds_test(acc_a: list[float], acc_b: list[float]) -> dict[str, Any]:
    """Paired t-test of per-fold test accuracies (the same folds for both models)."""
    from scipy import stats  # noqa: PLC0415 (lazy: loads SciPy)

    diff = np.asarray(acc_a) - np.asarray(acc_b)
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        p = 1.0 if np.allclose(diff, 0) else 0.0
        return {"mean_difference": float(diff.mean()), "p_value": p, "method": "paired t-test (constant difference)",
                "significant": p < ALPHA}
    p = float(stats.ttest_rel(acc_a, acc_b).pvalue)
    return {"mean_difference": float(diff.mean()), "p_value": p, "method": "paired t-test over folds",
            "significant": p < ALPHA}


def _test_items(split: dict[str, Any]) -> list[tuple[str, str]]:
    test = split["splits"]["test"]
    return [(p, c) for c in split["class_names"] for p in test.get(c, [])]


def inference_ms(run, images: np.ndarray) -> float:
    """Milliseconds per photo predicting a batch of decoded test photos (after a warm-up)."""
    run.predict_arrays(images[:4])
    t0 = time.perf_counter()
    run.predict_arrays(images)
    return 1000 * (time.perf_counter() - t0) / len(images)


def summarise_run(run, label: str, split: dict[str, Any], timing_photos: np.ndarray | None) -> dict[str, Any]:
    """One model's row for a loaded run trained on `split`: test figures, parameters, size,
    training and inference time, and the per-photo correctness of its test predictions (for McNemar)."""
    metrics = run.metrics
    wrong = {e["path"]: e for e in metrics.misclassified}
    return {
        "model": label, "recipe": run.recipe.name, "backbone": run.recipe.backbone,
        "run_dir": str(run.dir), "test_accuracy": metrics.test_accuracy,
        "test_accuracy_ci95": metrics.test_accuracy_ci95, "test_loss": metrics.test_loss,
        "macro_f1": metrics.test_macro_f1, "test_photos": metrics.counts["test"],
        "parameters": int(sum(p.numel() for p in run.module.parameters())),
        "size_bytes": (run.dir / "model.safetensors").stat().st_size,
        "train_seconds": metrics.train_seconds, "epochs_run": metrics.epochs_run,
        "confusion_matrix": metrics.confusion_matrix, "class_names": metrics.class_names,
        "inference_ms_per_photo": inference_ms(run, timing_photos) if timing_photos is not None and len(timing_photos)
        else None,
        "inference_precision": run.precision,
        "predictions": [{"path": p, "true": c, "predicted": wrong[p]["predicted"] if p in wrong else c,
                         "probability": wrong[p]["probability"] if p in wrong else None}
                        for p, c in _test_items(split)],
    }


def _same_split(run_dirs: list[Path]) -> dict[str, Any]:
    """The split shared by every run, or a ValueError naming the run that differs."""
    first = read_split(run_dirs[0] / SPLIT_JSON).to_dict()
    for d in run_dirs[1:]:
        other = read_split(d / SPLIT_JSON).to_dict()
        if other["splits"] != first["splits"] or other.get("class_names") != first.get("class_names"):
            raise ValueError(
                f"Run '{d}' was trained on a different split from '{run_dirs[0]}': their test photos differ, so "
                f"their scores cannot be compared. Retrain it with --split {run_dirs[0] / SPLIT_JSON}, or let "
                "'diycnn compare DATA --models ...' train them all on one split."
            )
    return first


def _timing_photos(run, split: dict[str, Any], data: Path, cache: dict[str, np.ndarray], n: int = 32
                   ) -> np.ndarray | None:
    """Up to n decoded test photos in the run's preprocessing (decoded once per distinct preprocessing)."""

    if not data.is_dir():
        return None
    key = json.dumps(run.preprocessing.to_dict(), sort_keys=True)
    if key not in cache:
        cache[key], _, _ = decode_all([data / p for p, _ in _test_items(split)[:n]], run.preprocessing)
    return cache[key]


def _pairwise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pairs = []
    for a, b in itertools.combinations(rows, 2):
        ca = np.array([p["predicted"] == p["true"] for p in a["predictions"]])
        cb = np.array([p["predicted"] == p["true"] for p in b["predictions"]])
        pairs.append({"a": a["model"], "b": b["model"], **mcnemar(ca, cb)})
    return pairs


def compare(data: str | Path | None = None, models: list[str] | str | None = None, *,
            runs: list[str | Path] | None = None, split: str | Path | None = None, folds: int | None = None,
            out: str | Path | None = None, runs_root: str | Path = "runs", callbacks: list[Any] | None = None,
            on_stage: Callable[[str], None] | None = None, explain_samples: int = 3, **settings: Any) -> Path:
    """Train `models` on one split of `data` (or compare already-trained `runs`), and write
    comparison.json and comparison.html.

    Args:
        models: recipe names or spec files, e.g. ["seed-cnn", "tm", "finetune"] or "seed-cnn,tm".
        runs: already-trained run directories instead of `models` (they must share one split).
        split: reuse a split.json for every model.
        folds: stratified K-fold instead of one split: every model is trained K times and the
            report gives mean ± std and a paired test across folds.
        settings: training settings for every model (epochs, seed, device, val_as_test...).

    Returns:
        The comparison directory.

    Raises:
        ValueError: runs trained on different splits, no models, or bad settings.
    """
    stage = on_stage or (lambda text: log.info("%s", text))
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if runs:
        run_dirs = [Path(r) for r in runs]
        shared = _same_split(run_dirs)
        data = Path(read_run_info(run_dirs[0]).data)
        out_dir = new_run_dir(out, f"{data.name}-compare", runs_root)
        labels = _labels([read_run_info(d).model["name"] for d in run_dirs])
        return _finish(out_dir, data, list(zip(labels, run_dirs)), shared, stage, explain_samples, None)
    data = Path(_check_models(models, data))
    base = merge_settings(None, {**settings, "model": models[0]}, where="compare settings")
    scan = pipeline.scan_for_training(data, base, stage)  # once, for every model (and fold)
    out_dir = new_run_dir(out, f"{data.name}-compare", runs_root)
    labels = _labels(models)

    def train(model: str, run_dir: Path, split: Split) -> Run:
        s = dataclasses.replace(base, model=model)
        if model == DEFAULT_MODEL:
            return train_auto(data, s, out=run_dir, split=split, callbacks=callbacks, stage=stage, scan=scan)
        run = pipeline.train_one(data, s, out=run_dir, split=split, scan=scan, callbacks=callbacks, stage=stage)
        assert run is not None  # compare runs outside torchrun
        return run

    if folds:
        fold_results = []
        for f, fold_split in enumerate(kfold_splits(scan, folds, base.val_split, base.seed)):
            fold_dir = out_dir / "folds" / str(f + 1)
            fold_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(fold_dir / SPLIT_JSON, fold_split.to_dict())
            for label, model in zip(labels, models):
                stage(f"compare: fold {f + 1}/{folds}, training {model} ...")
                train(model, fold_dir / label, fold_split)
            fold_results.append([(label, fold_dir / label) for label in labels])
        return _finish_folds(out_dir, data, labels, fold_results, stage, explain_samples)
    the_split = (read_split(split) if split is not None else
                 make_split(scan, base.val_split, base.test_split, base.seed, val_as_test=base.val_as_test))
    atomic_write_json(out_dir / SPLIT_JSON, the_split.to_dict())
    trained = []
    for label, model in zip(labels, models):
        stage(f"compare: training {model} ({len(trained) + 1}/{len(models)}) ...")
        trained.append((label, train(model, out_dir / "runs" / label, the_split).dir))
    return _finish(out_dir, data, trained, the_split.to_dict(), stage, explain_samples, None)


def _check_models(models: list[str] | None, data: str | Path | None) -> str | Path:
    """The data folder, once the model list is usable: two or more, none twice, each a recipe or a
    spec file (a typo is reported before the photos are scanned).

    Raises:
        ValueError, FileNotFoundError: what is wrong, and how to say it instead.
    """
    if not models:
        raise ValueError("compare needs --models (e.g. seed-cnn,tm,finetune) or --runs RUN RUN ...")
    if data is None:
        raise ValueError("compare needs a DATA folder (or --runs).")
    if len(models) < 2:
        raise ValueError(f"compare needs at least two models, received {shown(models)}.")
    if len(set(models)) != len(models):
        raise ValueError(f"compare received a model twice: {shown(models)}.")
    for model in models:
        check_model_name(model)
    return data


def _labels(models: list[str]) -> list[str]:
    """Short unique names for models (spec files by their stem)."""
    out: list[str] = []
    for m in models:
        base = Path(m).stem if m.lower().endswith((".yaml", ".yml", ".json")) else m
        name, i = base, 2
        while name in out:
            name, i = f"{base}-{i}", i + 1
        out.append(name)
    return out


def _finish(out_dir: Path, data: Path, labelled: list[tuple[str, Path]], split: dict[str, Any], stage,
            explain_samples: int, folds: dict[str, Any] | None) -> Path:
    from .report.plots import confusions_png, overlay_curves_png  # noqa: PLC0415 (lazy: loads matplotlib)

    stage("compare: measuring inference time and writing the report ...")
    rows, cams, photos = [], {}, {}
    for label, run_dir in labelled:
        run = load(run_dir)
        rows.append(summarise_run(run, label, split, _timing_photos(run, split, data, photos)))
        cams[label] = []
        if data.is_dir() and explain_samples:
            try:
                cams[label] = cam_samples(run.module, run.preprocessing, run.class_names, rows[-1]["predictions"],
                                          data, explain_samples, tta=run.tta)
            except Exception as exc:  # an explanation must never cost the comparison
                log.warning("Grad-CAM for %s failed: %s", label, exc)
    pairs = _pairwise(rows)
    histories = {row["model"]: read_history(Path(row["run_dir"])) for row in rows}
    result = {"format": "diycnn-comparison", "data": str(data), "class_names": split["class_names"],
              "test_photos": len(_test_items(split)), "models": rows, "mcnemar": pairs, "alpha": ALPHA}
    if folds:
        result["folds"] = folds
    atomic_write_json(out_dir / "comparison.json", to_jsonable(result))
    curves = overlay_curves_png(histories)
    confusions = confusions_png({r["model"]: r["confusion_matrix"] for r in rows}, split["class_names"])
    atomic_write_text(out_dir / "comparison.html", render_comparison(result, curves, confusions, cams, data))
    return out_dir


def _out_of_fold(labels: list[str], fold_results: list[list[tuple[str, Path]]]) -> dict[str, Any]:
    """Every photo's prediction from the fold that held it out, pooled: in K-fold each photo is
    tested exactly once, so this covers the whole dataset — accuracy with its interval, summed
    confusion matrices, and McNemar's test paired photo by photo over all of them."""
    from .evaluation.metrics import wilson_interval  # noqa: PLC0415 (lazy: loads SciPy)

    correct: dict[str, dict[str, bool]] = {label: {} for label in labels}
    probs: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
    given: dict[str, str] = {}
    confusion: dict[str, np.ndarray] = {}
    class_names: list[str] = []
    for pairs in fold_results:
        for label, d in pairs:
            metrics = read_metrics(d)
            split = read_split(d / SPLIT_JSON).to_dict()
            class_names = split["class_names"]
            wrong = {e["path"] for e in metrics.misclassified}
            for path, cls in _test_items(split):
                correct[label][path] = path not in wrong
                given[path] = cls
            probs[label].update(metrics.test_probabilities)
            m = np.asarray(metrics.confusion_matrix, dtype=np.int64)
            confusion[label] = confusion[label] + m if label in confusion else m
    photos = sorted(correct[labels[0]])
    models = {}
    for label in labels:
        hits = sum(correct[label][p] for p in photos)
        lo, hi = wilson_interval(hits, len(photos))
        models[label] = {"accuracy": hits / len(photos), "ci95": [lo, hi], "correct": hits,
                         "confusion_matrix": confusion[label].tolist()}
    tests = [{"a": a, "b": b, **mcnemar(np.array([correct[a][p] for p in photos]),
                                        np.array([correct[b][p] for p in photos]))}
             for a, b in itertools.combinations(labels, 2)]
    return {"test_photos": len(photos), "class_names": class_names, "models": models, "mcnemar": tests,
            "suspect_labels": _fold_suspects(labels, photos, given, probs, class_names, len(fold_results))}


def _fold_suspects(labels: list[str], photos: list[str], given: dict[str, str], probs: dict[str, dict[str, list]],
                   class_names: list[str], k: int) -> dict[str, Any]:
    """Suspect labels per model from its pooled out-of-fold probabilities (confident learning)."""
    from .evaluation.suspects import suspect_labels  # noqa: PLC0415 (lazy: loads torch)

    out = {}
    y = np.array([class_names.index(given[p]) for p in photos])
    for label in labels:
        if not all(p in probs[label] for p in photos):  # runs from an older diycnn kept no probabilities
            out[label] = {"checked": False, "why": "the fold runs did not record their test probabilities"}
            continue
        matrix = np.array([probs[label][p] for p in photos], dtype=np.float64)
        out[label] = {**suspect_labels(matrix, y, photos, class_names,
                                                       how=f"{k}-fold out-of-fold predictions of {label}")}
    return out


def _finish_folds(out_dir: Path, data: Path, labels: list[str], fold_results: list[list[tuple[str, Path]]],
                  stage, explain_samples: int) -> Path:
    per_model: dict[str, list[float]] = {label: [] for label in labels}
    for pairs in fold_results:
        for label, d in pairs:
            per_model[label].append(read_metrics(d).test_accuracy)
    summary = {label: {"accuracies": accs, "mean": float(np.mean(accs)),
                       "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0} for label, accs in per_model.items()}
    tests = [{"a": a, "b": b, **paired_folds_test(per_model[a], per_model[b])}
             for a, b in itertools.combinations(labels, 2)]
    folds = {"k": len(fold_results), "test_accuracy": summary, "paired_tests": tests,
             "out_of_fold": _out_of_fold(labels, fold_results),
             "fold_dirs": [str(out_dir / "folds" / str(i + 1)) for i in range(len(fold_results))]}
    # The fold table and the out-of-fold figures cover all folds; curves, per-fold confusions,
    # McNemar on one test split, galleries and Grad-CAM are drawn for fold 1.
    first = fold_results[0]
    split = read_split(first[0][1] / SPLIT_JSON).to_dict()
    return _finish(out_dir, data, first, split, stage, explain_samples, folds)


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table plus the McNemar verdicts (for the terminal and notes)."""
    lines = ["| model | test accuracy (95% CI) | test loss | macro-F1 | parameters | size | train time | "
             "inference |", "|---|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        ci = r["test_accuracy_ci95"]
        ms = f"{r['inference_ms_per_photo']:.1f} ms/photo" if r["inference_ms_per_photo"] is not None else "—"
        interval = f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
        lines.append(f"| {r['model']} | {r['test_accuracy']:.3f}{interval} | {r['test_loss']:.4f} | "
                     f"{r['macro_f1']:.3f} | {r['parameters']:,} | {r['size_bytes'] / 1e6:.1f} MB | "
                     f"{r['train_seconds']:.0f} s | {ms} |")
    lines.append("")
    for p in result["mcnemar"]:
        verdict = "significant" if p["significant"] else "not significant"
        lines.append(f"{p['a']} vs {p['b']}: {p['only_a_correct']} photos only {p['a']} got right, "
                     f"{p['only_b_correct']} only {p['b']}; McNemar p = {p['p_value']:.3g} ({p['method']}): "
                     f"{verdict} at {result['alpha']}")
    if result.get("folds"):
        f = result["folds"]
        lines.append(f"\n{f['k']}-fold test accuracy:")
        for m, s in f["test_accuracy"].items():
            lines.append(f"  {m}: {s['mean']:.3f} ± {s['std']:.3f}")
        for t in f["paired_tests"]:
            lines.append(f"  {t['a']} vs {t['b']}: mean difference {t['mean_difference']:+.3f}, p = {t['p_value']:.3g} "
                         f"({t['method']})")
        o = f.get("out_of_fold")
        if o:
            lines.append(f"Out of fold (each of the {o['test_photos']} photos tested once, by the fold that held it out):")
            for m, r in o["models"].items():
                lo, hi = r["ci95"]
                lines.append(f"  {m}: {r['accuracy']:.3f} ({lo:.3f}–{hi:.3f}), {r['correct']}/{o['test_photos']}")
            for p in o["mcnemar"]:
                verdict = "significant" if p["significant"] else "not significant"
                lines.append(f"  {p['a']} vs {p['b']}: {p['only_a_correct']} photos only {p['a']} got right, "
                             f"{p['only_b_correct']} only {p['b']}; McNemar p = {p['p_value']:.3g}: {verdict}")
    return "\n".join(lines)


__all__ = ["compare", "mcnemar", "paired_folds_test", "format_table"]
