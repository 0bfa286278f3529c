"""The web app's guards, in one place (threat model: a project or run folder someone else made must
be safe to open, and no web page the user visits may act on the app):

* it answers only Host headers naming this machine (localhost names, the bound address, its own
  host names and addresses): no DNS rebinding;
* every request that changes something must carry the `X-Diycnn` header, which a foreign web page
  cannot send without a CORS preflight this server never grants (no cross-site request forgery);
* every response carries a Content-Security-Policy: the page's own script only; run folders
  (`/runs/...`) in a sandbox (an opaque origin without network access); photos as images only;
* a request body over its limit is refused (413) before it is stored anywhere; JSON bodies are
  checked for size, syntax and depth.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from .project import MAX_UPLOAD_BYTES, ProjectError

CSRF_HEADER = "x-diycnn"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "testserver"}
# The page: its own script and style files only (no inline script), images from the API, data:
# and blob: (previews), the webcam stream, requests to this server only.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
# Reports under /runs are self-contained pages (inline style and script, data: images). Whatever a
# run folder holds, it runs sandboxed: an opaque origin that cannot read the API or fetch anything.
RUNS_CSP = ("sandbox allow-scripts allow-popups; default-src 'none'; img-src data: blob:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'")
# A photo is an image, never a document.
PHOTO_CSP = "sandbox; default-src 'none'"
UPLOAD_BATCH = 16  # photos per upload request: static/index.html sends them in batches of this many
JSON_LIMIT = 1024 * 1024


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


def _as_host(address: str) -> str:
    """How an address appears in a Host header (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _interface_addresses() -> set[str]:
    """IPv4 addresses of this machine's network interfaces (Linux; empty elsewhere)."""
    found: set[str] = set()
    try:
        import fcntl  # noqa: PLC0415 (POSIX only: the app runs elsewhere without it)
        import struct  # noqa: PLC0415 (with fcntl)

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:  # SIOCGIFADDR: the interface's address, asked of the kernel (nothing is sent)
                    raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
                    found.add(socket.inet_ntoa(raw[20:24]))
                except OSError:
                    continue
    except (ImportError, OSError, AttributeError):
        pass
    return found


def allowed_hosts(host: str) -> set[str]:
    """Host header values (without port) the app answers: localhost names, and when bound to
    another address, that address and this machine's own host names and addresses. A DNS name
    an attacker points at this machine (DNS rebinding) is none of these."""
    names = set(LOOPBACK_HOSTS)
    if is_loopback(host):
        return names
    names.add(_as_host(host.lower()))
    for name in {socket.gethostname(), socket.getfqdn()}:
        if not name:
            continue
        names.add(name.lower())
        try:
            names.update(_as_host(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    names.update(_interface_addresses())
    names.discard("0.0.0.0")
    names.discard("[::]")
    return names


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


def install(api: FastAPI, host: str) -> set[str]:
    """Put the guards in front of `api` (bound to `host`); returns the host names it answers."""
    hosts = allowed_hosts(host)

    @api.middleware("http")
    async def safety(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        hostname = host_name(request.headers.get("host") or "").lower()
        if hostname not in hosts:
            return JSONResponse({"error": f"Host {hostname!r} refused: this server answers only to this machine's "
                                          "own names and addresses (DNS rebinding protection)."}, status_code=403)
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"error": "Refused: requests that change the project must come from the diycnn "
                                          f"page (missing {CSRF_HEADER} header)."}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        path = request.url.path
        csp = RUNS_CSP if path.startswith("/runs/") else PHOTO_CSP if "/photos/" in path else PAGE_CSP
        response.headers.setdefault("Content-Security-Policy", csp)
        return response

    api.add_middleware(BodyLimit)  # outermost: runs before anything reads the body
    return hosts


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is {}), or ProjectError saying what is wrong."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ProjectError("The request body must be JSON.") from None
    except RecursionError:  # e.g. 100,000 '[': Python's parser recurses
        raise ProjectError("The request body is JSON nested too deeply.") from None
    if not isinstance(body, dict):
        raise ProjectError("The request body must be a JSON object.")
    return body
