"""serve_app/web/edge.py, the middleware Serve's HTTP proxy runs in front of every app,
driven over raw ASGI with a stand-in for the proxy behind it (no Ray): what reaches
the proxy, and what the client gets back."""

import asyncio
import json
import re

import pytest

from serve_app.web import edge

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


class Proxy:
    """Stands in for Serve's proxy app: records the scope it got and answers with
    `answer` (a list of ASGI messages), or raises `fail`."""

    def __init__(self, answer=None, fail: Exception | None = None):
        self.scope, self.answer, self.fail = None, answer, fail

    async def __call__(self, scope, receive, send):
        self.scope = scope
        if self.fail is not None:
            raise self.fail
        for message in self.answer or ():
            await send(message)


def plain(status: int, text: bytes, *extra) -> list[dict]:
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *extra],
        },
        {"type": "http.response.body", "body": text},
    ]


OK = [
    {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]},
    {"type": "http.response.body", "body": b'{"ok": true}'},
]


def call(proxy: Proxy, headers: list[tuple[bytes, bytes]], limit: int = 1000):
    """-> (status, headers dict, body) of what the client receives."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/face-mask", "headers": headers}
    asyncio.run(edge.EdgeGuard(proxy, max_request_bytes=lambda: limit)(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def error(status, headers, body, code) -> dict:
    """The shared error shape, its id also in the header."""
    payload = json.loads(body)
    assert set(payload) == {"error", "message", "request_id"} and payload["error"] == code, payload
    assert headers[b"x-request-id"].decode() == payload["request_id"]
    assert headers[b"content-type"] == b"application/json"
    return payload


@pytest.mark.parametrize(
    "name",
    [b"x-request-id", b"x-session-id", b"serve_multiplexed_model_id", b"x-request-timeout-seconds", b"user-agent"],
)
def test_a_header_value_that_is_not_utf8_is_a_400_with_a_fresh_id(name):
    proxy = Proxy(OK)
    status, headers, body = call(
        proxy,
        [(name, b"caf\xe9\xff"), (b"x-request-id", b"client-id-1")]
        if name != b"x-request-id"
        else [(name, b"caf\xe9\xff")],
    )
    payload = error(status, headers, body, "bad_header")
    assert status == 400 and name.decode() in payload["message"] and proxy.scope is None  # never reached the proxy
    if name == b"x-request-id":
        assert HEX_ID.match(payload["request_id"])  # the broken id is not echoed
    else:
        assert payload["request_id"] == "client-id-1"


def test_serves_control_headers_are_stripped_and_others_kept():
    proxy = Proxy(OK)
    status, _, _ = call(
        proxy,
        [
            (b"x-request-timeout-seconds", b"0"),
            (b"X-Request-Disconnect-Disabled", b"?1"),
            (b"serve_multiplexed_model_id", b"m"),
            (b"serve-multiplexed-model-id", b"m"),
            (b"x-session-id", b"s"),
            (b"x-serve-router-replica", b"r1"),
            (b"content-type", b"image/png"),
            (b"x-request-id", b"abc-1"),
        ],
    )
    assert status == 200
    assert proxy.scope["headers"] == [(b"content-type", b"image/png"), (b"x-request-id", b"abc-1")]


@pytest.mark.parametrize(
    "given, kept",
    [
        ([b"abc-DEF_1.2:3"], True),
        ([b"a" * 128], True),
        ([b"a" * 129], False),
        ([b"has space"], False),
        ([b"\xc3\xa9t\xc3\xa9"], False),  # valid UTF-8, not printable ASCII
        ([], False),
    ],
)
def test_one_request_id_printable_ascii_else_a_fresh_one(given, kept):
    proxy = Proxy(OK)
    call(proxy, [(b"x-request-id", g) for g in given] + [(b"x-request-id", b"second-id")] * bool(given))
    ids = [v for n, v in proxy.scope["headers"] if n == b"x-request-id"]
    assert len(ids) == 1
    if kept:
        assert ids == given
    elif given:
        assert ids == [b"second-id"]  # the first valid one the client sent
    else:
        assert HEX_ID.match(ids[0].decode())


def test_a_declared_body_over_the_limit_is_refused_before_the_proxy():
    proxy = Proxy(OK)
    status, headers, body = call(proxy, [(b"content-length", str(30 * 2**20).encode())], limit=2**20)
    assert status == 413 and proxy.scope is None
    assert "31457280 bytes" in error(status, headers, body, "too_large")["message"]
    assert call(Proxy(OK), [(b"content-length", b"1000")], limit=1000)[0] == 200


@pytest.mark.parametrize(
    "answer, status, code",
    [
        (
            plain(404, b"Path '/nope' not found. Ping http://127.0.0.1:8000/-/routes for available routes."),
            404,
            "not_found",
        ),
        (plain(408, b"Request abc timed out after 5s."), 408, "request_timeout"),
        (
            plain(
                503,
                b"Request dropped due to backpressure (num_queued_requests=4, max_queued_requests=4).",
                (b"retry-after", b"2"),
            ),
            503,
            "overloaded",
        ),
        (plain(503, b"Deployment is unavailable."), 503, "not_ready"),
        (plain(500, b"Traceback ... secret internals"), 500, "internal"),
    ],
)
def test_the_proxys_plain_text_errors_come_back_in_the_error_shape(answer, status, code):
    got_status, headers, body = call(Proxy(answer), [(b"x-request-id", b"rid-7")])
    payload = error(got_status, headers, body, code)
    assert got_status == status and payload["request_id"] == "rid-7"
    if status == 500:
        assert payload["message"] == "internal error"  # no internals to the client
    else:
        assert payload["message"] == answer[1]["body"].decode()
    if code == "overloaded":
        assert headers[b"retry-after"] == b"2"


def test_json_errors_and_successes_pass_through_untouched():
    app_error = [
        {"type": "http.response.start", "status": 422, "headers": [(b"content-type", b"application/json")]},
        {"type": "http.response.body", "body": b'{"error": "invalid_parameter"}'},
    ]
    assert call(Proxy(app_error), [])[2] == b'{"error": "invalid_parameter"}'
    assert call(Proxy(plain(200, b"success")), [])[:3:2] == (200, b"success")


def test_a_proxy_that_fails_or_gives_no_answer_is_a_500_in_the_shape():
    for proxy in (Proxy(fail=RuntimeError("boom")), Proxy([])):
        status, headers, body = call(proxy, [(b"x-request-id", b"rid-9")])
        assert status == 500 and error(status, headers, body, "internal")["request_id"] == "rid-9"


def test_the_callback_is_what_serves_proxy_accepts():
    from ray.serve._private.http_util import validate_http_proxy_callback_return

    middlewares = validate_http_proxy_callback_return(edge.proxy_middlewares())
    assert [m.cls for m in middlewares] == [edge.EdgeGuard]
    module, _, name = edge.PROXY_CALLBACK.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is edge.proxy_middlewares
