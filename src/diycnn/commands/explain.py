"""`diycnn explain`: Grad-CAM heatmaps."""

from __future__ import annotations

from typing import Any

from .common import err


def add_parser(sub) -> Any:
    p = sub.add_parser("explain", help="Grad-CAM heatmaps: where the model looked")
    p.add_argument("run", help="run directory")
    p.add_argument("paths", nargs="+", help="photos, folders or glob patterns")
    p.add_argument("--class", dest="class_name", help="explain this class (default: the predicted one)")
    p.add_argument("--out", help="folder for the overlays (default RUN/explain)")
    return p


def run(args) -> int:
    from .. import explain  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    results = explain(args.run, args.paths, class_name=args.class_name, out=args.out)
    for r in results:
        if "skipped" in r:
            err(f"skipped {r['path']}: {r['skipped']}")
        else:
            print(f"{r['path']}: {r['class']} {r['probability']:.1%} (predicted {r['predicted']}) -> {r['file']}")
    return 0
