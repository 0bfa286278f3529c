"""`diycnn evaluate`: score a run on a labelled folder."""

from __future__ import annotations

import json
from typing import Any

from .common import device_args, err, near_args


def add_parser(sub) -> Any:
    p = sub.add_parser("evaluate", help="score a run on a labelled photo folder")
    p.add_argument("run", help="run directory (or ONNX export folder)")
    p.add_argument("data", help="DATA/<class>/*")
    p.add_argument("--json", action="store_true")
    p.add_argument("--unknown-folder", metavar="DIR",
                   help="photos of none of the run's classes: also report how many it calls unknown")
    device_args(p, precision=True)
    near_args(p)
    return p


def run(args) -> int:
    from .. import load  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    run = load(args.run, device=args.device, precision=args.precision)
    result = run.evaluate(args.data, near_duplicates=not args.no_near_duplicates, unknown_folder=args.unknown_folder)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    lo, hi = result["accuracy_ci95"]
    print(f"Accuracy: {result['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}, {result['correct']}/{result['n']})   "
          f"loss: {result['loss']:.4f}   macro-F1: {result['macro_f1']:.3f}   "
          f"calibration error (ECE): {result['ece']:.3f}")
    for c, v in result["per_class"].items():
        if v["support"]:
            print(f"  {c}: precision {v['precision']:.3f} recall {v['recall']:.3f} f1 {v['f1']:.3f} support {v['support']}")
    unknown = result.get("unknown")
    if unknown:
        kept = f"{unknown['accuracy_kept']:.1%}" if unknown["accuracy_kept"] is not None else "-"
        print(f"None of these: {unknown['known_called_unknown']:.1%} of these photos called unknown (score above "
              f"{unknown['threshold']:.3f}); accuracy on the other {unknown['kept']}: {kept}")
        if "strangers" in unknown:
            print(f"  Photos of other classes ({unknown['strangers']}): {unknown['strangers_called_unknown']:.1%} "
                  f"called unknown; AUROC of the score {unknown['auroc']:.3f}")
    for p in result["skipped"]:
        err(f"skipped {p['path']}: {p['reason']}")
    if result.get("seen_in_training"):
        err(f"warning: {len(result['seen_in_training'])} photo(s) are byte-identical copies of training/validation "
             "photos.")
    near = result.get("near_duplicates_of_training") or []
    if near:
        err(f"warning: {len(near)} photo(s) are near-identical copies (resized, re-encoded or re-cropped) of "
             f"training/validation photos, e.g. {near[0]['path']} ~ {near[0]['training_photo']}.")
    if "unseen" in result:
        u = result["unseen"]
        if u["n"]:
            lo, hi = u["accuracy_ci95"]
            print(f"Without the photos it has seen (copies): accuracy {u['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}, "
                  f"{u['correct']}/{u['n']})   loss: {u['loss']:.4f}")
        else:
            print("Every photo here is a copy of a training/validation photo: there is no held-out figure.")
    return 0
