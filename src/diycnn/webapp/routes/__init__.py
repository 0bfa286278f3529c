"""The web app's routes, one module per part of the page: pages (the page and its files), project
(classes, photos and the pre-training check), training (start, follow, cancel, resume) and runs
(preview, evaluation, export). Each reads the one `App` of the server through `state`."""

from __future__ import annotations

from fastapi import Request

from ..state import App


def state(request: Request) -> App:
    """The app's state (a FastAPI dependency: `app: App = Depends(state)`)."""
    app: App = request.app.state.diycnn
    return app
