"""Graph test: the face_mask_sam2 app on the shared local Ray cluster, called over real
HTTP on 127.0.0.1, with SAM2 stood in by a real HTTP server in this process
(tests/sam2_standin.py). The test flips the stand-in's behaviour between requests.
FaceMesh is the session's model-tier deployment (tests/conftest.py `model_tier`)."""

from __future__ import annotations

import base64
import io
import time

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.sam2_standin import Sam2StandIn, ellipse_mask

pytestmark = pytest.mark.graph

APP = "face_mask_sam2"
ROUTE = "/v1/face-mask-sam2"
SAM2_TIMEOUT_S = 2.0
TWO_FACES = "3ddfa_trump_hillary.jpg"
NO_FACE = "inspireface_view_noface.jpg"


@pytest.fixture(scope="module")
def standin():
    with Sam2StandIn(mode="png", slow_s=3 * SAM2_TIMEOUT_S) as server:
        yield server


@pytest.fixture(scope="module")
def url(serve_url, model_tier, standin):
    from ray import serve

    from serve_app.apps.face_mask_sam2 import FaceMaskSam2Args, build

    # Breaker off: these tests fail SAM2 on purpose, then expect it to be called again.
    args = FaceMaskSam2Args(sam2={"url": standin.url, "timeout_s": SAM2_TIMEOUT_S, "retries": 1, "breaker_failures": 0})
    serve.run(build(args), name=APP, route_prefix=ROUTE)
    yield f"{serve_url}{ROUTE}"
    serve.delete(APP)


@pytest.fixture(autouse=True)
def sam2_works(standin):
    standin.mode = "png"
    yield
    standin.mode = "png"


@pytest.fixture(scope="module")
def photo(photos_dir):
    return lambda name: (photos_dir / name).read_bytes()


def post(url, data: bytes, filename="img.jpg", timeout=60.0, **fields):
    form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
    return httpx.post(url, files={"image": (filename, data)}, data=form, timeout=timeout)


def png_array(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def expected_sam2_mask(body) -> np.ndarray:
    """What the stand-in computes, the ellipse inscribed in each face's box prompt, as
    the pipeline keeps it: inside the box (x2, y2 exclusive)."""
    mask = np.zeros((body["height"], body["width"]), np.uint8)
    for face in body["faces"]:
        x1, y1, x2, y2 = face["prompt_box"]
        ellipse = ellipse_mask(body["height"], body["width"], face["prompt_box"])
        mask[y1:y2, x1:x2] |= ellipse[y1:y2, x1:x2]
    return mask * 255


def test_health_and_ready(url):
    from serve_app.pipelines.face_mask_sam2 import SPEC

    models = set(SPEC.models.values())
    assert "FaceMesh" in models
    r = httpx.get(f"{url}/health", timeout=30)
    assert r.status_code == 200
    body = r.json()
    served = {name: "served by the models application" for name in models}
    assert body["status"] == "ok" and body["models"] == {**served, "SAM2": "configured"}
    r = httpx.get(f"{url}/ready", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["checks"] == {name: "ok" for name in models}
    assert set(body["models"]) == models | {"SAM2"} and body["models"]["SAM2"] == "configured"
    assert body["models"]["FaceMesh"].startswith("mediapipe ")


def test_sam2_masks_when_sam2_works(url, photo, standin):
    before = standin.calls()
    r = post(url, photo(TWO_FACES))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 1536 and body["height"] == 689
    assert len(body["boxes"]) == len(body["faces"]) == 2
    assert [f["mask_source"] for f in body["faces"]] == ["sam2", "sam2"]
    assert all(f["fallback_reason"] is None for f in body["faces"])
    assert [f["box"] for f in body["faces"]] == body["boxes"]
    np.testing.assert_array_equal(png_array(body["mask_png_base64"]), expected_sam2_mask(body))
    rgba = png_array(body["face_rgba_png_base64"])
    assert rgba.shape == (689, 1536, 4) and png_array(body["overlay_png_base64"]).shape == (689, 1536, 3)
    # One call per face, the full image both times, prompts inside it.
    calls = standin.received[before:]
    assert len(calls) == 2 and {c["image_shape"] for c in calls} == {(689, 1536, 3)}
    for call in calls:
        labels = [p[2] for p in call["points"]]
        assert labels.count(1) == 16 and labels.count(0) > 0 and call["multimask"] is True


def test_request_parameters_reach_sam2(url, photo, standin):
    before = standin.calls()
    r = post(url, photo("lfw_Rob_Lowe_0001.jpg"), multimask=False, pos_points=4, expand=0.0)
    assert r.status_code == 200, r.text
    [call] = standin.received[before:]
    assert call["multimask"] is False and [p[2] for p in call["points"]].count(1) == 4
    assert call["box"] == r.json()["faces"][0]["prompt_box"]


def test_western_cartoon_face(url, cartoon_dir):
    r = post(url, (cartoon_dir / "dualstylegan_cartoon_00003_01.jpg").read_bytes())
    assert r.status_code == 200, r.text
    assert [f["mask_source"] for f in r.json()["faces"]] == ["sam2"]


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("error500", "server_error"),
        ("garbage", "invalid_response"),
        ("wrong_json", "invalid_response"),
        ("empty", "empty_mask"),
    ],
)
def test_polygon_fallback_when_sam2_fails(url, photo, standin, mode, reason):
    standin.mode = mode
    r = post(url, photo(TWO_FACES))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(f["mask_source"], f["fallback_reason"]) for f in body["faces"]] == [("polygon", reason)] * 2
    mask = png_array(body["mask_png_base64"])
    assert mask.any() and not np.array_equal(mask, expected_sam2_mask(body))
    # The filled ovals lie inside the faces' prompt boxes.
    outside = mask.copy()
    for x1, y1, x2, y2 in (f["prompt_box"] for f in body["faces"]):
        outside[y1:y2, x1:x2] = 0
    assert not outside.any()


