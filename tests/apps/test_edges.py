"""Graph tests of the HTTP edges, as a hostile client meets them: raw HTTP (http.client,
sockets) against the Serve proxy with FaceGraph's edge middleware installed
(tests/conftest.py sets RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, as scripts/serve.sh
does) and the apps on the session's model tier. tests/conftest.py's small edge limits:
MAX_REQUEST_BYTES 16 MiB, BODY_TIMEOUT 5 s, MAX_REQUEST_PIXELS 20 MP, MAX_IMAGE_BYTES 3 MB."""

import base64
import http.client
import io
import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.images import encode

pytestmark = pytest.mark.graph

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
MASK = "/v1/face-mask"
EXTRACT = "/extract-faces"
# Every route prefix of serve_config.yaml, with a method that route answers; the edge
# runs before routing, so the undeployed ones (anonymize, face_mask_sam2, mask_augment)
# show it too.
ENDPOINTS = [
    ("POST", EXTRACT),
    ("GET", "/health"),
    ("POST", MASK),
    ("GET", MASK + "/ready"),
    ("GET", "/healthz"),
    ("POST", "/v1/face-mask-sam2"),
    ("POST", "/v1/mask-augment"),
    ("POST", "/v1/anonymize"),
]


@pytest.fixture(scope="module")
def base(serve_url, model_tier):
    """face_extract (JSON) and face_mask (multipart) on the shared model tier."""
    from ray import serve

    from serve_app.apps import face_extract, face_mask

    serve.run(face_extract.build(face_extract.FaceExtractArgs()), name=face_extract.SPEC.name, route_prefix="/")
    serve.run(face_mask.build(face_mask.FaceMaskArgs()), name=face_mask.SPEC.name, route_prefix=MASK)
    yield serve_url
    serve.delete(face_mask.SPEC.name)
    serve.delete(face_extract.SPEC.name)


