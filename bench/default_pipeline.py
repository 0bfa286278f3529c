"""Where the default's time goes: `diycnn.train(DATA)` with no model (auto), stage by stage.

Usage (from the project root):
    .venv/bin/python bench/default_pipeline.py [--budget MIN] [--data NAME=FOLDER ...]

Each dataset runs in a fresh process with an empty cache (a temporary DIYCNN_CACHE; the face
weights are linked in, as `make install` puts them in the real cache). The run's own signals are
timed: the stage lines it prints, its log lines and the trainer's callbacks. The time between one
signal and the next is charged to the stage the first one opened: the scan (hashes, headers,
near-duplicates), auto's face survey, then per candidate its set-up (building the model, loading
weights), decoding (face alignment included) or feature extraction, LP-FT, the training epochs,
the test evaluation, suspect labels, cross-validation and the report (plots, Grad-CAM), and at
the end auto's selection test and publishing. Printed: each stage's seconds and share of the wall
time, on the CPU it names. Default datasets: kpop_idols' training folder (photos of people) and
hymenoptera's (ants and bees).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from first_model import cpu_name, empty_cache_env  # noqa: E402 (bench/first_model.py, beside this file)
from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)

# What a signal opens, by its first words (the run's own messages); None: the stage goes on.
OPENS = [
    (r"Scanning ", "scan"),
    (r"(Found |Near-duplicates|Note: )", None),
    (r"auto: looking for faces", "face survey"),
    (r"auto: .*Plan within", "planning"),
    (r"auto: (training|resuming) candidate", "set-up (model, weights)"),
    (r"Decoding ", "decoding photos (faces aligned)"),
    (r"(Extracting |.* features: all )", "feature extraction"),
    (r"(Decoded |feature cache)", None),
    (r"LP-FT", "after LP-FT"),
    (r"Frozen stages", "frozen stages, once per view"),
    (r"train begin", "training epochs"),
    (r"train end", "after training"),
    (r"Restored the best", None),
    (r"Evaluating", "test evaluation"),
    (r"Looking for suspect labels", "suspect labels"),
    (r"Cross-validating", "cross-validation"),
    (r"(fold \d+/\d+|Cross-validated)", None),
    (r"Writing the report", "report (plots, Grad-CAM) and publishing"),
    (r"auto: (first usable|better) model", "between candidates"),
    (r"auto: .* (skipped|stopped|failed)", "between candidates"),
    (r"end", "selection test, final publishing"),
]

CHILD = r'''
import json, logging, sys, time
import diycnn
from diycnn.training.trainer import Callback

t0 = time.perf_counter()
events = []
def note(text):
    events.append((time.perf_counter() - t0, text))

class Timing(Callback):
    def on_train_begin(self, epochs, start_epoch):
        note("train begin")
    def on_train_end(self, interrupted):
        note("train end")

class Logged(logging.Handler):
    def emit(self, record):
        note(record.getMessage())

logging.getLogger("diycnn").addHandler(Logged())
logging.getLogger("diycnn").setLevel(logging.INFO)
budget = float(sys.argv[3]) if sys.argv[3] != "default" else None
run = diycnn.train(sys.argv[1], out=sys.argv[2], budget=budget, callbacks=[Timing()], on_stage=note)
note("end")
m = run.metrics
print(json.dumps({"events": events, "model": m.model, "test_accuracy": m.test_accuracy,
                  "test_photos": m.counts["test"]}))
'''


def profile(data: Path, budget: float | None, work: Path) -> dict:
    env = empty_cache_env(work)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(work / "run"),
                           "default" if budget is None else str(budget)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stages(events: list[list]) -> tuple[dict[str, float], float]:
    """Seconds per stage ('candidate: stage' inside a candidate), and the wall time."""
    spent: dict[str, float] = defaultdict(float)
    current, candidate, last = "start-up", "", 0.0
    for t, text in events:
        spent[f"{candidate}: {current}" if candidate and current not in ("planning", "face survey", "scan")
              else current] += t - last
        last = t
        named = re.match(r"auto: (?:training|resuming) candidate (\S+)", text)
        if named:
            candidate = named.group(1)
        if text == "end":
            candidate = ""
        for pattern, opens in OPENS:
            if re.match(pattern, text):
                current = opens or current
                break
    return dict(spent), last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=None,
                        help="auto's budget in minutes (default: none given, the default as users run it)")
    parser.add_argument("--data", action="append", metavar="NAME=FOLDER",
                        help="datasets (default: kpop_idols and hymenoptera training folders)")
    args = parser.parse_args()
    datasets = ([tuple(d.split("=", 1)) for d in args.data] if args.data else
                [("kpop_idols (people)", str(SHARED / "kpop_idols" / "train")),
                 ("hymenoptera", str(SHARED / "hymenoptera" / "train"))])
    budget = "its default budget" if args.budget is None else f"--budget {args.budget:g}"
    print(f"{cpu_name()}; the default (auto) with {budget}, empty cache, fresh process")
    for name, folder in datasets:
        with tempfile.TemporaryDirectory() as tmp:
            result = profile(Path(folder), args.budget, Path(tmp))
        spent, wall = stages(result["events"])
        print(f"\n{name}: {wall:.0f} s; kept {result['model']}, {result['test_accuracy']:.1%} on "
              f"{result['test_photos']} test photos")
        for stage, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            if seconds >= 0.05 * wall / 10:
                print(f"  {stage:<52} {seconds:6.1f} s  {seconds / wall:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
