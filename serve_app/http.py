"""What every endpoint's FastAPI app shares: request ids, the one error shape,
per-endpoint metrics, and reading an uploaded file under the byte limit.

Error shape: {"error": code, "message": text, "request_id": id}, with the id also
in the X-Request-ID response header (a client's own X-Request-ID is echoed).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import errors
from serve_app.settings import settings

log = logging.getLogger("facegraph.http")
REQUEST_ID_HEADER = "X-Request-ID"


class EndpointMetrics:
    """Counters for one endpoint, created lazily inside the replica (not at import)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._requests = None
        self._faces = None

    def _ensure(self) -> None:
        if self._requests is None:
            from ray.serve import metrics

            self._requests = metrics.Counter(
                "facegraph_requests_total", description="Requests by endpoint and status",
                tag_keys=("endpoint", "status"))
            self._faces = metrics.Counter(
                "facegraph_faces_found_total", description="Faces found by endpoint",
                tag_keys=("endpoint",))

    def request(self, status: int) -> None:
        try:
            self._ensure()
            self._requests.inc(tags={"endpoint": self.endpoint, "status": str(status)})
        except Exception:  # metrics must never fail a request
            log.debug("metrics unavailable", exc_info=True)

    def faces(self, n: int) -> None:
        try:
            self._ensure()
            if n:
                self._faces.inc(n, tags={"endpoint": self.endpoint})
        except Exception:
            log.debug("metrics unavailable", exc_info=True)


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    rid = request_id(request)
    return JSONResponse({"error": code, "message": message, "request_id": rid}, status_code=status)


class _PrefixRootIsIndex:
    """ASGI middleware: a request for exactly the app's route prefix (POST /v1/face-mask)
    is served by the app's "/" route instead of a 307 redirect to the trailing slash,
    which most clients do not follow for POST."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            root = scope.get("root_path", "")
            if root and scope["path"] == root:
                scope = dict(scope, path=root + "/", raw_path=(root + "/").encode())
        await self.app(scope, receive, send)


class LazyCORS:
    """CORS for ALLOWED_ORIGINS, read on the first request (in the replica, never at
    import). No origins configured: no CORS headers at all."""

    def __init__(self, app):
        self.app = app
        self._cors = None

    async def __call__(self, scope, receive, send):
        if self._cors is None:
            from starlette.middleware.cors import CORSMiddleware

            self._cors = CORSMiddleware(
                self.app, allow_origins=list(settings().allowed_origins), allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID"])
        await self._cors(scope, receive, send)


class BodyLimit:
    """Refuse a body over `limit()` bytes with the shared 413 shape: at once from its
    declared Content-Length, else while it streams in (the limit is read per request,
    from settings, not at import)."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, f"the request body is {int(declared)} bytes; the limit is {limit}")
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise errors.too_large(f"the request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(scope, send, message: str):
        rid = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        body = JSONResponse({"error": "too_large", "message": message, "request_id": rid or uuid.uuid4().hex},
                            status_code=413)
        await body(scope, None, send)


def create_app(endpoint: str, title: str) -> tuple[FastAPI, EndpointMetrics]:
    app = FastAPI(title=title)
    app.add_middleware(_PrefixRootIsIndex)
    endpoint_metrics = EndpointMetrics(endpoint)

    @app.middleware("http")
    async def _request_id_and_metrics(request: Request, call_next):
        # Serve's proxy forwards the client's X-Request-ID (or one it made up) and puts
        # the same id on the response; we use that id so body and header agree, and set
        # the header ourselves only when no proxy did (the app run outside Serve).
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request.state.request_id = incoming or uuid.uuid4().hex
        try:
            response = await call_next(request)
        except Exception:  # last resort: still the error shape, never a bare 500 page
            log.exception("unhandled error, request %s", request.state.request_id)
            response = error_response(request, 500, "internal", "internal error")
        if not incoming:
            response.headers[REQUEST_ID_HEADER] = request.state.request_id
        endpoint_metrics.request(response.status_code)
        return response

    @app.exception_handler(errors.ApiError)
    async def _api_error(request: Request, exc: errors.ApiError):
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")]
            parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
        return error_response(request, 422, "invalid_parameter", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):
        log.exception("unhandled error, request %s", request_id(request))
        return error_response(request, 500, "internal", "internal error")

    return app, endpoint_metrics


def check_content_length(request: Request) -> None:
    """Refuse an oversize body from its header, before reading it."""
    limit = settings().max_image_bytes
    raw = request.headers.get("content-length")
    # Multipart framing adds a little on top of the file itself.
    if raw and raw.isdigit() and int(raw) > limit + 64 * 1024:
        raise errors.too_large(f"the request body is {raw} bytes; the image limit is {limit}")


async def read_upload(upload: UploadFile) -> bytes:
    """The uploaded file's bytes, refusing more than the byte limit while reading."""
    limit = settings().max_image_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise errors.too_large(f"the image is over the limit of {limit} bytes")
    return data
