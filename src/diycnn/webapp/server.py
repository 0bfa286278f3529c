"""`diycnn ui`: a local Teachable-Machine-style web app — a JSON API (FastAPI) and one page.

The page and the API call the same Python API as the CLI (`diycnn.train`, `diycnn.load`,
`diycnn.export`). The app is put together here: the guards (security.py: Host check, the
`X-Diycnn` header against cross-site requests, Content-Security-Policy, body limits), the state
(state.py: the project, its training job, the loaded model, thumbnails) and the routes
(routes/: pages, project, training, runs). It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from . import security
from .project import ProjectError
from .routes import pages, project, runs, training
from .state import App

log = logging.getLogger(__name__)


def create_app(project_dir: str | Path, host: str = "127.0.0.1") -> FastAPI:
    """The FastAPI application for one project folder, answering as if bound to `host`."""
    state = App(project_dir)
    api = FastAPI(title="diycnn", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.diycnn = state
    api.state.allowed_hosts = security.install(api, host)

    @api.exception_handler(ProjectError)
    async def project_error(request: Request, exc: ProjectError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    for part in (pages, project, training, runs):
        api.include_router(part.router)
    state.project.app_folder("runs", create=True)
    api.mount("/runs", StaticFiles(directory=state.project.runs_dir), name="runs")
    return api


def serve(project_dir: str | Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the app until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 (lazy: loads uvicorn)

    loopback = security.is_loopback(host)
    if not loopback:
        log.warning("diycnn ui is listening on %s: anyone who can reach this machine on port %d can see and "
                    "change the project '%s'. Use --host 127.0.0.1 unless you mean it.", host, port, project_dir)
    app = create_app(project_dir, host)
    print(f"diycnn ui: project {app.state.diycnn.project.root}\n  open http://{'localhost' if loopback else host}"
          f":{port}/ in a browser (Ctrl-C to stop)", flush=True)
    if not loopback:
        print("  answering to host names: " + ", ".join(sorted(app.state.allowed_hosts - {"testserver"})), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