def request(base: str, method: str, path: str, body: bytes = b"", headers: list | None = None, timeout=60):
    """One raw request (header values may be any bytes). -> (status, headers, body)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body or method == "POST":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def error(status, headers, body, expected_status, code) -> dict:
    """The shared error shape, its id also in X-Request-ID."""
    assert status == expected_status, body
    assert headers["content-type"].startswith("application/json"), (headers, body)
    payload = json.loads(body)
    assert set(payload) == {"error", "message", "request_id"} and payload["error"] == code, payload
    assert headers["x-request-id"] == payload["request_id"]
    return payload


def jpeg_b64(photos_dir, name: str) -> str:
    return base64.b64encode((photos_dir / name).read_bytes()).decode()


def extract(base, images, **params):
    body = json.dumps({"images": images, **params}).encode()
    return request(base, "POST", EXTRACT, body, [("Content-Type", "application/json")])


def multipart(fields: dict[str, bytes | str], boundary="edgetestboundary") -> tuple[bytes, str]:
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n".encode()
                + value
                + b"\r\n"
            )
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ---- headers ----


@pytest.mark.parametrize(
    "header", ["X-Request-ID", "x-session-id", "serve_multiplexed_model_id", "x-request-timeout-seconds"]
)
def test_a_header_that_is_not_utf8_is_a_json_400_with_a_fresh_id_on_every_endpoint(base, header):
    for method, path in ENDPOINTS:
        status, headers, body = request(base, method, path, headers=[(header, b"\xff\xfe caf\xe9")])
        payload = error(status, headers, body, 400, "bad_header")
        assert header.lower() in payload["message"].lower() and HEX_ID.match(payload["request_id"]), path
    # The same request with a clean value reaches the app.
    status, _, _ = request(base, "GET", "/health", headers=[(header, b"1")])
    assert status == 200


def test_a_client_cannot_shorten_or_switch_off_the_timeout(base, photos_dir):
    """Honoured, x-request-timeout-seconds 0.001 would get a plain-text 408 from the
    proxy; stripped at the edge, the request runs to its answer."""
    body = json.dumps({"images": [{"image_base64": jpeg_b64(photos_dir, "lfw_Rob_Lowe_0001.jpg")}]}).encode()
    status, _, reply = request(
        base,
        "POST",
        EXTRACT,
        body,
        [
            ("Content-Type", "application/json"),
            ("x-request-timeout-seconds", "0.001"),
            ("x-request-disconnect-disabled", "?1"),
            ("serve_multiplexed_model_id", "pick-me"),
        ],
    )
    assert status == 200 and json.loads(reply)["unique_faces"] == 1


def test_the_proxys_own_errors_are_in_the_error_shape(base):
    payload = error(*request(base, "GET", "/v1/no-such-endpoint"), 404, "not_found")
    assert HEX_ID.match(payload["request_id"])
    error(*request(base, "GET", "/v1/no-such-endpoint", headers=[("X-Request-ID", "mine-1")]), 404, "not_found")
    status, headers, _ = request(base, "GET", "/v1/no-such-endpoint", headers=[("X-Request-ID", "mine-1")])
    assert headers["x-request-id"] == "mine-1"


# ---- CORS ----


@pytest.mark.parametrize("path", [EXTRACT, MASK])
def test_cors_preflight_allowed_and_refused_in_the_error_shape(base, path):
    def preflight(origin, method="POST"):
        return request(
            base,
            "OPTIONS",
            path,
            headers=[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", "content-type"),
            ],
        )

    status, headers, _ = preflight("https://app.example")  # tests/conftest.py's ALLOWED_ORIGINS
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"] and headers["x-request-id"]
    status, headers, body = preflight("https://evil.example")
    assert "origin" in error(status, headers, body, 403, "cors_refused")["message"]
    assert "access-control-allow-origin" not in headers
    error(*preflight("https://app.example", "DELETE"), 403, "cors_refused")


# ---- cheap load: small images are cheap, a request has a work budget ----


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 128, 128)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_hundred_1x1_images_are_cheap(base):
    """About 10 KB of request: each 1x1 image runs on a 32x32 detector input, not a
    640x640 one (1/400 of the work; deployments/retinaface/model.py input_side)."""
    images = [{"image_base64": tiny_png()}] * 100
    extract(base, images[:1])  # warm
    start = time.perf_counter()
    status, _, body = extract(base, images)
    took = time.perf_counter() - start
    reply = json.loads(body)
    assert status == 200 and reply["images_processed"] == 100 and reply["faces"] == []
    print(f"\n100 images of 1x1 ({len(json.dumps(images)) / 1024:.0f} KB): {took * 1000:.0f} ms")
    assert took < 10


def test_a_request_over_its_pixel_budget_is_413_and_smaller_ones_pass(base):
    """MAX_REQUEST_PIXELS (20 MP here) over all images, charged from each header before
    decoding: three 3000x2500 images (22.5 MP) are refused, two (15 MP) are not."""
    big = base64.b64encode(encode(Image.new("RGB", (3000, 2500), (90, 90, 90)), "PNG")).decode()
    start = time.perf_counter()
    payload = error(*extract(base, [{"image_base64": big}] * 3), 413, "over_budget")
    assert "20000000 pixels" in payload["message"] and time.perf_counter() - start < 30
    status, _, body = extract(base, [{"image_base64": big}] * 2)
    assert status == 200 and json.loads(body)["images_processed"] == 2


# ---- slow or lying bodies ----


def raw(base: str, head: bytes, trickle: bytes = b"", every: float = 0.0, timeout: float = 30.0):
    """Send `head` (request line and headers), then `trickle` a byte every `every`
    seconds until the server answers. -> (status, headers, body, seconds to the answer)."""
    url = urlsplit(base)
    start = time.perf_counter()
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.settimeout(every or timeout)
        for byte in trickle:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            sock.sendall(bytes([byte]))
        sock.settimeout(timeout)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        took = time.perf_counter() - start
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), took


@pytest.mark.parametrize(
    "path, ctype, length",
    [
        (EXTRACT, "application/json", 30 * 2**20),  # over MAX_REQUEST_BYTES: the proxy's edge refuses it
        (MASK, "multipart/form-data; boundary=x", 30 * 2**20),
        (MASK, "multipart/form-data; boundary=x", 4 * 2**20),  # under it, over this app's upload limit: the app's guard
    ],
)
def test_a_declared_body_over_the_limit_is_refused_at_once(base, path, ctype, length):
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    status, headers, body, took = raw(base, head.encode(), timeout=15)  # and no body at all
    assert f"{length} bytes" in error(status, headers, body, 413, "too_large")["message"]
    assert took < 5, took


@pytest.mark.parametrize(
    "path, ctype, start",
    [
        (EXTRACT, "application/json", b'{"images": [{"image_base64": "'),
        (
            MASK,
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n',
        ),
    ],
)
def test_a_trickling_body_times_out(base, path, ctype, start):
    """A well-formed start, then a byte every half second: the whole body must arrive
    within BODY_TIMEOUT (5 s here), so the request cannot hold a replica's slot."""
    trickle = start + b"A" * 900
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {ctype}\r\nContent-Length: {len(trickle)}\r\n\r\n"
    status, headers, body, took = raw(base, head.encode(), trickle=trickle, every=0.5)
    assert "did not arrive within 5 s" in error(status, headers, body, 408, "body_timeout")["message"]
    assert 4.5 < took < 15, took


