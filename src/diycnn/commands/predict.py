"""`diycnn predict`: classify photos with a run or an ONNX export."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

from .common import device_args, err


def add_parser(sub) -> Any:
    p = sub.add_parser("predict", help="classify photos with a trained run or an ONNX export")
    p.add_argument("run", help="run directory, or an ONNX export folder (predicts without torch)")
    p.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.add_argument("--top-k", type=int, default=None)
    device_args(p, precision=True)
    return p


def run(args) -> int:
    from .. import load  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    run = load(args.run, device=args.device, precision=args.precision)
    preds = run.predict(args.paths, top_k=args.top_k)
    for problem in preds.problems:
        err(f"skipped {problem.path}: {problem.reason}")
    if args.json:
        print(json.dumps(list(preds), indent=2, ensure_ascii=False))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        scored = any("unknown_score" in p for p in preds)
        writer.writerow(["path", "label"] + run.class_names + (["unknown_score"] if scored else []))
        for p in preds:
            writer.writerow([p["path"], p["label"]] + [f"{p['probabilities'][c]:.6f}" for c in run.class_names]
                            + ([f"{p['unknown_score']:.6f}"] if scored else []))
    else:
        k = args.top_k or 1
        width = max([len(p["path"]) for p in preds] + [4])
        for p in preds:
            top = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:k]
            # "unknown" (far from every class) or "no face" first, then the classes as the model ranks them
            verdict = f"{p['label']} (score {p['unknown_score']:.3f})  " if p.get("unknown") else (
                "no face  " if p.get("face") is False else "")
            print(f"{p['path']:<{width}}  {verdict}" + "  ".join(f"{c} {v:6.1%}" for c, v in top))
    if not preds:
        err("Nothing could be predicted.")
        return 1
    return 0
