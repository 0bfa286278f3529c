"""`diycnn ui`: a local Teachable-Machine-style web app — a JSON API (FastAPI) and one page.

The page and the API call the same Python API as the CLI (`diycnn.train`, `diycnn.load`,
`diycnn.export`). Safe by default: it binds to 127.0.0.1; on a loopback address only
`localhost`-style Host headers are answered (no DNS rebinding); every request that changes
something must carry the `X-Diycnn` header, which a foreign web page cannot send without a
CORS preflight this server never grants (no cross-site request forgery)."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import tempfile
import threading
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .jobs import RECIPES, TrainingJob
from .project import MAX_UPLOAD_BYTES, Project, ProjectError

log = logging.getLogger(__name__)

CSRF_HEADER = "x-diycnn"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "testserver"}
EXPORT_FORMATS = ("onnx", "tm", "torchscript", "keras", "tfjs")
THUMB = 160
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#1967d2"/><path d="M4 4h3v3H4zM9 4h3v3H9zM4 9h3v3H4zM9 9h3v3H9z" fill="#fff"/></svg>')


def host_name(header: str) -> str:
    """The Host header without its port ('[::1]:7860' -> '[::1]', 'localhost:7860' -> 'localhost')."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


UPLOAD_BATCH = 16  # photos per upload request: static/index.html sends them in batches of this many
JSON_LIMIT = 1024 * 1024


def body_limit(method: str, path: str) -> int:
    """Most bytes a request body may have: a batch of photos, one photo, or a small JSON body."""
    if method == "POST" and path.startswith("/api/classes/") and path.endswith("/photos"):
        return UPLOAD_BATCH * MAX_UPLOAD_BYTES + JSON_LIMIT  # + multipart headers
    if method == "POST" and path == "/api/predict":
        return MAX_UPLOAD_BYTES
    return JSON_LIMIT