# ---- statuses that say what went wrong ----


def test_empty_malformed_and_wrong_content_type(base):
    error(*request(base, "POST", EXTRACT, b"", [("Content-Type", "application/json")]), 400, "empty_body")
    error(
        *request(base, "POST", EXTRACT, b'{"images": [', [("Content-Type", "application/json")]), 400, "malformed_json"
    )
    error(
        *request(base, "POST", EXTRACT, b"images=1", [("Content-Type", "application/x-www-form-urlencoded")]),
        415,
        "unsupported_media_type",
    )
    error(*request(base, "POST", EXTRACT, b'{"images": []}'), 415, "unsupported_media_type")  # no Content-Type
    error(*request(base, "POST", MASK, b"", [("Content-Type", "multipart/form-data; boundary=x")]), 400, "empty_body")
    error(
        *request(base, "POST", MASK, b"not multipart", [("Content-Type", "multipart/form-data; boundary=x")]),
        400,
        "malformed_body",
    )
    error(
        *request(base, "POST", MASK, b'{"image": "x"}', [("Content-Type", "application/json")]),
        415,
        "unsupported_media_type",
    )


def test_mime_wrapped_base64_and_surrounding_whitespace_are_accepted(base, photos_dir):
    raw_bytes = (photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes()
    mime = base64.encodebytes(raw_bytes).decode().replace("\n", "\r\n")  # 76-character lines, CRLF
    status, _, body = extract(
        base, [{"image_base64": "\n  " + mime + "  \n"}, {"image_base64": "data:image/jpeg;base64,\r\n" + mime}]
    )
    reply = json.loads(body)
    assert status == 200 and reply["image_errors"] == [] and reply["total_faces_detected"] == 2


@pytest.mark.parametrize("value", ["Infinity", "NaN", '"inf"', "1e400", "true"])
def test_numbers_are_finite_bounded_numbers(base, value):
    body = b'{"images": [{"image_base64": "AAAA"}], "min_face_size": ' + value.encode() + b"}"
    payload = error(
        *request(base, "POST", EXTRACT, body, [("Content-Type", "application/json")]), 422, "invalid_parameter"
    )
    assert "min_face_size" in payload["message"]


@pytest.mark.parametrize("value, status", [("true", 200), ("0", 200), ("yes", 422), ("on", 422), ("2", 422)])
def test_form_booleans_are_true_false_1_or_0(base, value, status):
    image = encode(Image.new("RGB", (64, 48), (200, 180, 160)), "PNG")
    body, ctype = multipart({"image": image, "include_hair": value, "outputs": "mask"})
    got, headers, reply = request(base, "POST", MASK, body, [("Content-Type", ctype)])
    if status == 200:
        assert got == 200, reply
    else:
        assert "include_hair" in error(got, headers, reply, 422, "invalid_parameter")["message"]
