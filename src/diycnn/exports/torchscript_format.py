"""TorchScript: the run's model traced, checked by running the saved file. Where the run can say
"none of these", the file has a second method beside forward, `unknown_score(image)`, traced from the
same graph as the ONNX export's second output (checking.scored_export_module) and checked the same way.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .checking import check_scores, scored_export_module, torch_probs
from .job import Job, compare, image_input

UNKNOWN_METHOD = "unknown_score"


def _saved(traced: Any, path: Path) -> Any:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    path.write_bytes(buf.getvalue())
    return torch.jit.load(str(path), map_location="cpu").eval()


def _torchscript(wrapper, images: np.ndarray, path: Path) -> np.ndarray:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    example = torch.from_numpy(np.ascontiguousarray(images[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still works
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        loaded = _saved(traced, path)
    return torch_probs(loaded, images)


def _scored_torchscript(scored, images: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The file with forward (probabilities) and unknown_score, both traced; what the saved file gives."""
    import torch  # noqa: PLC0415 (lazy: loads torch)
    from torch import nn  # noqa: PLC0415 (lazy: loads torch)

    class Scored(nn.Module):
        def __init__(self):
            super().__init__()
            self.scored = scored

        def forward(self, image):
            return self.scored(image)[0]

        def unknown_score(self, image):
            return self.scored(image)[1]

    example = torch.from_numpy(np.ascontiguousarray(images[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks, fixed at the export's input size
        with torch.no_grad():
            traced = torch.jit.trace_module(Scored().eval(), {"forward": (example,), UNKNOWN_METHOD: (example,)},
                                            check_trace=False)
        loaded = _saved(traced, path)
    return torch_probs(loaded, images), torch_probs(getattr(loaded, UNKNOWN_METHOD), images)


def write_torchscript(job: Job) -> None:
    job.info["input"] = image_input(job.images)
    scored, why = scored_export_module(job.run)
    if scored is None:
        got = _torchscript(job.wrapper, job.images, job.model_path)
        job.info["unknown"] = {"method": None, "why": why}
    else:
        got, scores = _scored_torchscript(scored, job.images, job.model_path)
        job.info["unknown"] = {**check_scores(job.run, scored, job.images, scores, job.source, "TorchScript"),
                               "output": None, "method_name": UNKNOWN_METHOD,
                               "rule": f"a photo whose model.{UNKNOWN_METHOD}(image) is above the threshold is of "
                                       "none of the classes"}
    job.info["check"] = compare("TorchScript", got, job.want, job.source)
