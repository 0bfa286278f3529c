"""Training: start one (in a background thread), follow it, cancel it, resume an interrupted one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..security import json_body
from ..state import App
from . import state

router = APIRouter(prefix="/api/train")


@router.post("")
async def train(request: Request, app: App = Depends(state)) -> JSONResponse:
    return JSONResponse(app.job.start(await json_body(request)), status_code=202)


@router.get("")
def training(app: App = Depends(state)) -> dict[str, Any]:
    return app.job.status()


@router.post("/cancel")
def cancel(app: App = Depends(state)) -> dict[str, Any]:
    return app.job.cancel()


@router.post("/resume")
async def resume(request: Request, app: App = Depends(state)) -> JSONResponse:
    return JSONResponse(app.job.resume(await json_body(request)), status_code=202)
