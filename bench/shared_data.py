"""Where the benchmarks find the photo datasets: $DIYCNN_DATASETS, else a `shared/datasets` folder
beside the checkout (the layout this project is developed in). The datasets are only read."""

from __future__ import annotations

import os
from pathlib import Path


def datasets_dir() -> Path:
    given = os.environ.get("DIYCNN_DATASETS")
    return Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "datasets"


SHARED = datasets_dir()
