"""`diycnn export`: export a run, checked to predict the same."""

from __future__ import annotations

from typing import Any

from ..settings import EXPORT_FORMATS


def add_parser(sub) -> Any:
    p = sub.add_parser("export", help="export a run (ONNX, TorchScript, Keras, TensorFlow.js, Teachable Machine "
                                      "files), checked to predict the same")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS,
                   help="onnx (default); torchscript; keras (Keras-style spec models); tfjs (TensorFlow.js "
                        "layers model: spec models, EfficientNet-Lite and face runs; checked in TF.js under "
                        "Node.js); tm (Teachable Machine's format for tmImage.load: the TF.js model taking TM's "
                        "pixels + metadata.json; ONNX + TM's files for runs TF.js cannot carry)")
    p.add_argument("--out", help="export folder (default RUN/export-FORMAT)")
    p.add_argument("--int8", action="store_true", help="ONNX: also write an int8 model and report its accuracy")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    return p


def run(args) -> int:
    from .. import export  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    out = export(args.run, args.format, out=args.out, int8=args.int8, force=args.force)
    from ..exports import check_line  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)
    from ..exports.runtime import read_export_info  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    info = read_export_info(out)
    print(f"Exported {args.format}: {out / info['model_file']}")
    print(check_line(info["check"]))
    if "int8" in info:
        q = info["int8"]
        line = f"int8: {out / q['file']} ({q['size_bytes'] / 1e6:.1f} MB vs {q['fp32_size_bytes'] / 1e6:.1f} MB)"
        if "accuracy_change" in q:
            line += (f", test accuracy {q['test_accuracy_int8']:.1%} vs {q['test_accuracy_fp32']:.1%} "
                     f"({q['accuracy_change']:+.1%})")
        print(line)
    print(f"How to use it: {out / 'README.txt'}")
    return 0
