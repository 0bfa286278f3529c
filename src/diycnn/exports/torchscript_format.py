"""TorchScript: the run's model traced, checked by running the saved file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from .checking import torch_probs
from .job import Job, compare, image_input


def _torchscript(wrapper, images: np.ndarray, path: Path) -> np.ndarray:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    example = torch.from_numpy(np.ascontiguousarray(images[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still works
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        path.write_bytes(buf.getvalue())
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return torch_probs(loaded, images)


def write_torchscript(job: Job) -> None:
    job.info["input"] = image_input(job.images)
    job.info["check"] = compare("TorchScript", _torchscript(job.wrapper, job.images, job.model_path), job.want,
                                 job.source)
