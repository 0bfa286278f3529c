"""Does diycnn's `seed-cnn` learn as well as the blog's model in Keras? Many seeds, side by side.

Usage (from the project root):
    .venv/bin/python bench/keras_parity.py [--seeds 8] [--precision bf16,fp32] [--data faces,hymenoptera]
        [--per-class N] [--keras-decodes] [--results FILE.json]

Data: "faces" is the two largest classes (people) of $DIYCNN_DATASETS/kpop_idols/train, linked
into a temporary folder; "hymenoptera" is that dataset (its val/ folder is the test split). diycnn scans and splits each once (seed 0, near-duplicates grouped: 30% of the faces held
out for testing; hymenoptera split as in docs/results.md, 208 photos to train on), and decodes the photos once to 100x100 uint8 arrays that both engines train on,
so a gap cannot come from decoding. --keras-decodes adds a third side: Keras decoding the same
photo files itself (TensorFlow's decoder and resize), to tell decoding apart from training.
--per-class N trains on at most N photos per class (the test split is kept whole), for CPUs
where 8 seeds of the full set take too long.

Each run is a fresh process (bench/parity_worker.py): the blog's model, Adam at 1e-3, batch 32,
30 epochs, no early stopping, at one precision (bf16 only where the CPU has native bf16; Keras:
mixed_bfloat16, output layer float32). Keras runs from the virtualenv bench/keras_speed.py sets
up. Results go to --results as they finish (default: a file in the temporary folder), and a run
already there is not repeated, so an interrupted benchmark resumes. Prints per dataset and
precision: the mean and spread of the final test accuracy and loss, the mean learning curves,
and Mann-Whitney U and Welch tests on the final accuracies, diycnn against Keras and bf16
against fp32.

--gradients (seconds, not hours) looks for a cause instead: one step's gradients on the same
weights and photos (no dropout), diycnn's fp32 and bf16 autocast against Keras' float32 and
mixed_bfloat16, each as its relative error against the same step in float64, per layer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from diycnn.io import atomic_write_json  # noqa: E402
from keras_speed import cpu_description, keras_python, native_bf16  # noqa: E402 (beside this file)
from shared_data import SHARED  # noqa: E402

FACE_TEST_SPLIT = 0.3


def face_pair(work: Path) -> Path:
    """A folder with the two largest classes of kpop_idols/train, as links to the photos."""
    source = SHARED / "kpop_idols" / "train"
    classes = sorted((d for d in source.iterdir() if d.is_dir()), key=lambda d: (-len(list(d.iterdir())), d.name))
    folder = work / "faces"
    for d in classes[:2]:
        (folder / d.name).mkdir(parents=True)
        for photo in sorted(d.iterdir()):
            (folder / d.name / photo.name).symlink_to(photo)
    return folder


def prepare(name: str, work: Path, per_class: int | None) -> tuple[Path, Path, dict]:
    """Split and decode one dataset: (arrays .npz, photo list .json, description)."""
    from diycnn.data.loader import decode_all
    from diycnn.data.scan import scan_folder
    from diycnn.data.split import make_split
    from diycnn.models.recipes import get_recipe

    folder = face_pair(work) if name == "faces" else SHARED / name if name == "hymenoptera" else Path(name)
    scan = scan_folder(folder)
    if any(r.given_split == "val" for r in scan.records):
        # hymenoptera: its val/ folder is the test split, as published results and docs/results.md use it
        split = make_split(scan, seed=0, val_as_test=True)
    else:  # the faces' classes have ~40 photos: hold out 30% for testing
        split = make_split(scan, val_split=0.05, test_split=FACE_TEST_SPLIT, seed=0)
    train = [(scan.root / p, c) for p, c in split.paths("train")]  # the val split is left out: nothing selects
    test = [(scan.root / p, c) for p, c in split.paths("test")]
    classes = split.class_names
    if per_class:
        train = [t for c in classes for t in [t for t in train if t[1] == c][:per_class]]
    prep = get_recipe("seed-cnn", len(classes)).preprocessing
    arrays, lists = {}, {}
    for part, items in (("train", train), ("test", test)):
        x, ok, _ = decode_all([p for p, _ in items], prep)
        arrays[f"x_{part}"] = x
        arrays[f"y_{part}"] = np.array([classes.index(items[i][1]) for i in ok], dtype=np.int64)
        lists[part] = [str(items[i][0]) for i in ok]
    npz, photos = work / f"{name.replace('/', '_')}.npz", work / f"{name.replace('/', '_')}.json"
    np.savez(npz, **arrays)
    photos.write_text(json.dumps(lists))
    counts = {part: {c: int((arrays[f"y_{part}"] == i).sum()) for i, c in enumerate(classes)} for part in lists}
    return npz, photos, {"classes": classes, "counts": counts}


def run_one(python: str, engine: str, npz: Path, photos: Path | None, precision: str, seed: int,
            epochs: int, grads: Path | None = None) -> dict:
    cmd = [python, str(HERE / "parity_worker.py"), engine, str(npz), "--precision", precision,
           "--seed", str(seed), "--epochs", str(epochs)]
    if photos is not None:
        cmd += ["--keras-decodes", str(photos)]
    if grads is not None:
        cmd += ["--grads", str(grads)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{engine} {precision} seed {seed} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def tests(a: list[float], b: list[float]) -> str:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return "too few runs"
    if len(set(a) | set(b)) == 1:
        return "all equal"
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    w = stats.ttest_ind(a, b, equal_var=False)
    return f"Mann-Whitney U p = {u.pvalue:.3f}, Welch p = {w.pvalue:.3f}"


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(name: str, info: dict, runs: dict[str, list[dict]], epochs: int) -> None:
    print(f"\n## {name}: classes {', '.join(info['classes'])}; train {sum(info['counts']['train'].values())}, "
          f"test {sum(info['counts']['test'].values())} photos")
    print("\n| side | precision | runs | final test accuracy, mean ± sd (min–max) | final test loss, mean ± sd | "
          "train loss at epoch 10 / 20 / 30 (mean) |\n|---|---|---|---|---|---|")
    finals: dict[str, list[float]] = {}
    marks = [e for e in (10, 20, 30) if e <= epochs] or [epochs]
    for key, rs in runs.items():
        side, precision = key.rsplit(" ", 1)
        acc = [r["curves"][-1]["test_accuracy"] for r in rs]
        loss = [r["curves"][-1]["test_loss"] for r in rs]
        finals[key] = acc
        curve = " / ".join(f"{statistics.mean(r['curves'][e - 1]['loss'] for r in rs):.3f}" for e in marks)
        print(f"| {side} | {precision} | {len(rs)} | {statistics.mean(acc):.3f} ± {sd(acc):.3f} "
              f"({min(acc):.3f}–{max(acc):.3f}) | {statistics.mean(loss):.3f} ± {sd(loss):.3f} | {curve} |")
    print("\nMean learning curves (every 5 epochs): train loss | test accuracy")
    for key, rs in runs.items():
        points = [e for e in range(5, epochs + 1, 5)]
        tl = " ".join(f"{statistics.mean(r['curves'][e - 1]['loss'] for r in rs):.2f}" for e in points)
        ta = " ".join(f"{statistics.mean(r['curves'][e - 1]['test_accuracy'] for r in rs):.2f}" for e in points)
        print(f"  {key:<22} {tl} | {ta}")
    print("\nTwo-sample tests on the final test accuracies:")
    for a, b in [(f"diycnn {q}", f"keras {q}") for q in ("bf16", "fp32")] + \
                [(f"keras-decodes {q}", f"keras {q}") for q in ("bf16", "fp32")] + \
                [(f"{e} bf16", f"{e} fp32") for e in ("diycnn", "keras")]:
        if a in finals and b in finals:
            diff = statistics.mean(finals[a]) - statistics.mean(finals[b])
            print(f"  {a} vs {b}: difference {diff:+.3f}; {tests(finals[a], finals[b])}")


def gradients(python: str | None, npz: Path, work: Path) -> None:
    """Print each engine's per-layer gradient error against float64 at each precision."""
    grads = work / "grads.npz"
    ours = run_one(sys.executable, "gradients-diycnn", npz, None, "fp32", 0, 0, grads)
    sides = {"diycnn": ours["errors"]}
    if python:
        sides["Keras"] = run_one(python, "gradients-keras", npz, None, "fp32", 0, 0, grads)["errors"]
    names = list(sides["diycnn"]["fp32"])
    cols = [(side, q) for side in sides for q in ("fp32", "bf16")]
    print("\nOne step's gradient, relative error against float64 (same weights and 32 photos, no dropout):\n")
    print("| parameter | " + " | ".join(f"{side} {q}" for side, q in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n in names:
        print(f"| {n.removeprefix('body.')} | " + " | ".join(f"{sides[side][q][n]:.4f}" for side, q in cols) + " |")
    print("\nWhere diycnn's bf16 error comes from (only some layers in bf16, the rest fp32):\n")
    parts = [q for q in ours["errors"] if q.startswith("bf16 ")]
    print("| parameter | " + " | ".join(parts) + " |\n|---|" + "---|" * len(parts))
    for n in names:
        print(f"| {n.removeprefix('body.')} | " + " | ".join(f"{ours['errors'][q][n]:.4f}" for q in parts) + " |")
    print(f"\nThe batch's gradient of conv2d_1.weight has {ours['mean_over_per_photo_norm']:.0%} of the per-photo "
          "gradients' mean norm (float64): rounding in each photo's gradient is magnified in their mean.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--precision", default=None, help="comma-separated; default bf16,fp32 where the CPU has bf16")
    p.add_argument("--data", default="faces,hymenoptera", help="faces, hymenoptera or a folder of class folders")
    p.add_argument("--per-class", type=int, default=None, help="at most this many training photos per class")
    p.add_argument("--keras-decodes", action="store_true", help="also run Keras decoding the photos itself")
    p.add_argument("--engines", default="diycnn,keras")
    p.add_argument("--keras-python", default=None)
    p.add_argument("--results", default=None, help="JSON file of finished runs (resumed from when it exists)")
    p.add_argument("--gradients", action="store_true", help="compare one step's gradients instead of training")
    args = p.parse_args()
    precisions = (args.precision or ("bf16,fp32" if native_bf16() else "fp32")).split(",")
    engines = args.engines.split(",")
    kpy = keras_python(args) if "keras" in engines else None
    if "keras" in engines and kpy is None:
        engines.remove("keras")
    sides = [(e, e) for e in engines] + ([("keras-decodes", "keras")] if args.keras_decodes and kpy else [])
    work = Path(tempfile.mkdtemp(prefix="diycnn-parity-"))
    results_path = Path(args.results) if args.results else work / "results.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {}
    print(f"CPU: {cpu_description()}; the blog's model, {args.epochs} epochs, seeds 0-{args.seeds - 1}, "
          f"precisions {', '.join(precisions)}; results in {results_path}", flush=True)
    for name in args.data.split(","):
        npz, photos, info = prepare(name, work, args.per_class)
        if args.gradients:
            print(f"\n## {name}")
            gradients(kpy, npz, work)
            continue
        runs: dict[str, list[dict]] = {}
        for seed in range(args.seeds):
            for precision in precisions:
                for side, engine in sides:
                    key = f"{name}|{side}|{precision}|{seed}|{args.per_class}|{args.epochs}"
                    if key not in done:
                        python = sys.executable if engine == "diycnn" else kpy
                        done[key] = run_one(python, engine, npz, photos if side == "keras-decodes" else None,
                                            precision, seed, args.epochs)
                        atomic_write_json(results_path, done)
                        last = done[key]["curves"][-1]
                        print(f"  {name} {side} {precision} seed {seed}: test accuracy {last['test_accuracy']:.3f}, "
                              f"test loss {last['test_loss']:.3f}, train loss {last['loss']:.3f}", flush=True)
                    runs.setdefault(f"{side} {precision}", []).append(done[key])
        summarise(name, info, runs, args.epochs)


if __name__ == "__main__":
    main()
