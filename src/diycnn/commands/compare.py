"""`diycnn compare`: several models on one split, compared."""

from __future__ import annotations

import json
from typing import Any

from ..settings import PRECISIONS
from .common import Progress, check_before_torch, device_args, err, near_args, set_values


def add_parser(sub) -> Any:
    p = sub.add_parser("compare", help="train several models on one split and compare them (McNemar, galleries, "
                                       "Grad-CAM)")
    p.add_argument("data", nargs="?", help="DATA folder (omit with --runs)")
    p.add_argument("--models", help="comma-separated recipes or spec files, e.g. seed-cnn,seed-cnn-plus,tm,finetune")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="compare already-trained runs (same split) instead")
    p.add_argument("--split", help="reuse a split.json for every model")
    p.add_argument("--folds", type=int, help="stratified K-fold: mean ± std and a paired test across folds")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--budget", type=float, help="minutes for an 'auto' model")
    p.add_argument("--precision", choices=PRECISIONS)
    device_args(p)
    p.add_argument("--val-as-test", action="store_true", help="with train/val folders: test on the given val folder")
    near_args(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training setting for every model")
    p.add_argument("--out", help="comparison folder (default runs/<data>-compare, numbered)")
    return p


def run(args) -> int:
    if not args.runs and args.data is not None and args.models is not None:
        check_before_torch(args.data, [name.strip() for name in args.models.split(",")])
    from .. import compare  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)
    from ..comparison import format_table  # noqa: PLC0415 (lazy: loads torch)

    settings: dict[str, Any] = {k: getattr(args, k) for k in ("epochs", "seed", "device", "precision", "budget")
                                if getattr(args, k) is not None}
    if args.val_as_test:
        settings["val_as_test"] = True
    if args.no_near_duplicates:
        settings["near_duplicates"] = False
    settings.update(set_values(args.set))
    if args.runs:
        out = compare(runs=args.runs, out=args.out, on_stage=err)
    else:
        if args.data is None or args.models is None:
            raise ValueError("diycnn compare needs DATA and --models a,b,... (or --runs RUN RUN ...).")
        progress = Progress(args.epochs)
        out = compare(args.data, args.models, split=args.split, folds=args.folds, out=args.out,
                      callbacks=[progress.callback], on_stage=err, **settings)
    result = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    print(format_table(result))
    print(f"\nComparison: {out / 'comparison.html'}")
    return 0
