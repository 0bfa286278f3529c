"""Teachable Machine's recipe end to end on hymenoptera: first run (features extracted) and a
second run on the same photos with the feature cache warm, side by side.

Usage (from the project root):
    DIYCNN_OFFLINE=1 .venv/bin/python bench/tm_cache.py [DATASET]

The cache is a fresh temporary folder (DIYCNN_CACHE), so the first run really extracts.
Each run is a separate process: wall time includes start-up, scanning, decoding, training,
evaluation and the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)


def main() -> None:
    data = SHARED / (sys.argv[1] if len(sys.argv) > 1 else "hymenoptera")
    tmp = Path(tempfile.mkdtemp(prefix="diycnn-tm-cache-"))
    env = {**os.environ, "DIYCNN_CACHE": str(tmp / "cache")}
    diycnn = str(Path(sys.executable).with_name("diycnn"))
    times = []
    for label in ("first run (cache empty)", "second run (cache warm)"):
        t0 = time.perf_counter()
        subprocess.run([diycnn, "train", str(data), "--model", "tm", "--val-as-test", "--out", str(tmp / label[:5])],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        print(f"{label}: {times[-1]:.1f} s", flush=True)
    print(f"warm / cold: {times[0] / times[1]:.1f}x faster")


if __name__ == "__main__":
    main()
