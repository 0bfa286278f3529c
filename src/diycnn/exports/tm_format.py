"""Teachable Machine's files: TF.js taking its pixels where TF.js carries the run, else ONNX.
"""

from __future__ import annotations

from ..settings import TFJS_MODEL_FILE
from .job import Job
from .onnx_format import write_onnx
from .tfjs_export import write_tfjs


def write_tm(job: Job) -> None:
    """Teachable Machine's files: TF.js taking its pixels where TF.js carries the run (export() chose
    the model file with tm_is_tfjs), else ONNX."""
    if job.model_path.name == TFJS_MODEL_FILE:
        write_tfjs(job, teachable=True)
    else:
        write_onnx(job)
