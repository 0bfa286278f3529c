"""Decoding photos: diycnn's loader against a plain single-threaded Pillow loop, side by side.

Usage (from the project root):
    .venv/bin/python bench/pipeline.py [DATASET] [--size 100] [--reps 3]

Both paths read every photo of $DIYCNN_DATASETS/DATASET (default cats_and_dogs), decode it
to RGB and resize it to SIZE x SIZE (bilinear, as seed-cnn's preprocessing does), into one
uint8 array. The plain loop is what a hand-written Keras/Pillow pipeline does; diycnn's
`decode_all` adds EXIF orientation, every-mode RGB conversion and a thread pool. Alternating
repetitions; the OS file cache is warm after the first. Later epochs read the decoded uint8
array (one copy in memory), so their cost is a batch gather, measured last.

Scanning (content hash + image header of every file) is measured the same way: every file
read (`scan_folder(..., cache=False)`) against a rescan of the unchanged folder, where the
scan record (kept in a temporary DIYCNN_CACHE here) lets it skip every file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diycnn.data.images import Preprocessing
from diycnn.data.loader import ArrayBatches, decode_all
from diycnn.data.scan import scan_folder
from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)


def plain_pillow(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", nargs="?", default="cats_and_dogs")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    cache_dir = tempfile.TemporaryDirectory(prefix="diycnn-bench-cache-")  # removed at exit
    os.environ["DIYCNN_CACHE"] = cache_dir.name
    folder = SHARED / args.dataset
    paths = [r.path for r in scan_folder(folder).records]
    scans: dict[str, list[float]] = {"scan, every file read": [], "rescan, unchanged folder": []}
    for _ in range(args.reps):
        for name, cache in (("scan, every file read", False), ("rescan, unchanged folder", True)):
            t0 = time.perf_counter()
            scan_folder(folder, cache=cache)
            scans[name].append(time.perf_counter() - t0)
    prep = Preprocessing(size=(args.size, args.size))
    times: dict[str, list[float]] = {"plain Pillow loop (1 thread)": [], "diycnn decode_all": []}
    for _ in range(args.reps):
        t0 = time.perf_counter()
        plain_pillow(paths, args.size)
        times["plain Pillow loop (1 thread)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        images, ok, _ = decode_all(paths, prep)
        times["diycnn decode_all"].append(time.perf_counter() - t0)
    batches = ArrayBatches(images, np.zeros(len(images)), 32, shuffle=True, seed=0)
    t0 = time.perf_counter()
    for _ in batches.iterate(0):
        pass
    cached = len(images) / (time.perf_counter() - t0)
    print(f"{args.dataset}: {len(paths)} photos -> {args.size}x{args.size}, {args.reps} alternating repetitions")
    print("| path | photos/s median (min-max) |\n|---|---|")
    rates = {}
    for name, ts in times.items():
        rates[name] = len(paths) / statistics.median(ts)
        print(f"| {name} | {rates[name]:.0f} ({len(paths) / max(ts):.0f}-{len(paths) / min(ts):.0f}) |")
    print(f"| later epochs: shuffled batches from the decoded uint8 array | {cached:.0f} |")
    ratio = rates["diycnn decode_all"] / rates["plain Pillow loop (1 thread)"]
    print(f"\ndiycnn / plain Pillow: {ratio:.2f}x on the first pass")
    print("\n| scan | files/s median (min-max) |\n|---|---|")
    n = len(paths)
    for name, ts in scans.items():
        print(f"| {name} | {n / statistics.median(ts):.0f} ({n / max(ts):.0f}-{n / min(ts):.0f}) |")
    speedup = statistics.median(scans["scan, every file read"]) / statistics.median(scans["rescan, unchanged folder"])
    print(f"\nrescan with the scan record / full scan: {speedup:.1f}x")


if __name__ == "__main__":
    main()
