"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import socket

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok(resp) -> dict:
    """A 200 JSON answer whose request id is in the header and the body alike."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["x-request-id"] == body["request_id"]
    return body


def assert_error(resp, status: int, code: str | None = None) -> dict:
    """The one error shape: {error, message, request_id}, the id also in the header."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["request_id"] and resp.headers["x-request-id"] == body["request_id"]
    if code:
        assert body["error"] == code, body
    return body


def iou(a, b) -> np.ndarray:
    """IoU of every box in a [N,4] against every box in b [M,4] -> [N,M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)
