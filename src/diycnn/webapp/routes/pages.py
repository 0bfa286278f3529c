"""The page and its own files (no inline script: the Content-Security-Policy allows these only)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter()
STATIC = resources.files("diycnn.webapp") / "static"
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#1967d2"/><path d="M4 4h3v3H4zM9 4h3v3H9zM4 9h3v3H4zM9 9h3v3H9z" fill="#fff"/></svg>')


@router.get("/", response_class=HTMLResponse)
def index() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@router.get("/app.js")
def script() -> Response:
    return Response((STATIC / "app.js").read_bytes(), media_type="text/javascript; charset=utf-8")


@router.get("/app.css")
def style() -> Response:
    return Response((STATIC / "app.css").read_bytes(), media_type="text/css; charset=utf-8")


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml")
