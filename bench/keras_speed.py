"""diycnn against Keras 3 + TensorFlow on the blog's exact model, side by side, alternating.

Usage (from the project root):
    .venv/bin/python bench/keras_speed.py [--reps 5] [--batch 16] [--precision bf16,fp32] [--device cpu]

Data: the first training photos of $DIYCNN_DATASETS/hymenoptera decoded once to 100x100 uint8
(identical arrays for both engines). Each repetition runs, in fresh processes and alternating,
diycnn (its own training step and prediction loop on `seed-cnn`, at each precision) and
Keras (the same layers, Adam, sparse categorical cross-entropy; mixed_bfloat16 or float32),
each with warm-up steps excluded. Keras runs from its own virtualenv (default
~/.cache/diycnn/bench-keras, created with tensorflow and keras on first use; --keras-python
to use another); when it cannot be set up, diycnn is measured alone with a message.
Prints the CPU (model and the instruction sets that matter), img/s min/median/max per engine,
the median ratio diycnn/Keras at equal precision, peak RSS, and how close diycnn gets to this
CPU's ceiling *at each precision it ran*: the speed of a 2048^3 matrix multiply at that precision,
measured here before and after the runs (--peak-gflops fp32=N,bf16=M to give figures instead).
bf16 is run by default only where the CPU has native bf16 instructions (AVX512-BF16 or AMX);
asked for elsewhere (--precision bf16) it runs, emulated, without a ceiling: an emulated
matrix multiply is not a limit of the machine.
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
from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)

KERAS_VENV = Path.home() / ".cache" / "diycnn" / "bench-keras"
KERAS_PINS = ["tensorflow==2.21.0", "keras==3.15.1"]
# Forward FLOPs of the blog's model per 100x100 photo (multiply-adds x 2): the convolutions
# dominate (conv1 0.27 G, conv2 5.2 G, dense 0.07 G); a training step costs ~3x the forward.
FORWARD_GFLOP = 5.55


def keras_python(args) -> str | None:
    if args.keras_python:
        return args.keras_python
    py = KERAS_VENV / "bin" / "python"
    if not py.exists():
        print(f"Setting up Keras + TensorFlow in {KERAS_VENV} (once; about 600 MB) ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", *KERAS_PINS], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"Skipping Keras: could not install {' '.join(KERAS_PINS)} ({exc}). "
                  "Pass --keras-python PATH to a Python that has them.")
            return None
    check = subprocess.run([str(py), "-c", "import tensorflow, keras"], capture_output=True, text=True)
    if check.returncode:
        print(f"Skipping Keras: {py} cannot import tensorflow and keras:\n{check.stderr[-500:]}")
        return None
    return str(py)


def make_data(n: int) -> Path:
    from diycnn.data.images import Preprocessing
    from diycnn.data.loader import decode_all

    paths = sorted((SHARED / "hymenoptera" / "train").glob("*/*"))[:: max(1, 244 // n)][:n]
    images, ok, _ = decode_all(paths, Preprocessing(size=(100, 100), input_scale=1 / 255))
    labels = np.array([0 if paths[i].parent.name == "ants" else 1 for i in ok], dtype=np.int64)
    path = Path(tempfile.mkdtemp(prefix="diycnn-speed-")) / "data.npz"
    np.savez(path, x=images, y=labels)
    return path


def measure(python: str, engine: str, data: Path, precision: str, args) -> dict:
    cmd = [python, str(HERE / "speed_worker.py"), engine, str(data), "--precision", precision,
           "--batch", str(args.batch), "--train-steps", str(args.train_steps),
           "--infer-batches", str(args.infer_batches), "--warmup", str(args.warmup), "--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{engine} {precision} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_description() -> str:
    """'AMD EPYC ... (2 CPUs; avx2 fma, no avx512f, no bf16)' from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{model} ({os.cpu_count()} CPUs; " + ", ".join(f if f in flags else f"no {f}" for f in wanted) + ")"


def native_bf16() -> bool:
    from diycnn.training.device import cpu_has_bf16

    return cpu_has_bf16()


