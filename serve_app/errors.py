"""The one error type every layer raises for a client-caused failure.

The HTTP layer (serve_app/web/http.py) turns it into the shared JSON error shape
`{"error": code, "message": text, "request_id": id}`; batch jobs turn it into an
error row. Nothing here knows about FastAPI.
"""

from __future__ import annotations

import math


class ApiError(Exception):
    """A failure with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})  # extra response headers (Retry-After)

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_input(message: str, code: str = "bad_input") -> ApiError:
    return ApiError(400, code, message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def unsupported_format(message: str) -> ApiError:
    return ApiError(415, "unsupported_format", message)


def invalid_parameter(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_parameter", f"{field}: {message}")


def not_ready(message: str) -> ApiError:
    return ApiError(503, "not_ready", message)


def overloaded(message: str, retry_after_s: float | None) -> ApiError:
    """503 with Retry-After (whole seconds, at least 1): the server is at capacity and
    refuses at once rather than queueing work it cannot finish in time."""
    seconds = max(1, math.ceil(retry_after_s or 1))
    return ApiError(503, "overloaded", message, headers={"Retry-After": str(seconds)})


def upstream_timeout(message: str) -> ApiError:
    return ApiError(504, "upstream_timeout", message)