class BodyLimit:
    """ASGI guard: a body over `body_limit` is refused with 413 before it is stored anywhere —
    from its Content-Length before reading a byte, or, for a chunked body, as soon as the bytes
    received pass the limit (the app's partial response, if any, is replaced by the 413)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope["method"], scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > limit
        except ValueError:
            too_big = False  # the server refuses malformed lengths itself
        if too_big:
            return await self._refuse(send, limit)
        received, over, refused = 0, False, False

        async def counting_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal refused
            if over:
                if not refused:
                    refused = True
                    await self._refuse(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:  # _TooLarge, possibly inside the ExceptionGroup of a middleware's task group
            if not over:
                raise
        if over and not refused:
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        what = f"{limit / (1024 * 1024):.0f} MB"
        body = json.dumps({"error": f"Request too large (at most {what} here): photos may have up to "
                                    f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB each; upload them in batches of "
                                    f"up to {UPLOAD_BATCH}."})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


class App:
    """Holds the project, its training job and the loaded model of the latest run."""

    def __init__(self, project_dir: str | Path):
        self.project = Project(project_dir)
        self.job = TrainingJob(self.project)
        self._model_lock = threading.Lock()
        self._loaded: tuple[Path, Any] | None = None
        self._thumbs: dict[tuple[str, float], bytes] = {}

    def runs(self) -> list[dict[str, Any]]:
        out = []
        if not self.project.runs_dir.is_dir():
            return out
        for d in sorted(self.project.runs_dir.iterdir()):
            try:
                info = json.loads((d / "model.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if info.get("status") != "complete":
                continue
            try:
                m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append({"name": d.name, "model": info["model"].get("name"), "created": info.get("created"),
                        "test_accuracy": m.get("test_accuracy"), "test_loss": m.get("test_loss"),
                        "class_names": info.get("class_names")})
        return sorted(out, key=lambda r: (r["created"] or "", r["name"]))

    def run_dir(self, name: str | None = None) -> Path:
        runs = self.runs()
        if not runs:
            raise ProjectError("No trained model yet: train one first.", 409)
        if name is None:
            return self.project.runs_dir / runs[-1]["name"]
        if name not in {r["name"] for r in runs}:
            raise ProjectError(f"No finished run {name!r}.", 404)
        return self.project.runs_dir / name

    def model(self, name: str | None = None):
        from ..run import load

        path = self.run_dir(name)
        with self._model_lock:
            if self._loaded is None or self._loaded[0] != path:
                self._loaded = (path, load(path))
            return self._loaded[1]

    def predict(self, data: bytes, run: str | None = None) -> dict[str, Any]:
        from ..data.images import ImageError

        if len(data) > MAX_UPLOAD_BYTES:
            raise ProjectError(f"Photo too large ({len(data) / 1e6:.1f} MB; at most "
                               f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB).", 413)
        model = self.model(run)
        try:
            arr = model.preprocessing.load(data)
        except ImageError as exc:
            raise ProjectError(f"Cannot read this photo: {exc.reason}.") from None
        with self._model_lock:
            probs = model.predict_arrays(arr[None])[0]
        return {"run": model.dir.name, "label": model.class_names[int(probs.argmax())],
                "probabilities": {c: float(p) for c, p in zip(model.class_names, probs)}}

    def evaluation(self, run: str | None = None) -> dict[str, Any]:
        path = self.run_dir(run)
        m = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        info = json.loads((path / "model.json").read_text(encoding="utf-8"))
        per_class = {c: {"accuracy": v["recall"], "support": v["support"]} for c, v in m["per_class"].items()}
        return {"run": path.name, "model": info["model"].get("name"), "class_names": m["class_names"],
                "test_accuracy": m["test_accuracy"], "test_loss": m["test_loss"], "counts": m["counts"],
                "per_class": per_class, "confusion_matrix": m["confusion_matrix"],
                "report": f"runs/{path.name}/report.html", "auto": m.get("auto", {}).get("winner")}

    def thumbnail(self, cls: str, photo: str) -> bytes:
        from PIL import Image, ImageOps

        path = self.project.photo_path(cls, photo)
        key = (str(path), path.stat().st_mtime)
        if key not in self._thumbs:
            try:
                with Image.open(path) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    im.thumbnail((THUMB, THUMB))
                    buf = io.BytesIO()
                    im.save(buf, "JPEG", quality=80)
            except Exception as exc:  # a file put there by hand may be anything
                raise ProjectError(f"Cannot show {photo!r}: {exc}", 422) from None
            if len(self._thumbs) > 5000:
                self._thumbs.clear()
            self._thumbs[key] = buf.getvalue()
        return self._thumbs[key]

    def export_zip(self, fmt: str, run: str | None = None) -> Path:
        from ..exports import export

        if fmt not in EXPORT_FORMATS:
            raise ProjectError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
        path = self.run_dir(run)
        folder = path / f"export-{fmt}"
        if not (folder / "export.json").is_file():  # every format writes it last: the export is whole
            try:
                folder = export(path, fmt, force=folder.exists())
            except (ValueError, ImportError) as exc:
                raise ProjectError(f"Export as {fmt} failed: {exc}", 422) from None
        target = path / f"{path.name}-{fmt}.zip"
        if not target.is_file():
            fd, tmp = tempfile.mkstemp(dir=path, suffix=".zip.tmp")
            with open(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(folder.rglob("*")):
                    if f.is_file():
                        zf.write(f, f"{path.name}-{fmt}/{f.relative_to(folder)}")
            Path(tmp).replace(target)
        return target


def _error(exc: ProjectError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def create_app(project_dir: str | Path, host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI application for one project folder."""
    state = App(project_dir)
    api = FastAPI(title="diycnn", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.diycnn = state
    guard_host = is_loopback(host)

    @api.middleware("http")
    async def safety(request: Request, call_next):
        hostname = host_name(request.headers.get("host") or "")
        if guard_host and hostname not in LOOPBACK_HOSTS:
            return JSONResponse({"error": f"Host {hostname!r} refused: this server only answers on localhost."},
                                status_code=403)
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"error": "Refused: requests that change the project must come from the diycnn "
                                          f"page (missing {CSRF_HEADER} header)."}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @api.exception_handler(ProjectError)
    async def project_error(request: Request, exc: ProjectError):
        return _error(exc)

    @api.get("/", response_class=HTMLResponse)
    def index():
        return (resources.files("diycnn.webapp") / "static" / "index.html").read_text(encoding="utf-8")

    @api.get("/favicon.ico")
    def favicon():
        return Response(FAVICON, media_type="image/svg+xml")

    @api.get("/api/project")
    def project():
        p = state.project
        return {"root": str(p.root), "name": p.root.name, "classes": p.summary(), "recipes": list(RECIPES),
                "runs": state.runs(), "training": state.job.status(), "export_formats": list(EXPORT_FORMATS),
                "max_upload_mb": MAX_UPLOAD_BYTES // (1024 * 1024)}

    @api.post("/api/classes")
    async def add_class(request: Request):
        body = await _json(request)
        return {"name": state.project.add_class(body.get("name"))}

    @api.patch("/api/classes/{name}")
    async def rename_class(name: str, request: Request):
        body = await _json(request)
        return {"name": state.project.rename_class(name, body.get("name"))}

    @api.delete("/api/classes/{name}")
    def delete_class(name: str):
        return {"deleted": name, "photos": state.project.delete_class(name)}

    @api.post("/api/classes/{name}/photos")
    async def upload(name: str, files: list[UploadFile]):
        added, rejected = [], []
        for f in files:
            data = await f.read(MAX_UPLOAD_BYTES + 1)
            try:
                added.append(state.project.add_photo(name, f.filename, data))
            except ProjectError as exc:
                if exc.status == 404:
                    raise
                rejected.append({"file": f.filename, "reason": str(exc)})
        return {"added": added, "rejected": rejected}

    @api.get("/api/classes/{name}/photos/{photo}")
    def photo(name: str, photo: str, thumb: int = 1):
        if thumb:
            return Response(state.thumbnail(name, photo), media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})
        return FileResponse(state.project.photo_path(name, photo))

    @api.delete("/api/classes/{name}/photos/{photo}")
    def delete_photo(name: str, photo: str):
        state.project.delete_photo(name, photo)
        return {"deleted": photo}

    @api.post("/api/train")
    async def train(request: Request):
        return JSONResponse(state.job.start(await _json(request)), status_code=202)

    @api.get("/api/train")
    def training():
        return state.job.status()

    @api.post("/api/train/cancel")
    def cancel():
        return state.job.cancel()

    @api.post("/api/predict")
    async def predict(request: Request, run: str | None = None):
        data = await request.body()
        if not data:
            raise ProjectError("Send the photo's bytes as the request body.")
        return state.predict(data, run)

    @api.get("/api/evaluation")
    def evaluation(run: str | None = None):
        return state.evaluation(run)

    @api.post("/api/export/{fmt}")
    def export(fmt: str, run: str | None = None):
        path = state.export_zip(fmt, run)
        return {"file": path.name, "bytes": path.stat().st_size,
                "download": f"/api/export/{fmt}/download?run={path.parent.name}"}

    @api.get("/api/export/{fmt}/download")
    def download(fmt: str, run: str | None = None):  # serves what POST built; a GET never starts work
        path = state.run_dir(run)
        target = path / f"{path.name}-{fmt}.zip"
        if fmt not in EXPORT_FORMATS or not target.is_file():
            raise ProjectError(f"No {fmt} export of {path.name} yet; export it first.", 404)
        return FileResponse(target, media_type="application/zip", filename=target.name)

    state.project.runs_dir.mkdir(parents=True, exist_ok=True)
    api.mount("/runs", StaticFiles(directory=state.project.runs_dir), name="runs")
    api.add_middleware(BodyLimit)  # outermost: runs before anything reads the body
    return api


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ProjectError("The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise ProjectError("The request body must be a JSON object.")
    return body


def serve(project_dir: str | Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the app until Ctrl-C."""
    import uvicorn

    if not is_loopback(host):
        log.warning("diycnn ui is listening on %s: anyone who can reach this machine on port %d can see and "
                    "change the project '%s'. Use --host 127.0.0.1 unless you mean it.", host, port, project_dir)
    app = create_app(project_dir, host)
    print(f"diycnn ui: project {app.state.diycnn.project.root}\n  open http://{'localhost' if is_loopback(host) else host}"
          f":{port}/ in a browser (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")

