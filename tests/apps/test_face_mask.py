"""Graph tests: the face_mask app served by Ray Serve on a local cluster, called over
real HTTP on 127.0.0.1. Real cascade, SegFormer through the save_pretrained path, both
served by the session's model tier (tests/conftest.py `model_tier`)."""

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_app.imaging import decode_image
from tests.helpers import assert_error
from tests.images import encode, gradient_rgb, huge_pixels_png

pytestmark = pytest.mark.graph
ROUTE = "/v1/face-mask"


@pytest.fixture(scope="module")
def url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.face_mask import FaceMaskArgs, build
    from serve_app.pipelines.face_mask import SPEC

    serve.run(build(FaceMaskArgs()), name=SPEC.name, route_prefix=ROUTE)
    yield serve_url + ROUTE
    serve.delete(SPEC.name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


def post(client, url, data: bytes, name="image.png", **form):
    return client.post(url, files={"image": (name, data)}, data={k: str(v) for k, v in form.items()})


def png_b64(value: str) -> np.ndarray:
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value))))


def test_five_faces_full_contract(client, url, cartoon_dir):
    data = (cartoon_dir / "kanosawa_anime_5faces.png").read_bytes()
    resp = post(client, url, data, threshold=0.0)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    image = decode_image(data)
    assert (body["width"], body["height"]) == (497, 426) and len(body["boxes"]) == 5
    mask, rgba, over = (png_b64(body[k]) for k in ("mask_png_base64", "face_rgba_png_base64", "overlay_png_base64"))
    assert mask.shape == (426, 497) and set(np.unique(mask)) == {0, 255}
    for x1, y1, x2, y2 in body["boxes"]:  # every face centre is masked
        assert mask[int((y1 + y2) / 2), int((x1 + x2) / 2)] == 255
    assert rgba.shape == (426, 497, 4) and np.array_equal(rgba[..., 3], mask) and np.array_equal(rgba[..., :3], image)
    off = mask == 0
    assert np.array_equal(over[off], image[off]) and not np.array_equal(over[~off], image[~off])
    assert resp.headers["x-request-id"] == body["request_id"]


def test_only_the_requested_outputs_are_encoded(client, url, cartoon_dir):
    resp = post(client, url, (cartoon_dir / "cartoonface_11008.jpg").read_bytes(), outputs="mask")
    body = resp.json()
    assert body["mask_png_base64"] and body["face_rgba_png_base64"] is None and body["overlay_png_base64"] is None


def test_no_face_is_200_with_an_empty_mask_and_the_image_unchanged(client, url, photos_dir):
    data = (photos_dir / "dlib_dogs_noface.jpg").read_bytes()
    body = post(client, url, data, name="dogs.jpg").json()
    assert body["boxes"] == []
    assert png_b64(body["mask_png_base64"]).max() == 0
    assert np.array_equal(png_b64(body["overlay_png_base64"]), decode_image(data))


def test_crf_over_http(client, url, cartoon_dir):
    resp = post(
        client, url, (cartoon_dir / "kanosawa_anime_5faces.png").read_bytes(), use_crf="true", include_hair="true"
    )
    assert resp.status_code == 200 and len(resp.json()["boxes"]) == 5


def test_client_request_id_is_echoed(client, url, cartoon_dir):
    resp = client.post(
        url,
        files={"image": ("a.jpg", (cartoon_dir / "cartoonface_11008.jpg").read_bytes())},
        headers={"X-Request-ID": "client-42"},
    )
    assert resp.headers["x-request-id"] == "client-42" and resp.json()["request_id"] == "client-42"
    bad = client.post(url, files={"image": ("a.txt", b"hello")}, headers={"X-Request-ID": "client-43"})
    assert assert_error(bad, 415)["request_id"] == "client-43"


