"""Shared fixtures: tiny generated photo folders and a tiny Keras-style spec that trains in seconds."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The photo datasets: $DIYCNN_DATASETS, else a shared/datasets folder beside the checkout (bench/shared_data.py)
SHARED = Path(os.environ.get("DIYCNN_DATASETS") or REPO.parent / "shared" / "datasets")

# The face weights live where `make install` put them (diycnn weights fetch), even though each
# test gets its own DIYCNN_CACHE below.
os.environ.setdefault("DIYCNN_WEIGHTS", str(Path(os.environ.get("DIYCNN_CACHE") or Path.home() / ".cache" / "diycnn")
                                            / "weights"))

TINY_SPEC = """
name: tiny
layers:
  - Input: {shape: [16, 16, 3]}
  - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
  - MaxPooling2D: {pool_size: 2}
  - Flatten
  - Dense: {units: num_classes, activation: softmax}
"""


def photo(kind: str, rng: np.random.Generator, size: int = 24) -> Image.Image:
    """A noisy photo whose class is visible: 'red' is reddish, 'blue' bluish, 'green' greenish."""
    base = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 200, 40)}[kind]
    arr = np.clip(np.array(base) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_dataset(root: Path, counts: dict[str, int], seed: int = 0, fmt: str = "PNG") -> Path:
    """root/<class>/<class>_<i>.png with distinct content per file."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ext = "jpg" if fmt == "JPEG" else fmt.lower()
            photo(cls, rng).save(root / cls / f"{cls}_{i:03d}.{ext}", format=fmt)
    return root


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture
def two_class_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "photos", {"red": 20, "blue": 20})


@pytest.fixture(autouse=True)
def _chdir_tmp(tmp_path, monkeypatch):
    """Default run directories (runs/...) land in the test's temporary folder, never in the repo;
    so does diycnn's cache (scan records, features, decoded photos) unless a fixture chose one."""
    monkeypatch.chdir(tmp_path)
    if "DIYCNN_CACHE" not in os.environ:
        monkeypatch.setenv("DIYCNN_CACHE", str(tmp_path / "diycnn-cache"))


@contextlib.contextmanager
def offline_env(cache_dir: Path):
    """No network attempts, and the feature cache in `cache_dir` (module-scoped fixtures use this)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIYCNN_OFFLINE", "1")
        mp.setenv("DIYCNN_CACHE", str(cache_dir))
        yield


@pytest.fixture
def offline(tmp_path):
    with offline_env(tmp_path / "cache"):
        yield


def pytest_sessionstart(session):
    """Under CI (`CI` set; .ci/run sets it) the real-data tests must run, not skip: a missing
    datasets folder stops the suite with the reason instead of skipping them silently."""
    if os.environ.get("CI") and not SHARED.is_dir():
        pytest.exit(f"CI: the photo datasets are missing ({SHARED}); set DIYCNN_DATASETS to their folder", returncode=1)


@pytest.fixture(scope="session")
def face_model_dir() -> Path:
    """The installed face-api model folder (make install fetches it). Missing: skip here, but fail
    under CI, where the install must have fetched it."""
    from diycnn.models import face_weights

    found = face_weights.installed()
    if found is None:
        message = f"face weights not installed in {face_weights.package_dir()}: run 'diycnn weights fetch'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def serving(app):
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://localhost:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
