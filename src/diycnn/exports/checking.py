"""The photos an export is checked on, and the run's own probabilities for them (the run's
model wrapped as uint8 photos -> probabilities, fp32 on the CPU, as the ONNX and TorchScript
exports take it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import ImageError, load_rgb
from ..data.loader import decode_all
from ..data.split import read_split
from .job import TOLERANCE, ExportError

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


def original_photos(run, limit: int) -> tuple[list[np.ndarray], str]:
    """Whole decoded photos (RGB uint8 (H, W, 3), before any resizing) to check an export that resizes by
    itself (the web page): the run's first test photos, or seeded synthetic photos of assorted sizes."""
    data, split_path = Path(run.info.data), run.dir / "split.json"
    photos: list[np.ndarray] = []
    if data.is_dir() and split_path.is_file():
        chosen = read_split(split_path).assignment["test"]
        for rel in [r for c, rels in chosen.items() if c in run.class_names for r in rels]:
            try:
                photos.append(np.asarray(load_rgb(data / rel, run.preprocessing.background)))
            except (ImageError, OSError):
                continue
            if len(photos) == limit:
                break
    if photos:
        return photos, f"{len(photos)} of the run's test photos in {run.info.data}, whole"
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(40, 400)), int(rng.integers(40, 400))) for _ in range(limit)]
    return ([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes],
            f"{limit} seeded synthetic photos of assorted sizes (the run's test photos are not available)")


def scored_export_module(run):
    """The export wrapper with a second output, the run's "none of these" score (evaluation/open_set.py):
    uint8 photos -> (probabilities (N, classes), unknown_score (N,)), fp32 on the CPU. The score is
    computed in the graph from the features the last linear layer reads and the run's class means,
    averaged over the views as the run does. Returns (module, None), or (None, why) where the run has
    no detector or its logits do not come straight from a linear layer."""
    import copy  # noqa: PLC0415 (with torch below)

    import torch  # noqa: PLC0415 (lazy: loads torch)
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    from ..evaluation.calibration import last_linear  # noqa: PLC0415 (lazy: loads torch)
    from ..evaluation.open_set import unit  # noqa: PLC0415 (lazy: loads torch)

    detector = getattr(run, "detector", None)
    if detector is None:
        return None, "the run cannot say 'none of these' (trained with --no-unknown or by an older diycnn)"
    base = export_module(run)
    inner = copy.deepcopy(base.module)
    h, w = run.preprocessing.output_size
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    layer = last_linear(inner, example)
    name = next((n for n, m in inner.named_modules() if m is layer), None)
    if layer is None or not name:
        return None, "the model's logits do not come from a final linear layer"
    classes = len(run.class_names)

    class Tap(nn.Module):
        """The last linear layer, with the score of its input as one more column of its output."""

        def __init__(self, linear: nn.Linear, means: np.ndarray, cohort: np.ndarray | None, weight: float):
            super().__init__()
            self.linear, self.weight = linear, float(weight) if cohort is not None else 0.0
            self.register_buffer("means", torch.from_numpy(unit(means)).float())
            # without a cohort a zero weight and any unit vector: the term vanishes and the graph stays one
            self.register_buffer("cohort", torch.from_numpy(unit(cohort if cohort is not None else means[:1])).float())

        def forward(self, x):
            # written out rather than F.normalize, whose Expand onnxruntime's shape inference cannot follow
            f = x.flatten(1).float()
            f = f / torch.clamp(torch.sqrt((f * f).sum(dim=1, keepdim=True)), min=1e-12)
            score = 1 - torch.topk(f @ self.means.t(), 1, dim=1).values[:, 0]  # TopK: ReduceMax-18 defeats shape inference
            if self.weight:
                score = score - self.weight * (1 - (f @ self.cohort.t())[:, 0])
            return torch.cat([self.linear(x), score[:, None]], dim=1)

    parent_name, _, child = name.rpartition(".")
    setattr(inner.get_submodule(parent_name) if parent_name else inner, child, Tap(layer, detector.means, detector.cohort, detector.weight))
    with torch.no_grad():
        plain, tapped = base.module(example), inner(example)
    if tapped.shape != (2, classes + 1) or not torch.allclose(tapped[:, :classes], plain, atol=1e-5):
        return None, "layers after the last linear layer change its output"

    class ScoredExport(nn.Module):
        def __init__(self):
            super().__init__()
            self.module, self.tta, self.scale = inner, base.tta, base.scale
            self.register_buffer("mean", base.mean.clone())
            self.register_buffer("std", base.std.clone())

        def forward(self, image):
            x = (image.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.mean) / self.std
            views = [x, torch.flip(x, dims=[3])] if self.tta else [x]
            outs = [self.module(v) for v in views]
            probs = sum(torch.softmax(o[:, :classes], dim=1) for o in outs) / len(outs)
            return probs, sum(o[:, classes] for o in outs) / len(outs)

    return ScoredExport().eval(), None


def check_scores(run, scored, images: np.ndarray, got: np.ndarray, source: str, engine: str,
                 decided: np.ndarray | None = None) -> dict[str, Any]:
    """export.json's "unknown" check: an export's unknown scores `got` against PyTorch's (the
    scored_export_module `scored`), to the probabilities' tolerance, with the run's threshold and
    method, and how many of the export's decisions (`decided`, where it answers them itself; else
    its scores against the threshold) are the run's. Raises ExportError where the scores differ."""
    _, want = torch_scored(scored, images)
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= TOLERANCE:
        raise ExportError(f"The {engine} export's unknown score differs from the run's ({diff:.3g} > {TOLERANCE}) on "
                          f"{source}. Nothing was written. Please report this with the run's model.json.")
    threshold = run.unknown_threshold
    decided = got > threshold if decided is None else np.asarray(decided, dtype=bool)
    return {"threshold": threshold, "method": run.info.inference["unknown"]["method"], "max_abs_diff": diff,
            "same_decisions": int((decided == (want > threshold)).sum()), "photos": int(len(want))}


def torch_scored(wrapper, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, unknown scores) of a scored_export_module."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    probs, scores = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            p, s = wrapper(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
            probs.append(p.numpy())
            scores.append(s.numpy())
    return np.concatenate(probs), np.concatenate(scores)
