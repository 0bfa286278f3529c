"""`diycnn backbones`: the pretrained backbones and whether their weights are here offline."""

from __future__ import annotations

import json
from typing import Any


def add_parser(sub) -> Any:
    p = sub.add_parser("backbones", help="list pretrained backbones and whether their weights are here offline")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    from .. import backbones  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    rows = backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    print(f"{'backbone':<{width}} {'offline weights':<46} about")
    for r in rows:
        print(f"{r['name']:<{width}} {(r['offline'] or 'no (downloads when online)'):<46} {r['about']}")
    print("\nAny timm model name works with --backbone; --weights FILE gives weights for any of them.")
    return 0
