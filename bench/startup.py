"""How fast the CLI answers before any work starts: help, wrong paths and names, cache listing, summaries.

Usage (from the project root):
    .venv/bin/python bench/startup.py [--reps 3]

Runs each command in a fresh process (as a user would) and prints the median wall time, and for
each the slowest imports (`python -X importtime`), so a regression shows what pulled in PyTorch.
For comparison it also times `python -c "import torch"` on this machine: the floor of any
command that needs PyTorch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = [
    ["--help"],
    ["train", "--help"],
    ["train", "/nonexistent/photos"],             # a wrong folder
    ["train", "{data}", "--model", "tn"],         # a typo in the recipe
    ["compare", "/nonexistent/photos", "--models", "tm,seed-cnn"],
    ["predict", "/nonexistent/run", "x.jpg"],
    ["cache"],
    ["backbones"],
    ["summary", "seed-cnn"],
    ["summary", "tm"],
    ["summary", "face-probe"],
]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc.returncode, proc.stderr


def slowest_imports(args: list[str], env: dict[str, str], top: int = 3) -> str:
    code = f"import sys; sys.argv = ['diycnn'] + {args!r}; from diycnn.cli import main\ntry:\n main()\nexcept SystemExit:\n pass"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            if cumulative.strip().isdigit() and not name.startswith("  "):  # top-level imports only
                rows.append((int(cumulative) / 1e6, name.strip()))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {s:.2f} s" for s, name in rows[:top])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "diycnn")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DIYCNN_CACHE": os.path.join(tmp, "cache"), "DIYCNN_OFFLINE": "1"}
        data = os.path.join(tmp, "photos")
        for cls in ("a", "b"):
            os.makedirs(os.path.join(data, cls))
        floor = statistics.median(timed([sys.executable, "-c", "import torch"], env)[0] for _ in range(args.reps))
        print(f"python -c 'import torch': {floor:.2f} s (the floor of any command that needs PyTorch)\n")
        print(f"{'command':<58} {'median s':>8}  exit  slowest imports")
        for cmd in COMMANDS:
            argv = [a.format(data=data) for a in cmd]
            runs = [timed([exe, *argv], env) for _ in range(args.reps)]
            median = statistics.median(r[0] for r in runs)
            print(f"{'diycnn ' + ' '.join(cmd):<58} {median:8.2f}  {runs[0][1]:>4}  {slowest_imports(argv, env)}")


if __name__ == "__main__":
    main()
