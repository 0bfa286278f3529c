"""The photos an export is checked on, and the run's own probabilities for them (the run's
model wrapped as uint8 photos -> probabilities, fp32 on the CPU, as the ONNX and TorchScript
exports take it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data.loader import decode_all
from ..data.split import read_split

log = logging.getLogger(__name__)


CHECK_LIMIT = 1000  # test photos run through both models at export time


SYNTHETIC_PHOTOS = 16


def export_module(run):
    """The run's model as uint8 (N, H, W, 3) photos -> probabilities (N, classes), fp32, on the CPU."""
    import torch  # noqa: PLC0415 (lazy: loads torch)
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    prep = run.preprocessing

    class ExportModule(nn.Module):
        def __init__(self, module: nn.Module, tta: bool):
            super().__init__()
            self.module = module
            self.tta = tta
            self.scale = float(prep.input_scale)
            self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).to(torch.float32) * self.scale
            x = (x - self.mean) / self.std
            probs = torch.softmax(self.module(x), dim=1)
            if self.tta:
                probs = (probs + torch.softmax(self.module(torch.flip(x, dims=[3])), dim=1)) / 2
            return probs

    module = run.module.to("cpu", dtype=torch.float32).to(memory_format=torch.contiguous_format).eval()
    return ExportModule(module, run.tta).eval()


def torch_probs(wrapper, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(wrapper(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))).numpy())
    return np.concatenate(out)


def split_photos(run, split: str, limit: int, seed: int | None = None):
    """Decoded photos of one split of the run: (uint8 images, labels, count in the split), or None
    when the data folder is gone or none of them can be read. `seed` picks a random sample."""

    data = Path(run.info.data)
    split_path = run.dir / "split.json"
    if not (data.is_dir() and split_path.is_file()):
        return None
    chosen = read_split(split_path).assignment[split]
    items = [(rel, run.class_names.index(c)) for c, rels in chosen.items() if c in run.class_names for rel in rels]
    total = len(items)
    if seed is not None and len(items) > limit:
        items = [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), limit, replace=False))]
    items = items[:limit]
    images, ok, _ = decode_all([data / rel for rel, _ in items], run.preprocessing)
    if not ok:
        return None
    return images, np.array([items[i][1] for i in ok]), total


def check_photos(run, limit: int = CHECK_LIMIT) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The photos an export is checked on: (uint8 (N, H, W, 3), labels or None, where they came from).

    The run's test photos when its data folder is still there; otherwise seeded synthetic photos.
    """
    found = split_photos(run, "test", limit)
    if found is not None:
        images, labels, total = found
        return images, labels, f"{len(images)} of the run's {total} test photos in {run.info.data}"
    reason = f"the run's test photos in '{run.info.data}' are not available"
    h, w = run.preprocessing.output_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (SYNTHETIC_PHOTOS, h, w, 3), dtype=np.uint8)
    log.warning("Export check uses %d synthetic photos: %s.", SYNTHETIC_PHOTOS, reason)
    return images, None, f"{SYNTHETIC_PHOTOS} seeded synthetic photos ({reason})"
