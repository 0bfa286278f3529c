"""`diycnn weights`: the face-recognition weights: present or missing, and fetching them."""

from __future__ import annotations

import json
from typing import Any


def add_parser(sub) -> Any:
    p = sub.add_parser("weights", help="the face-recognition weights (npm package @vladmandic/face-api): "
                                       "present or missing, and fetch them",
                       description="Without arguments: say whether the face weights are installed and how to get "
                                   "them. 'fetch' downloads the pinned package (needs npm and the npm registry) "
                                   "and checks its SHA-256; 'fetch --from PATH' installs it from the package "
                                   "tarball or its model/ folder instead (no network).")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list", help="default: list")
    p.add_argument("--from", dest="source", metavar="PATH",
                   help="fetch: the package tarball (face-api-1.7.15.tgz) or its model/ folder")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    return p


def run(args) -> int:
    from .. import face_weights

    if args.action == "fetch":
        folder = face_weights(source=args.source, fetch=True)["folder"]
        print(f"Face weights ready in {folder}")
        return 0
    info = face_weights()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {'present' if info['present'] else 'missing'} ({info['folder']})")
    if info["present"] and info["source"].get("tarball_sha256"):
        print(f"  checked: package tarball SHA-256 {info['source']['tarball_sha256']}")
    if not info["present"]:
        print(f"  {info['how_to_get']}")
    print("Used by the face-probe and face-finetune recipes (backbone face_recognition_net); the timm "
          "backbones' weights: diycnn backbones.")
    return 0 if info["present"] else 1