def test_slow_sam2_never_holds_the_request_past_the_timeout(url, photo, standin):
    standin.mode = "slow"
    start = time.monotonic()
    r = post(url, photo(TWO_FACES))
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert [f["fallback_reason"] for f in r.json()["faces"]] == ["timeout", "timeout"]
    # The stand-in would answer after 3x the timeout; generous margin for the rest.
    assert elapsed < SAM2_TIMEOUT_S + 4.0


def test_sam2_down_gives_polygons_and_the_same_polygons_every_time(url, photo, standin):
    standin.mode = "error500"
    failing = post(url, photo(TWO_FACES)).json()
    standin.stop()
    try:
        r = post(url, photo(TWO_FACES))
    finally:
        standin.start()  # same port again for the tests after this one
    assert r.status_code == 200, r.text
    down = r.json()
    assert [f["fallback_reason"] for f in down["faces"]] == ["unreachable", "unreachable"]
    assert down["mask_png_base64"] == failing["mask_png_base64"]


def test_two_identical_requests_give_identical_masks(url, photo):
    a, b = (post(url, photo(TWO_FACES)).json() for _ in range(2))
    assert [f["mask_source"] for f in a["faces"]] == ["sam2", "sam2"]
    assert a["mask_png_base64"] == b["mask_png_base64"] and a["faces"] == b["faces"]


def test_no_face_is_an_empty_mask(url, photo, standin):
    before = standin.calls()
    data = photo(NO_FACE)
    r = post(url, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["boxes"] == [] and body["faces"] == []
    assert not png_array(body["mask_png_base64"]).any()
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(png_array(body["overlay_png_base64"]), original)
    assert standin.calls() == before  # nothing to prompt


def test_only_the_requested_outputs(url, photo):
    body = post(url, photo("lfw_Rob_Lowe_0001.jpg"), outputs="mask").json()
    assert body["mask_png_base64"] and body["face_rgba_png_base64"] is None and body["overlay_png_base64"] is None


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    return buf.tobytes()


@pytest.mark.parametrize(
    "data,fields,status,code",
    [
        (b"definitely not an image", {}, 415, "unsupported_format"),
        (b"", {}, 400, "empty_image"),
        (_jpeg()[:200], {}, 400, "corrupt_image"),
        (_jpeg(), {"multimask": "perhaps"}, 422, "invalid_parameter"),
        (_jpeg(), {"expand": "-0.5"}, 422, "invalid_parameter"),
        (_jpeg(), {"expand": "wide"}, 422, "invalid_parameter"),
        (_jpeg(), {"pos_points": "1000"}, 422, "invalid_parameter"),
        (_jpeg(), {"outputs": "mask,thumbnail"}, 422, "invalid_parameter"),
    ],
)
def test_bad_input_is_a_4xx_in_the_error_shape(url, data, fields, status, code):
    r = post(url, data, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"] and body["request_id"] == r.headers["X-Request-ID"]


def test_missing_image_and_oversize_bytes(url):
    r = httpx.post(url, files={"expand": (None, "0.1")}, timeout=30)  # multipart, without the image
    assert r.status_code == 422 and r.json()["error"] == "invalid_parameter"
    r = post(url, b"\xff\xd8" + b"\0" * 3_100_000)  # over MAX_IMAGE_BYTES in conftest
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_still_serving_after_bad_inputs(url, photo):
    post(url, b"junk")
    r = post(url, photo("lfw_Rob_Lowe_0001.jpg"))
    assert r.status_code == 200 and r.json()["faces"][0]["mask_source"] == "sam2"


def test_a_hundred_faces_are_one_mesh_call_not_a_hundred(url, photos_dir, standin):
    """The 104-face selfie at max_num_faces=100: the faces of one image go to FaceMesh as
    one item (a stack of crops), so one image is one FaceMesh request, not 100 requests
    that overflow its queue (serve_config.yaml's max_queued_requests: a 503)."""
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    mesh = serve.get_deployment_handle("FaceMesh", MODEL_APP)
    before = sum(mesh.batch_stats.remote().result().values())
    data = (photos_dir / "facedet1mb_worlds_largest_selfie.jpg").read_bytes()
    resp = post(url, data, max_num_faces=100, outputs="mask", timeout=180)
    assert resp.status_code == 200, resp.text
    faces = resp.json()["faces"]
    assert len(faces) == 100 and sum(f["meshed"] for f in faces) >= 80, len(faces)
    assert sum(mesh.batch_stats.remote().result().values()) - before == 1  # one call for the image
