"""Finished runs: the live preview of a photo, the test figures, and exports to download."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from ...exports.runtime import read_export_info
from ...exports.snippets import snippets
from ...settings import EXPORT_FORMATS
from ..project import ProjectError
from ..schemas import Evaluation
from ..state import PREDICT_WORKERS, App
from . import state

router = APIRouter(prefix="/api")


@router.post("/predict")
async def predict(request: Request, run: str | None = None, app: App = Depends(state)) -> dict[str, Any]:
    data = await request.body()
    if not data:
        raise ProjectError("Send the photo's bytes as the request body.")
    # decoding and inference block: a worker thread (two at most) keeps the event loop answering
    if app.predict_limiter is None:  # made on the server's own event loop
        app.predict_limiter = anyio.CapacityLimiter(PREDICT_WORKERS)
    result: dict[str, Any] = await anyio.to_thread.run_sync(app.predict, data, run, limiter=app.predict_limiter)
    return result


@router.get("/evaluation", response_model=Evaluation, response_model_by_alias=True)
def evaluation(run: str | None = None, app: App = Depends(state)) -> Evaluation:
    return app.evaluation(run)


@router.post("/export/{fmt}")
def export(fmt: str, run: str | None = None, app: App = Depends(state)) -> dict[str, Any]:
    path = app.export_zip(fmt, run)
    try:
        code = snippets(read_export_info(path.parent / f"export-{fmt}"))
    except (OSError, KeyError, TypeError, ValueError):  # an export.json from elsewhere, not as diycnn writes it
        code = []
    return {"file": path.name, "bytes": path.stat().st_size, "snippets": code,
            "download": f"/api/export/{fmt}/download?run={path.parent.name}"}


@router.get("/export/{fmt}/download")
def download(fmt: str, run: str | None = None, app: App = Depends(state)) -> FileResponse:
    """Serves what POST built; a GET never starts work."""
    path = app.run_dir(run)
    target = path / f"{path.name}-{fmt}.zip"
    if fmt not in EXPORT_FORMATS or target.is_symlink() or not target.is_file():
        raise ProjectError(f"No {fmt} export of {path.name} yet; export it first.", 404)
    return FileResponse(target, media_type="application/zip", filename=target.name)
