"""What every endpoint's FastAPI app shares: request ids, the one error shape,
per-endpoint metrics, and reading an uploaded file under the byte limit.

Error shape: {"error": code, "message": text, "request_id": id}, with the id also
in the X-Request-ID response header (a client's own X-Request-ID is echoed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import errors
from serve_app.config.settings import settings
from serve_app.web import edge

log = logging.getLogger("facegraph.http")
REQUEST_ID_HEADER = "X-Request-ID"
MULTIPART = "multipart/form-data"
JSON = "application/json"
FORM_OVERHEAD = 64 * 1024  # multipart framing and the form's other fields, on top of the image


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
                "facegraph_requests_total",
                description="Requests by endpoint and status",
                tag_keys=("endpoint", "status"),
            )
            self._faces = metrics.Counter(
                "facegraph_faces_found_total", description="Faces found by endpoint", tag_keys=("endpoint",)
            )

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


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    rid = request_id(request)
    return JSONResponse({"error": code, "message": message, "request_id": rid}, status_code=status, headers=headers)


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


def _incoming_id(scope) -> str:
    """The request's id as the Serve proxy (or the client) sent it; "" when none."""
    raw = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode(), b"")
    return raw.decode("latin-1")


def _is_preflight(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    return (
        scope["type"] == "http"
        and scope["method"] == "OPTIONS"
        and b"origin" in headers
        and b"access-control-request-method" in headers
    )


class LazyCORS:
    """CORS for ALLOWED_ORIGINS, read on the first request (in the replica, never at
    import). No origins configured: no CORS headers at all. A refused preflight is
    403 `cors_refused` in the error shape (Starlette's own answer is a 400 text/plain)."""

    def __init__(self, app):
        self.app = app
        self._cors = None

    async def __call__(self, scope, receive, send):
        if self._cors is None:
            from starlette.middleware.cors import CORSMiddleware

            self._cors = CORSMiddleware(
                self.app,
                allow_origins=list(settings().allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "X-Request-ID"],
                max_age=600,
                expose_headers=["X-Request-ID", "Retry-After"],
            )  # a browser client may read when to retry
        if not _is_preflight(scope):
            return await self._cors(scope, receive, send)
        answer: list[dict] = []

        async def capture(message):
            answer.append(message)

        await self._cors(scope, receive, capture)
        if answer and answer[0]["status"] < 400:
            for message in answer:
                await send(message)
            return
        why = b"".join(m.get("body", b"") for m in answer[1:]).decode("utf-8", "replace").strip()
        incoming = _incoming_id(scope)
        await edge.send_error(
            send,
            403,
            "cors_refused",
            f"CORS preflight refused: {why or 'not allowed'}",
            incoming or uuid.uuid4().hex,
            id_header=not incoming,
        )


class GuardError(StarletteHTTPException):
    """A refusal raised while the body streams in (over the limit, too slow). An
    HTTPException, so FastAPI passes it through its body parsing unchanged, with our code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, message)
        self.code = code


def body_media_types(app: FastAPI) -> dict[tuple[str, str], str]:
    """{(method, path): the media type its body is sent as} for every route of `app`
    that takes a body, from the app's own OpenAPI document (which sees the routes a
    Serve ingress class adds as well)."""
    found = {}
    for path, methods in app.openapi().get("paths", {}).items():
        for method, operation in methods.items():
            content = (operation.get("requestBody") or {}).get("content") or {}
            if content:
                found[(method.upper(), path)] = MULTIPART if MULTIPART in content else next(iter(content))
    return found


class RequestGuard:
    """ASGI, in every app, before any body is parsed (limits read per request, from
    settings, never at import):
    - a request to a route that takes a body, with another Content-Type than the route's
      (body_media_types) -> 415 `unsupported_media_type`; with an empty one -> 400 `empty_body`;
    - a declared Content-Length over `limit()` -> 413 at once; a body that streams in
      over it (chunked) -> 413 when it passes the limit;
    - a body that has not fully arrived BODY_TIMEOUT seconds after the request started
      -> 408 `body_timeout` (a client trickling a body cannot hold a replica slot)."""

    def __init__(self, app, api: FastAPI, limit):
        self.app, self.api, self.limit = app, api, limit
        self._media_types: dict[tuple[str, str], str] | None = None

    def _media_type(self, scope) -> str | None:
        """The body media type of the route this request goes to (None: no body, or no route)."""
        if self._media_types is None:  # on the first request: every route is there by then
            self._media_types = body_media_types(self.api)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return self._media_types.get((scope["method"], path))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        limit = self.limit()
        declared = headers.get(b"content-length", b"").strip()
        declared = int(declared) if declared.isdigit() else None
        refusal, expected = None, self._media_type(scope)
        if expected is not None:
            given = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
            if given != expected:
                refusal = (
                    415,
                    "unsupported_media_type",
                    f"send the body as {expected}, not {given or 'no Content-Type'}",
                )
            elif declared == 0:
                refusal = (400, "empty_body", f"the request has no body; send {expected}")
        if refusal is None and declared is not None and declared > limit:
            refusal = (413, "too_large", f"the request body is {declared} bytes; the limit is {limit}")
        if refusal is not None:
            rid = (scope.get("state") or {}).get("request_id") or _incoming_id(scope) or uuid.uuid4().hex
            return await edge.send_error(send, *refusal, rid, id_header=False)
        await self.app(scope, self._guarded_receive(receive, limit), send)

    @staticmethod
    def _guarded_receive(receive, limit: int):
        timeout = settings().body_timeout_s
        deadline = time.monotonic() + timeout
        seen, done = 0, False

        async def guarded():
            nonlocal seen, done
            if done:  # after the body: waiting for a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise GuardError(408, "body_timeout", f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > limit:
                    raise GuardError(413, "too_large", f"the request body is over the limit of {limit} bytes")
            else:
                done = True
            return message

        return guarded


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    # Serve runs this in each ingress replica as it starts: from then on our log lines
    # go to the replica's log with the request id (deployments/serving.py).
    from deployments.serving import log_to_replica_log

    log_to_replica_log()
    yield


def upload_body_limit() -> int:
    """The largest multipart body: one image at the byte limit, plus the form's framing
    and fields, never over MAX_REQUEST_BYTES."""
    s = settings()
    return min(s.max_request_bytes, s.max_image_bytes + FORM_OVERHEAD)


def create_app(
    endpoint: str, title: str, *, body_limit: Callable[[], int] = upload_body_limit
) -> tuple[FastAPI, EndpointMetrics]:
    """The app with the shared request id, error shape, metrics, CORS and request guard.
    `body_limit`: its largest request body, in bytes (read per request)."""
    app = FastAPI(title=title, lifespan=_lifespan)
    # Added innermost first: CORS outermost, then request id + metrics, the route
    # prefix fix, and the guard just outside the routes (it matches their paths).
    app.add_middleware(RequestGuard, api=app, limit=body_limit)
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

    app.add_middleware(LazyCORS)

    @app.exception_handler(errors.ApiError)
    async def _api_error(request: Request, exc: errors.ApiError):
        return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        bad_json = next((e for e in problems if e.get("type") == "json_invalid"), None)
        if bad_json is not None:  # the body is not JSON at all: the client's syntax, not a parameter
            where = bad_json.get("loc", ("body", "?"))[-1]
            why = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(
                request, 400, "malformed_json", f"the body is not valid JSON: {why} (at character {where})"
            )
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in problems):
            return error_response(request, 400, "empty_body", "the request has no body")
        parts = []
        for e in problems:
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form")]
            parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
        return error_response(request, 422, "invalid_parameter", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = getattr(exc, "code", None) or {
            400: "malformed_body",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):
        log.exception("unhandled error, request %s", request_id(request))
        return error_response(request, 500, "internal", "internal error")

    return app, endpoint_metrics


async def read_upload(upload: UploadFile) -> bytes:
    """The uploaded file's bytes, refusing more than the byte limit while reading."""
    limit = settings().max_image_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise errors.too_large(f"the image is over the limit of {limit} bytes")
    return data
