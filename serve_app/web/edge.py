"""The HTTP edge: a pure ASGI middleware that Ray Serve's HTTP proxy runs in front of
every application, for what has to be settled before the proxy itself reads a request.

Installed through Serve's proxy callback, in the environment of every Ray node (the
proxies run on each node): RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_app.web.edge:proxy_middlewares
(PROXY_CALLBACK below; scripts/serve.sh, the Dockerfile, cluster.yaml and the tests set it).

What it does, in order:
- a header value that is not valid UTF-8 -> 400 `bad_header` (the proxy decodes several
  strictly and would answer 500 text/plain without a request id);
- Serve's per-request control headers are the operator's, not the client's: stripped
  (`x-request-timeout-seconds` and `x-request-disconnect-disabled` would let any client
  shorten or switch off the operator's timeout; the routing ones would let it pick replicas);
- X-Request-ID: kept when it is 1-128 printable ASCII characters, else replaced by a
  fresh id; one id per request, so body and header always agree;
- a declared Content-Length over MAX_REQUEST_BYTES -> 413 at once, before any body;
- the proxy's own plain-text errors (404 no such route, 503 at capacity, 408, 500) are
  rewritten into the error shape, keeping their status and headers (Retry-After).

The error shape is the one every app uses: {"error": code, "message": text,
"request_id": id}, the id also in X-Request-ID. Nothing here imports Ray or FastAPI.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid

log = logging.getLogger("facegraph.edge")

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "serve_app.web.edge:proxy_middlewares"
REQUEST_ID = b"x-request-id"
VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
MAX_ERROR_TEXT = 64 * 1024  # the proxy's own error bodies are a line; never buffer more
CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    429: "too_many_requests",
    500: "internal",
    502: "bad_gateway",
    503: "not_ready",
    504: "upstream_timeout",
}


def fresh_request_id() -> str:
    return uuid.uuid4().hex


def error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps({"error": code, "message": message, "request_id": request_id}).encode()


async def send_error(
    send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: list[tuple[bytes, bytes]] = (),
    id_header: bool = True,
) -> None:
    """One error response in the shared shape, over raw ASGI. `id_header`: add the
    X-Request-ID header (not where a layer outside adds it: Serve's proxy, the app's
    request-id middleware)."""
    body = error_body(code, message, request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *([(REQUEST_ID, request_id.encode())] if id_header else []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _normalised(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


def control_headers() -> frozenset[bytes]:
    """Serve's per-request control headers, normalised (lower case, `-` for `_`), the
    way Serve itself matches them."""
    session = os.environ.get("RAY_SERVE_SESSION_ID_HEADER_KEY", "x-session-id").encode()
    return frozenset(
        _normalised(n)
        for n in (
            b"x-request-timeout-seconds",
            b"x-request-disconnect-disabled",
            b"serve_multiplexed_model_id",
            session,
        )
    )


def is_control_header(name: bytes, control: frozenset[bytes]) -> bool:
    name = _normalised(name)
    return name in control or name.startswith(b"x-serve-router-")


def clean_headers(
    headers: list[tuple[bytes, bytes]], control: frozenset[bytes]
) -> tuple[list[tuple[bytes, bytes]], str | None, str]:
    """(headers to pass on, the first header whose value is not UTF-8 or None, the
    request id). Control headers are dropped; exactly one X-Request-ID is kept: the
    client's first valid one, else a fresh one."""
    kept, bad, rid = [], None, None
    for name, value in headers:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            bad = bad or name.decode("latin-1")
            continue
        if is_control_header(name, control):
            continue
        if name.lower() == REQUEST_ID:
            if rid is None and VALID_REQUEST_ID.fullmatch(value):
                rid = value.decode("ascii")
            continue
        kept.append((name, value))
    rid = rid or fresh_request_id()
    kept.append((REQUEST_ID, rid.encode()))
    return kept, bad, rid


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def error_code(status: int, headers: list[tuple[bytes, bytes]]) -> str:
    if status == 503 and any(n.lower() == b"retry-after" for n, _ in headers):
        return "overloaded"  # Serve's queue limit, as the ingress names it
    return CODES.get(status, "http_error")


class EdgeGuard:
    """The proxy-level ASGI middleware (see the module docstring)."""

    def __init__(self, app, max_request_bytes=None):
        self.app = app
        self._limit = max_request_bytes  # a callable; default: settings().max_request_bytes
        self._control = control_headers()

    def max_request_bytes(self) -> int:
        if self._limit is not None:
            return self._limit()
        from serve_app.config.settings import settings

        return settings().max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers, bad, rid = clean_headers(list(scope.get("headers") or ()), self._control)
        if bad is not None:
            return await send_error(send, 400, "bad_header", f"the value of header {bad} is not valid UTF-8", rid)
        limit, declared = self.max_request_bytes(), declared_length(headers)
        if declared is not None and declared > limit:
            return await send_error(
                send, 413, "too_large", f"the request body is {declared} bytes; the limit is {limit}", rid
            )
        scope = dict(scope, headers=headers)
        await self._call_rewriting_errors(scope, receive, send, rid)

    async def _call_rewriting_errors(self, scope, receive, send, rid: str):
        held: dict | None = None  # a plain-text error's start message, while its body is read
        text, started = b"", False

        async def rewrite(message):
            nonlocal held, text, started
            kind = message["type"]
            if kind == "http.response.start":
                status, headers = message["status"], list(message.get("headers") or ())
                ctype = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if status >= 400 and not ctype.lower().startswith(b"application/json"):
                    held = message
                    return
                started = True
                return await send(message)
            if kind == "http.response.body" and held is not None:
                text = (text + message.get("body", b""))[:MAX_ERROR_TEXT]
                if not message.get("more_body", False):
                    start, held = held, None
                    await self._send_rewritten(send, start, text, rid)
                    started = True
                return
            return await send(message)

        try:
            await self.app(scope, receive, rewrite)
        except Exception:
            if started:
                raise
            log.exception("request %s failed in the proxy", rid)
            return await self._send_quietly(send, 500, "internal", "internal error", rid)
        if not started:  # the proxy gave up without an answer (it does for some 500s)
            await self._send_quietly(send, 500, "internal", "internal error", rid)

    @staticmethod
    async def _send_rewritten(send, start: dict, text: bytes, rid: str):
        status = start["status"]
        headers = [
            (n, v)
            for n, v in start.get("headers") or ()
            if n.lower() not in (b"content-type", b"content-length", REQUEST_ID)
        ]
        message = "internal error" if status == 500 else (text.decode("utf-8", "replace").strip() or f"HTTP {status}")
        await send_error(send, status, error_code(status, headers), message, rid, headers)

    @staticmethod
    async def _send_quietly(send, status, code, message, rid):
        try:
            await send_error(send, status, code, message, rid)
        except Exception:  # the client is gone; nothing left to tell it
            log.debug("could not send the error for request %s", rid, exc_info=True)


def proxy_middlewares() -> list:
    """The proxy callback: Serve calls it in every HTTP proxy and wraps its ASGI app in
    what it returns (the first entry outermost of ours; Serve's request-id middleware
    stays inside)."""
    from starlette.middleware import Middleware

    log.info("FaceGraph edge middleware installed in the Serve proxy")
    return [Middleware(EdgeGuard)]
