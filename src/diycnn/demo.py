"""The embedded default: real face / non-face patches that ship with scikit-image, no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .run import new_run_dir

DEMO_EPOCHS = 12


def write_demo_data(folder: str | Path) -> Path:
    """Write scikit-image's LFW subset (100 face and 100 non-face 25x25 patches cut from real
    photos) as a class-folder dataset: folder/face/*.png and folder/not_face/*.png."""
    from skimage.data import lfw_subset  # noqa: PLC0415 (lazy: loads scikit-image)

    patches = lfw_subset()  # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
    folder = Path(folder)
    for i, patch in enumerate(patches):
        label = "face" if i < 100 else "not_face"
        (folder / label).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.rint(patch * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / label / f"{label}_{i % 100:03d}.png")
    return folder


def demo(out: str | Path | None = None, epochs: int = DEMO_EPOCHS, runs_root: str | Path = "runs",
         callbacks=None, on_stage=None, **settings):
    """Write the demo photos under `out` and train the blog's seed-cnn on them.

    Returns:
        The finished Run (its report is `run.dir / "report.html"`).
    """
    from .api import train  # noqa: PLC0415 (lazy: loads torch)

    root = new_run_dir(out, "demo", runs_root)
    data = write_demo_data(root / "faces")
    return train(data, model="seed-cnn", out=root / "run", epochs=epochs, callbacks=callbacks,
                 on_stage=on_stage, **settings)
