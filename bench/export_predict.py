"""Prediction from an ONNX export (onnxruntime, no torch) against the run directory (torch), side by side.

Usage (from the project root):
    .venv/bin/python bench/export_predict.py RUN [RUN...] [--photos DIR] [--reps 5]

For each run: exports it to ONNX (+ int8) in a temporary folder, then measures, alternating
the two paths in every repetition:
- cold start: wall time of `python -m diycnn predict TARGET PHOTO --json` in a fresh process
  (imports, model load, one photo), median over --reps;
- latency: one decoded photo through each loaded model, median ms over 50 calls after warm-up;
- throughput: a batch of 32 decoded photos, images/s (median of --reps).
The torch path uses the run's inference precision (bf16 autocast on CPUs that support it).
Prints a table with the ratio torch/ONNX (above 1: the export is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import diycnn
from diycnn.data.loader import decode_all
from diycnn.exports.runtime import OnnxRun


def photos_of(run_dir: Path, limit: int = 32) -> list[Path]:
    split = json.loads((run_dir / "split.json").read_text())
    data = Path(json.loads((run_dir / "model.json").read_text())["data"])
    rels = [p for c in sorted(split["splits"]["test"]) for p in split["splits"]["test"][c]]
    return [data / r for r in rels[:limit]]


def cold_start(target: Path, photo: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diycnn", "predict", str(target), str(photo), "--json"], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def latency_ms(model, one: np.ndarray, calls: int = 50) -> float:
    for _ in range(5):
        model.predict_arrays(one)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.predict_arrays(one)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def throughput(model, batch: np.ndarray) -> float:
    t0 = time.perf_counter()
    model.predict_arrays(batch, batch_size=len(batch))
    return len(batch) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for run_dir in args.runs:
        out = Path(tempfile.mkdtemp(prefix="diycnn-bench-export-")) / "onnx"
        diycnn.export(run_dir, "onnx", out=out, int8=True)
        torch_run, onnx_run = diycnn.load(run_dir, device="cpu"), OnnxRun(out)
        int8_run = OnnxRun(out, model_file="model.int8.onnx")
        files = photos_of(run_dir)
        batch, _, _ = decode_all(files, onnx_run.preprocessing)
        one = batch[:1]
        cold = {"torch": [], "onnx": []}
        lat = {"torch": [], "onnx": [], "int8": []}
        thr = {"torch": [], "onnx": [], "int8": []}
        models = {"torch": torch_run, "onnx": onnx_run, "int8": int8_run}
        for _ in range(args.reps):
            cold["torch"].append(cold_start(run_dir, files[0]))
            cold["onnx"].append(cold_start(out, files[0]))
            for name, model in models.items():
                lat[name].append(latency_ms(model, one))
                thr[name].append(throughput(model, batch))
        med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in
               (("cold", cold), ("lat", lat), ("thr", thr))}
        info = json.loads((run_dir / "model.json").read_text())
        label = f"{run_dir.name} ({info['model']['name']}, {torch_run.precision})"
        rows.append((label, med))
        print(f"{label}: cold start torch {med['cold']['torch']:.2f} s / onnx {med['cold']['onnx']:.2f} s; "
              f"latency torch {med['lat']['torch']:.1f} ms / onnx {med['lat']['onnx']:.1f} ms / int8 "
              f"{med['lat']['int8']:.1f} ms; throughput torch {med['thr']['torch']:.0f} / onnx "
              f"{med['thr']['onnx']:.0f} / int8 {med['thr']['int8']:.0f} img/s "
              f"(min-max cold torch {min(cold['torch']):.2f}-{max(cold['torch']):.2f}, onnx "
              f"{min(cold['onnx']):.2f}-{max(cold['onnx']):.2f})", flush=True)
    print("\n| run | cold start torch / ONNX (ratio) | 1-photo latency torch / ONNX / int8 | "
          "batch-32 img/s torch / ONNX / int8 |\n|---|---|---|---|")
    for label, m in rows:
        c, l_, t = m["cold"], m["lat"], m["thr"]
        print(f"| {label} | {c['torch']:.2f} s / {c['onnx']:.2f} s ({c['torch'] / c['onnx']:.1f}x) | "
              f"{l_['torch']:.1f} / {l_['onnx']:.1f} / {l_['int8']:.1f} ms ({l_['torch'] / l_['onnx']:.1f}x) | "
              f"{t['torch']:.0f} / {t['onnx']:.0f} / {t['int8']:.0f} ({t['onnx'] / t['torch']:.1f}x) |")


if __name__ == "__main__":
    main()