BAD_INPUTS = {
    "not an image": (b"just some text, not pixels", {}, 415, "unsupported_format"),
    "zero bytes": (b"", {}, 400, "empty_image"),
    "truncated": (encode(gradient_rgb(300, 300), "JPEG")[:1500], {}, 400, "corrupt_image"),
    "oversize pixels": (huge_pixels_png(4000, 3500), {}, 413, "too_large"),
    "oversize bytes": (b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(3_100_000), {}, 413, "too_large"),
    "threshold above 1": (encode(gradient_rgb(), "PNG"), {"threshold": 1.5}, 422, "invalid_parameter"),
    "max_size not a number": (encode(gradient_rgb(), "PNG"), {"max_size": "big"}, 422, "invalid_parameter"),
    "negative expand": (encode(gradient_rgb(), "PNG"), {"expand": -1}, 422, "invalid_parameter"),
    "unknown output": (encode(gradient_rgb(), "PNG"), {"outputs": "mask,selfie"}, 422, "invalid_parameter"),
    "use_crf not a bool": (encode(gradient_rgb(), "PNG"), {"use_crf": "maybe"}, 422, "invalid_parameter"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_with_the_error_shape(client, url, case):
    data, form, status, code = BAD_INPUTS[case]
    body = assert_error(post(client, url, data, **form), status, code)
    field = next(iter(form), None)
    if status == 422 and field:
        assert field in body["message"]  # the field is named


def test_missing_image_field_is_422(client, url):
    # multipart/form-data without the image (a urlencoded form is the wrong content type: 415)
    body = assert_error(client.post(url, files={"threshold": (None, "0.5")}), 422, "invalid_parameter")
    assert "image" in body["message"]
    assert_error(client.post(url, data={"threshold": "0.5"}), 415, "unsupported_media_type")


def test_still_serving_after_bad_inputs(client, url, cartoon_dir):
    for data, form, _, _ in BAD_INPUTS.values():
        post(client, url, data, **form)
    assert client.get(url + "/health").json()["status"] == "ok"
    resp = post(client, url, (cartoon_dir / "kanosawa_anime_5faces.png").read_bytes())
    assert resp.status_code == 200 and len(resp.json()["boxes"]) == 5


def test_health_names_the_models_and_ready_the_weights_in_use(client, url):
    health = client.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["models"] == {
        "LBPDetector": "served by the models application",
        "SegFormerParser": "served by the models application",
    }
    ready = client.get(url + "/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok"
    assert body["models"] == {"LBPDetector": "lbp-detector-cascade", "SegFormerParser": "segformer-parser-tiny"}
    assert body["checks"] == {"LBPDetector": "ok", "SegFormerParser": "ok"}


def test_concurrent_requests_are_batched(client, url, cartoon_dir, ray_cluster):
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    # The model deployments are the session's shared ones: look only at the batches
    # these requests added.
    handles = {
        name: serve.get_deployment_handle(name, app_name=MODEL_APP) for name in ("LBPDetector", "SegFormerParser")
    }
    before = {name: h.batch_stats.remote().result() for name, h in handles.items()}
    # One face per image: an image's faces are one parser item (faces are what a batch
    # counts, max_batch_size 8), so single faces of different requests share batches.
    data = (cartoon_dir / "cartoonface_11008.jpg").read_bytes()
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: post(client, url, data, outputs="mask"), range(24)))
    assert all(r.status_code == 200 and len(r.json()["boxes"]) == 1 for r in responses)
    after = {name: h.batch_stats.remote().result() for name, h in handles.items()}
    stats = {name: [size for size, n in after[name].items() if n > before[name].get(size, 0)] for name in handles}
    assert max(stats["SegFormerParser"], default=0) > 1, stats
    assert max(stats["LBPDetector"], default=0) > 1, stats


def test_custom_metrics_reach_the_node_metrics_endpoint(client, url, cartoon_dir, ray_cluster):
    post(client, url, (cartoon_dir / "cartoonface_11008.jpg").read_bytes(), outputs="mask")
    # Other apps of the session export the same metric names: wait for this app's tags.
    wanted = (
        "facegraph_model_batch_size",
        "facegraph_model_items_total",
        "facegraph_requests_total",
        "facegraph_faces_found_total",
        'model="SegFormerParser"',
        'model="LBPDetector"',
        'endpoint="face_mask"',
    )
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:
        try:
            text = httpx.get(ray_cluster["metrics_url"], timeout=5).text
        except httpx.HTTPError:
            text = ""
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not exported within 60 s: {missing}"


def _metric(text: str, name: str, model: str) -> float:
    """Sum of a metric's samples for one model (over every replica and tag set)."""
    import re

    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+-]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_mean_batch_size_is_items_over_batches(client, url, cartoon_dir, ray_cluster):
    """Ray rebuilds a histogram's _sum from bucket midpoints; the batch-size buckets are
    placed so a dashboard's mean batch (sum / count) equals items / batches for the
    batch sizes seen here (all <= 8), and the counters give it exactly everywhere."""
    data = (cartoon_dir / "kanosawa_anime_5faces.png").read_bytes()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: post(client, url, data, outputs="mask"), range(12)))
    deadline = time.time() + 60
    while time.time() < deadline:
        text = httpx.get(ray_cluster["metrics_url"], timeout=5).text
        batches = _metric(text, "ray_facegraph_model_batches_total", "SegFormerParser")
        count = _metric(text, "ray_facegraph_model_batch_size_count", "SegFormerParser")
        if batches and count == batches:
            break
        time.sleep(2)
    for model in ("SegFormerParser", "LBPDetector"):
        items = _metric(text, "ray_facegraph_model_items_total", model)
        batches = _metric(text, "ray_facegraph_model_batches_total", model)
        total = _metric(text, "ray_facegraph_model_batch_size_sum", model)
        count = _metric(text, "ray_facegraph_model_batch_size_count", model)
        assert batches > 0 and count == batches, (model, batches, count)
        assert abs(total / count - items / batches) < 1e-6, (model, total, count, items, batches)
