"""`diycnn summary`: a Keras-style table of a model's layers and parameters (no PyTorch)."""

from __future__ import annotations

import json
from typing import Any


def add_parser(sub) -> Any:
    p = sub.add_parser("summary", help="Keras-style table of a model's layers and parameters")
    p.add_argument("model", help="built-in name (seed-cnn) or a .yaml/.json spec")
    p.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    from .. import summary  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    result = summary(args.model, num_classes=args.classes, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0
