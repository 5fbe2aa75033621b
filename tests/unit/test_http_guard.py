"""serve_app/web/http.py's request guard, CORS and error statuses on a small app built by
create_app (the same stack every endpoint has), in process: the status says what went
wrong, in the shared error shape, before any body is parsed where it can be."""

# No `from __future__ import annotations`: FastAPI must see the routes' real annotations.

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serve_app.apps.ingress import ImageUpload, upload_form
from serve_app.config.spec import from_form
from serve_app.pipelines.face_mask import FaceMaskParams
from tests.helpers import assert_error

LIMIT = 1000


class Body(BaseModel):
    n: int


MaskForm = upload_form(FaceMaskParams, ("mask",), "mask")


@pytest.fixture
def env(settings_env):
    settings_env(ALLOWED_ORIGINS="https://app.example", BODY_TIMEOUT="0.5")
    return settings_env


@pytest.fixture
def app(env):
    from serve_app.web.http import create_app

    app, _ = create_app("test", "test", body_limit=lambda: LIMIT)

    @app.post("/json")
    async def take_json(body: Body) -> dict:
        return {"n": body.n}

    @app.post("/form")
    async def take_form(form: MaskForm, image: ImageUpload) -> dict:
        return {**from_form(FaceMaskParams, form).model_dump(), "bytes": len(await image.read())}

    @app.post("/nobody")
    async def nobody() -> dict:
        return {"ok": True}

    return app


@pytest.fixture
def client(app):
    return TestClient(app)


def test_wrong_content_type_is_415_empty_is_400_malformed_json_is_400(client):
    assert_error(client.post("/json", data={"n": "1"}), 415, "unsupported_media_type")
    assert_error(client.post("/json", content=b'{"n": 1}'), 415, "unsupported_media_type")  # no Content-Type
    assert_error(client.post("/form", json={"n": 1}), 415, "unsupported_media_type")
    assert_error(client.post("/json", content=b"", headers={"content-type": "application/json"}), 400, "empty_body")
    assert_error(
        client.post("/json", content=b"null", headers={"content-type": "application/json"}), 422, "invalid_parameter"
    )  # JSON, just not an object
    status, body = asgi(client.app, "/json", [], b"application/json")  # chunked, and nothing in it
    assert (status, body["error"]) == (400, "empty_body")
    body = assert_error(
        client.post("/json", content=b'{"n": 1', headers={"content-type": "application/json"}), 400, "malformed_json"
    )
    assert "not valid JSON" in body["message"]
    assert_error(
        client.post("/form", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=x"}),
        400,
        "malformed_body",
    )
    # What is well-formed but wrong stays 422, naming the field.
    assert "n:" in assert_error(client.post("/json", json={"n": "x"}), 422, "invalid_parameter")["message"]
    assert client.post("/json", json={"n": 3}, headers={"content-type": "application/json; charset=utf-8"}).json() == {
        "n": 3
    }
    # A route without a body is not held to a content type; unknown routes stay 404.
    assert client.post("/nobody").json() == {"ok": True}
    assert_error(client.post("/nope", content=b"x"), 404, "not_found")


def test_a_declared_body_over_the_limit_is_413_at_once(client):
    resp = client.post(
        "/json", content=b"{}", headers={"content-type": "application/json", "content-length": str(30 * 2**20)}
    )
    assert "31457280 bytes" in assert_error(resp, 413, "too_large")["message"]


def asgi(app, path: str, chunks: list[bytes], ctype: bytes, wait_forever: bool = False):
    """Drive the app over raw ASGI with a body in `chunks` (no Content-Length: chunked),
    optionally never finishing it. -> (status, json body)."""
    sent = []

    async def run():
        pending = list(chunks)

        async def receive():
            if pending:
                return {"type": "http.request", "body": pending.pop(0), "more_body": True}
            if wait_forever:
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", ctype)],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("test", 80),
            "client": ("test", 1),
        }
        await asyncio.wait_for(app(scope, receive, send), 10)

    asyncio.run(run())
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_streamed_body_over_the_limit_is_413_and_a_trickling_one_408(app):
    status, body = asgi(app, "/json", [b" " * 600, b" " * 600], b"application/json")
    assert (status, body["error"]) == (413, "too_large")
    status, body = asgi(app, "/json", [b'{"n":'], b"application/json", wait_forever=True)
    assert (status, body["error"]) == (408, "body_timeout") and "0.5 s" in body["message"]
    status, body = asgi(app, "/form", [b"--x\r\n"], b"multipart/form-data; boundary=x", wait_forever=True)
    assert (status, body["error"]) == (408, "body_timeout")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("yes", None),
        ("on", None),
        ("2", None),
        ("t", None),
        ("", False),
    ],
)  # an empty field is no field (FastAPI): the default
def test_form_booleans_are_true_false_1_or_0(client, value, expected):
    resp = client.post("/form", data={"include_hair": value}, files={"image": ("a.png", b"abc")})
    if expected is None:
        assert "include_hair" in assert_error(resp, 422, "invalid_parameter")["message"]
    else:
        assert resp.status_code == 200 and resp.json()["include_hair"] is expected


def test_cors_preflight_allowed_and_refused_in_the_error_shape(client):
    def preflight(origin, method="POST"):
        return client.options("/json", headers={"Origin": origin, "Access-Control-Request-Method": method})

    allowed = preflight("https://app.example")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = assert_error(preflight("https://evil.example"), 403, "cors_refused")
    assert "origin" in refused["message"]
    assert_error(preflight("https://app.example", "DELETE"), 403, "cors_refused")
    # An error answer to an allowed origin still carries the CORS header (the browser can read it).
    resp = client.post(
        "/json", content=b"", headers={"content-type": "application/json", "Origin": "https://app.example"}
    )
    assert resp.status_code == 400 and resp.headers["access-control-allow-origin"] == "https://app.example"
