"""Time to the first usable model of the default (`diycnn train DATA`, no --model), and to the end.

Usage (from the project root):
    .venv/bin/python bench/first_model.py [--budget MIN] [--data NAME=FOLDER ...]

For each dataset, `diycnn train DATA --out TMP` (with `--budget MIN` only when given) runs as a user runs it (the installed
command, a fresh process) with an empty cache (a temporary DIYCNN_CACHE: no scan records, decoded
photos or features from earlier runs; the face weights are linked in, as `make install` puts them
in the real cache), and its output is read as it comes. Printed per dataset: the seconds until auto
announces its first usable model, that model and its figure to trust (cross-validated where the
test split is small), then the whole run's time, the model kept and its figures; the CPU is named
first. Default datasets: kpop_idols' training folder (15 people), two of its people, hymenoptera's
training folder and 300 photos of cats_and_dogs (150 a class), each at most 400 photos.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)

DIYCNN = str(Path(sys.executable).with_name("diycnn"))


def cpu_name() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {f}" in flags]
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} cores, {' '.join(extras)}"


def subset(src: Path, out: Path, classes: list[str] | None, per_class: int | None) -> Path:
    """Class folders of links (never copies, never next to the photos) to part of a dataset."""
    for cls in sorted(d for d in src.iterdir() if d.is_dir() and (classes is None or d.name in classes)):
        (out / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(f for f in cls.iterdir() if f.is_file())[:per_class]:
            os.symlink(f, out / cls.name / f.name)
    return out


def empty_cache_env(work: Path) -> dict[str, str]:
    """The environment with an empty DIYCNN_CACHE in `work`, the installed face weights linked in."""
    cache = work / "cache"
    cache.mkdir()
    weights = Path(os.environ.get("DIYCNN_CACHE") or Path.home() / ".cache" / "diycnn") / "weights"
    if weights.is_dir():
        os.symlink(weights, cache / "weights")
    return {**os.environ, "DIYCNN_CACHE": str(cache)}


def run_default(data: Path, budget: float | None, work: Path) -> dict:
    env = {**empty_cache_env(work), "COLUMNS": "80"}
    out = work / "run"
    start = time.perf_counter()
    first: dict = {}
    lines = 0
    budget_flag = [] if budget is None else ["--budget", str(budget)]  # None: the default, as users run it
    proc = subprocess.Popen([DIYCNN, "train", str(data), "--out", str(out), *budget_flag], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = ""
    for line in proc.stdout:
        lines += 1
        said += line
        if not first and line.startswith("auto: first usable model after"):
            first = {"seconds": time.perf_counter() - start, "line": line.strip()}
            while not line.rstrip().endswith(("it is the run now", "(Ctrl-C keeps it)")):
                line = next(proc.stdout)  # the announcement may be folded over lines
                lines += 1
                said += line
                first["line"] += " " + line.strip()
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"diycnn train {data} failed:\n{said[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    cv = m.get("cross_validation") or {}
    found = re.search(r"after \d+ s: (\S+), (.*?); it is", first.get("line", ""))
    return {"first_seconds": first.get("seconds"), "first_model": found.group(1) if found else None,
            "first_figure": found.group(2) if found else None, "total_seconds": total,
            "kept": m["auto"]["winner"], "test_accuracy": m["test_accuracy"], "test_photos": m["counts"]["test"],
            "cv_accuracy": cv.get("accuracy") if cv.get("checked") else None, "lines": lines,
            "photos": sum(m["counts"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=None,
                        help="auto's budget in minutes (default: none given, the default as users run it)")
    parser.add_argument("--data", nargs="+", metavar="NAME=FOLDER", help="datasets (default: see the docstring)")
    args = parser.parse_args()
    budget = "the default budget (no --budget)" if args.budget is None else f"budget {args.budget:g} min"
    print(f"CPU: {cpu_name()}; {budget}; empty cache for every run")
    print(f"{'data':<22} {'photos':>6}  {'first model':>11}  {'which, figure to trust':<44}  {'whole run':>9}  "
          f"{'kept':<13} {'test':>6} {'cross-val':>9} {'lines':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data:
            datasets = [(item.split("=", 1)[0], Path(item.split("=", 1)[1])) for item in args.data]
        else:
            kpop = SHARED / "kpop_idols" / "train"
            datasets = [("kpop_idols", kpop),
                        ("kpop_idols, 2 people", subset(kpop, tmp / "two", ["Arin", "Chorong"], None)),
                        ("hymenoptera", SHARED / "hymenoptera" / "train"),
                        ("cats_and_dogs, 300", subset(SHARED / "cats_and_dogs" / "train", tmp / "cd", None, 150))]
        for i, (name, folder) in enumerate(datasets):
            work = tmp / f"work{i}"
            work.mkdir()
            r = run_default(folder, args.budget, work)
            first = f"{r['first_seconds']:.0f} s" if r["first_seconds"] is not None else "never"
            cv = f"{r['cv_accuracy']:.1%}" if r["cv_accuracy"] is not None else "-"
            print(f"{name:<22} {r['photos']:>6}  {first:>11}  {(r['first_model'] or '') + ', ' + (r['first_figure'] or ''):<44}"
                  f"  {r['total_seconds']:>7.0f} s  {r['kept']:<13} {r['test_accuracy']:>6.1%} {cv:>9} {r['lines']:>5}",
                  flush=True)


if __name__ == "__main__":
    main()
