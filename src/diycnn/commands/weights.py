"""`diycnn weights`: what diycnn fetches once (the face-recognition weights, and TensorFlow.js for
checking TF.js exports): present or missing, and fetching them. Listing reads no weights and
imports no PyTorch: the package's hash is checked when it is fetched, each file's hash (recorded then)
whenever it is listed or loaded."""

from __future__ import annotations

import json
from typing import Any

from .common import err


def add_parser(sub) -> Any:
    p = sub.add_parser("weights", help="the face-recognition weights (npm @vladmandic/face-api) and TensorFlow.js "
                                       "(checks TF.js exports): present or missing, and fetch them",
                       description="Without arguments: say whether the face weights and the TF.js checker are "
                                   "installed and how to get them. 'fetch' downloads the pinned face-api package "
                                   "(needs npm and the npm registry), checks its SHA-256, and installs TensorFlow.js "
                                   "from diycnn's lockfile; 'fetch --from PATH' installs the face weights from the "
                                   "package tarball or its model/ folder instead (no network).")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list", help="default: list")
    p.add_argument("--from", dest="source", metavar="PATH",
                   help="fetch: the package tarball (face-api-1.7.15.tgz) or its model/ folder")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    return p


def _checker() -> dict[str, Any]:
    from ..exports.tfjs_format import TFJS_VERSION, checker_dir, find_tfjs, tfjs_missing_message  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    found = find_tfjs()
    return {"name": f"TensorFlow.js {TFJS_VERSION} (checks tfjs and tm exports under Node.js)",
            "folder": str(found[1] if found else checker_dir()), "present": found is not None,
            "how_to_get": None if found else tfjs_missing_message()}


def run(args) -> int:
    from .. import face_weights  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    if args.action == "fetch":
        from ..exports.tfjs_format import install_checker  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

        folder = face_weights(source=args.source, fetch=True)["folder"]
        print(f"Face weights ready in {folder}")
        if args.source is None:
            try:
                print(f"TensorFlow.js ready in {install_checker()}")
            except (OSError, RuntimeError) as exc:  # TF.js exports are still written, marked unchecked
                err(f"warning: {exc}")
        return 0
    info, checker = face_weights(), _checker()
    if args.json:
        print(json.dumps({**info, "tfjs_checker": checker}, indent=2))
        return 0
    print(f"{info['name']}: {'present' if info['present'] else 'missing'} ({info['folder']})")
    if info["problem"]:
        print(f"  changed since installed: {info['problem']}")
    elif info["present"] and info["source"].get("tarball_sha256"):
        print(f"  checked: package tarball SHA-256 {info['source']['tarball_sha256']} at fetch; "
              "the files' own SHA-256 now")
    if not info["present"]:
        print(f"  {info['how_to_get']}")
    print("  used by the face-probe and face-finetune recipes; the timm backbones' weights: diycnn backbones")
    print(f"{checker['name']}: {'present' if checker['present'] else 'missing'} ({checker['folder']})")
    if not checker["present"]:
        print(f"  {checker['how_to_get']}")
    return 0 if info["present"] and not info["problem"] else 1
