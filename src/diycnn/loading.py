"""`diycnn.load`: a run directory (PyTorch) or an ONNX export folder (onnxruntime only), by what the
folder holds. It sits above run.py and exports/, which it chooses between."""

from __future__ import annotations

from pathlib import Path

from .run import Classifier, Run


def load(run_dir: str | Path, device: str = "auto", precision: str | None = None) -> Classifier:
    """Load a finished run directory (or an ONNX export of one) for prediction and evaluation.

    An export folder (with export.json, from `diycnn export --format onnx|tm`) is loaded with
    onnxruntime, numpy and Pillow only: torch is not imported. A run predicts in fp32, as its
    exports do, unless `precision` asks otherwise ("bf16" is faster where the CPU has it).

    Raises:
        FileNotFoundError: neither a run nor an export directory.
        ValueError: incomplete, damaged, or from a newer diycnn.
    """
    if (Path(run_dir) / "export.json").is_file():
        from .exports.runtime import OnnxRun  # noqa: PLC0415 (lazy: the export stack, only for export folders)

        if precision not in (None, "fp32", "auto"):
            raise ValueError(f"'{run_dir}' is an ONNX export, which predicts in fp32; received precision "
                             f"{precision!r}. Drop --precision, or predict with the run directory.")
        return OnnxRun(run_dir)
    return Run(run_dir, device=device, precision=precision)


__all__ = ["load"]
