"""`diycnn demo`: the blog's model on the bundled face/non-face photos."""

from __future__ import annotations

from typing import Any

from ..settings import PRECISIONS
from .common import Progress, device_args, err, print_result


def add_parser(sub) -> Any:
    p = sub.add_parser("demo", help="train the blog's model on the bundled face/non-face photos (no network)")
    p.add_argument("--out", help="output folder (default: runs/demo, numbered)")
    p.add_argument("--epochs", type=int, default=None, help="default: 12")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    device_args(p)
    return p


def run(args) -> int:
    from ..demo import demo  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    progress = Progress(args.epochs)
    run = demo(out=args.out, epochs=args.epochs, callbacks=[progress.callback], on_stage=err,
               precision=args.precision, device=args.device)
    print_result(run)
    return 0
