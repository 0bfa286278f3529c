"""A generated 20,000-photo folder: scan, decode and train one epoch, with the decoded photos
in memory and memory-mapped from the on-disk cache (cold, then warm), side by side.

Usage (from the project root):
    .venv/bin/python bench/large_folder.py [--photos 20000] [--size 64]

Photos: 160x120 JPEGs, two classes (circles and squares on noise), in a temporary folder.
Each mode runs in a fresh process (diycnn.train, a small CNN, one epoch, batch 64, bf16 where
supported); peak RSS is the process's VmHWM; "anon" is its anonymous (non file-backed) memory
at the end — mapped photo pages are file-backed and the kernel can drop them under pressure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SPEC = """
name: small
layers:
  - Input: {{shape: [{size}, {size}, 3]}}
  - Conv2D: {{filters: 16, kernel_size: 3, activation: relu}}
  - MaxPooling2D: {{pool_size: 2}}
  - Conv2D: {{filters: 32, kernel_size: 3, activation: relu}}
  - MaxPooling2D: {{pool_size: 2}}
  - GlobalAveragePooling2D
  - Dense: {{units: num_classes, activation: softmax}}
"""


def generate(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for cls in ("circles", "squares"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cls = ("circles", "squares")[i % 2]
        im = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
        d = ImageDraw.Draw(im)
        x, y, r = (int(v) for v in rng.integers([30, 30, 12], [130, 90, 28]))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if cls == "circles" else d.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
        im.save(root / cls / f"{i:06d}.jpg", quality=85)


def status(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(data: str, spec: str, out: str) -> None:
    import diycnn

    marks: list[tuple[str, float]] = [("start", time.perf_counter())]
    run = diycnn.train(data, model=spec, epochs=1, batch_size=64, out=out,
                       on_stage=lambda text: marks.append((text.split(" ")[0], time.perf_counter())))
    marks.append(("end", time.perf_counter()))
    t = {}
    for (name, start), (_, end) in zip(marks, marks[1:]):
        t[name] = t.get(name, 0.0) + end - start
    m = run.metrics
    print(json.dumps({"scan_s": t["Scanning"], "decode_s": t["Decoding"],
                      "train_s": t.get("Training", 0.0), "train_photos": m["counts"]["train"],
                      "photos": sum(m["counts"].values()), "test_accuracy": m["test_accuracy"],
                      "peak_rss_mb": status("VmHWM"), "anon_mb": status("RssAnon"),
                      "total_s": marks[-1][1] - marks[0][1]}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=int, default=20000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--worker", nargs=3, metavar=("DATA", "SPEC", "OUT"))
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    tmp = Path(tempfile.mkdtemp(prefix="diycnn-large-"))
    t0 = time.perf_counter()
    generate(tmp / "photos", args.photos)
    print(f"generated {args.photos} photos in {time.perf_counter() - t0:.0f} s ({tmp / 'photos'})", flush=True)
    (tmp / "small.yaml").write_text(SPEC.format(size=args.size))
    print("| decoded photos | scan photos/s | decode photos/s | train photos/s | peak RSS MB | anon RSS at end MB | "
          "test acc |\n|---|---|---|---|---|---|---|", flush=True)
    for i, (label, mode) in enumerate((("in memory", "memory"), ("memory-mapped, cold cache", "disk"),
                                       ("memory-mapped, warm cache", "disk"))):
        env = {**os.environ, "DIYCNN_DECODED": mode, "DIYCNN_CACHE": str(tmp / "cache"), "DIYCNN_OFFLINE": "1"}
        out = subprocess.run([sys.executable, __file__, "--worker", str(tmp / "photos"), str(tmp / "small.yaml"),
                              str(tmp / f"run{i}")], env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        decode = f"{r['photos'] / r['decode_s']:.0f}"
        print(f"| {label} | {r['photos'] / r['scan_s']:.0f} | {decode} | {r['train_photos'] / r['train_s']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['anon_mb']:.0f} | {r['test_accuracy']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