def measure_peak_gflops(precision: str, n: int = 2048) -> float:
    """GFLOP/s of an n^3 matrix multiply at `precision` in this process (median of 5, after a
    warm-up); only called for precisions the CPU runs natively."""
    import time

    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a = torch.randn(n, n).to(dtype)
    a @ a
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def parse_peaks(text: str | None) -> dict[str, float]:
    out = {}
    for part in (text or "").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            out[key.strip()] = float(value)
    return out


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} (min {min(values):.1f}, max {max(values):.1f})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--infer-batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default=None,
                   help="comma-separated; default bf16,fp32 on CPUs with native bf16, fp32 elsewhere")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keras-python", default=None)
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--peak-gflops", default=None, metavar="fp32=N,bf16=M",
                   help="matrix-multiply peaks of this machine per precision (default: measured here)")
    args = p.parse_args()
    bf16_native = args.device != "cpu" or native_bf16()
    precisions = (args.precision or ("bf16,fp32" if bf16_native else "fp32")).split(",")
    given_peaks = parse_peaks(args.peak_gflops)
    ceiling_precisions = [q for q in precisions if q == "fp32" or (q == "bf16" and bf16_native)]
    print(f"CPU: {cpu_description()}", flush=True)
    if "bf16" in precisions and not bf16_native:
        print("note: this CPU has no native bf16 instructions: bf16 runs emulated, and no bf16 ceiling is measured")
    kpy = None if args.no_keras or args.device != "cpu" else keras_python(args)
    data = make_data(args.batch * max(args.train_steps + args.warmup, args.infer_batches))
    print(f"blog model, batch {args.batch}, {args.train_steps} timed training steps and {args.infer_batches} "
          f"inference batches per repetition after {args.warmup} warm-up steps, {args.reps} alternating "
          f"repetitions, device {args.device}, {os.cpu_count()} CPUs", flush=True)
    peaks: dict[str, list[float]] = {}
    if args.device == "cpu":
        for q in ceiling_precisions:
            if q not in given_peaks:
                peaks[q] = [measure_peak_gflops(q)]
    results: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.reps):
        for precision in precisions:
            engines = [("diycnn", sys.executable)] + ([("keras", kpy)] if kpy else [])
            if rep % 2:
                engines.reverse()
            for engine, python in engines:
                r = measure(python, engine, data, precision, args)
                results.setdefault((engine, precision), []).append(r)
                print(f"  rep {rep + 1} {engine:<6} {precision}: train {r['train_ips']:6.1f} img/s, inference "
                      f"{r['infer_ips']:6.1f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    print("\n| engine | precision | train img/s median (min, max) | inference img/s median (min, max) | "
          "peak RSS MB (median) | peak RSS MB when training ended |\n|---|---|---|---|---|---|")
    for (engine, precision), rs in results.items():
        print(f"| {engine} | {precision} | {stats([r['train_ips'] for r in rs])} | "
              f"{stats([r['infer_ips'] for r in rs])} | {statistics.median(r['peak_rss_mb'] for r in rs):.0f} | "
              f"{statistics.median(r['train_peak_rss_mb'] for r in rs):.0f} |")

    if kpy:
        print("\nRatios diycnn / Keras (median of per-repetition ratios):")
        for precision in precisions:
            d, k = results[("diycnn", precision)], results[("keras", precision)]
            for key, what in (("train_ips", "training"), ("infer_ips", "inference")):
                ratios = [a[key] / b[key] for a, b in zip(d, k)]
                print(f"  {precision} {what}: {statistics.median(ratios):.2f}x "
                      f"({sum(r >= 1.2 for r in ratios)} of {len(ratios)} repetitions at >= 1.2x)")
            mem = statistics.median(a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in zip(d, k))
            print(f"  {precision} peak RSS: {mem:.2f}x")
    if args.device == "cpu":
        for q in ceiling_precisions:
            if q in given_peaks:
                peak, how = given_peaks[q], "given"
            else:
                peaks[q].append(measure_peak_gflops(q))
                peak = statistics.median(peaks[q])
                how = f"measured {peaks[q][0]:.0f} before the runs, {peaks[q][1]:.0f} after"
            d = results[("diycnn", q)]
            train_ceiling = peak / (3 * FORWARD_GFLOP)
            infer_ceiling = peak / FORWARD_GFLOP
            t = statistics.median(r["train_ips"] for r in d)
            i = statistics.median(r["infer_ips"] for r in d)
            print(f"\n{q} ceiling: 2048^3 {q} matrix multiply at {peak:.0f} GFLOP/s ({how}) -> training "
                  f"{train_ceiling:.1f} img/s, inference {infer_ceiling:.1f} img/s; diycnn {q} reaches "
                  f"{t / train_ceiling:.0%} and {i / infer_ceiling:.0%} of it.")


if __name__ == "__main__":
    main()
