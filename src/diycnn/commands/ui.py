"""`diycnn ui`: the local web app."""

from __future__ import annotations

from typing import Any


def add_parser(sub) -> Any:
    p = sub.add_parser("ui", help="local web app: classes, uploads, webcam, training, live preview, export")
    p.add_argument("--project", default="diycnn-project",
                   help="project folder: one sub-folder of photos per class (created if missing; default "
                        "./diycnn-project); the app's runs go in its hidden .diycnn/ folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    return p


def run(args) -> int:
    from ..webapp.server import serve  # noqa: PLC0415 (lazy: loads FastAPI)

    serve(args.project, host=args.host, port=args.port)
    return 0
