"""The one error type every layer raises for a client-caused failure.

The HTTP layer (serve_app/http.py) turns it into the shared JSON error shape
`{"error": code, "message": text, "request_id": id}`; batch jobs turn it into an
error row. Nothing here knows about FastAPI.
"""

from __future__ import annotations


class ApiError(Exception):
    """A failure with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

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


def upstream_timeout(message: str) -> ApiError:
    return ApiError(504, "upstream_timeout", message)
