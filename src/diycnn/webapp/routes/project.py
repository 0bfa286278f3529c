"""The project: its classes and photos, and what training would leave out."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import Response

from ...settings import EXPORTS
from ..jobs import RECIPES
from ..project import MAX_UPLOAD_BYTES, ProjectError
from ..security import json_body
from ..state import RECIPE_HELP, App, add_photo
from . import state

router = APIRouter(prefix="/api")


@router.get("/project")
def project(app: App = Depends(state)) -> dict[str, Any]:
    p = app.project
    return {"root": str(p.root), "name": p.root.name, "classes": p.summary(), "recipes": list(RECIPES),
            "recipe_guide": RECIPE_HELP, "runs": [r.model_dump() for r in app.runs()], "training": app.job.status(),
            "export_formats": list(EXPORTS), "export_labels": {n: f.label for n, f in EXPORTS.items()}, "max_upload_mb": MAX_UPLOAD_BYTES // (1024 * 1024)}


@router.get("/check")
def check(recipe: str | None = None, app: App = Depends(state)) -> dict[str, Any]:
    return app.check(recipe)


@router.post("/classes")
async def add_class(request: Request, app: App = Depends(state)) -> dict[str, Any]:
    body = await json_body(request)
    return {"name": app.project.add_class(body.get("name"))}


@router.patch("/classes/{name}")
async def rename_class(name: str, request: Request, app: App = Depends(state)) -> dict[str, Any]:
    body = await json_body(request)
    return {"name": app.project.rename_class(name, body.get("name"))}


@router.delete("/classes/{name}")
def delete_class(name: str, app: App = Depends(state)) -> dict[str, Any]:
    return {"deleted": name, "photos": app.project.delete_class(name)}


@router.post("/classes/{name}/photos")
async def upload(name: str, files: list[UploadFile], app: App = Depends(state)) -> dict[str, Any]:
    added, rejected = [], []
    for f in files:
        data = await f.read(MAX_UPLOAD_BYTES + 1)
        try:  # decoded in a worker thread, two at a time with the thumbnails: the server keeps answering
            added.append(await anyio.to_thread.run_sync(add_photo, app.project, name, f.filename, data))
        except ProjectError as exc:
            if exc.status == 404:
                raise
            rejected.append({"file": f.filename, "reason": str(exc)})
    return {"added": added, "rejected": rejected}


@router.get("/classes/{name}/photos/{photo}")
def photo(name: str, photo: str, thumb: int = 1, app: App = Depends(state)) -> Response:
    if thumb:
        return Response(app.thumbnail(name, photo), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
    data, media_type = app.photo(name, photo)
    return Response(data, media_type=media_type, headers={"Content-Disposition": "inline"})


@router.delete("/classes/{name}/photos/{photo}")
def delete_photo(name: str, photo: str, app: App = Depends(state)) -> dict[str, Any]:
    return {"deleted": photo, "trash": app.project.delete_photo(name, photo)}


@router.post("/classes/{name}/photos/{photo}/move")
async def move_photo(name: str, photo: str, request: Request, app: App = Depends(state)) -> dict[str, Any]:
    body = await json_body(request)
    return {"moved": app.project.move_photo(name, photo, body.get("to")), "to": body.get("to")}
