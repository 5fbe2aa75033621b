"""Graph tests: the face_extract app (RetinaFace det_500m, ArcFace MobileFaceNet 128-d,
the session's model tier: tests/conftest.py `model_tier`) served by Ray Serve on a local
cluster, called over real HTTP on 127.0.0.1, with image URLs served by a real loopback
server (allow-listed for the replicas)."""

import base64
import io
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import assert_error, iou, ok
from tests.image_server import ImageServer
from tests.images import huge_pixels_png

pytestmark = pytest.mark.graph

# tests/conftest.py allow-lists 127.0.0.1 for the replicas (URL_FETCH_ALLOWLIST), so
# the loopback image server below is reachable and 127.0.0.2 stays refused.

# The weights tests/conftest.py's model tier serves these two models with.
WEIGHTS = {"RetinaFace": "retinaface-det-500m", "ArcFace": "arcface-mobilefacenet-128d"}
UUID = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f-]{36}$")


@pytest.fixture(scope="module")
def url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.face_extract import FaceExtractArgs, build
    from serve_app.pipelines.face_extract import SPEC

    serve.run(build(FaceExtractArgs(max_concurrent_images=8, request_timeout_s=None)), name=SPEC.name, route_prefix="/")
    yield serve_url
    serve.delete(SPEC.name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def images(photos_dir):
    with ImageServer(photos_dir, oversize_bytes=4_000_000) as server:
        yield server


def b64(photos_dir, name, uri=False) -> str:
    text = base64.b64encode((photos_dir / name).read_bytes()).decode()
    return f"data:image/jpeg;base64,{text}" if uri else text


def extract(client, url, images, **extra):
    return client.post(url + "/extract-faces", json={"images": images, **extra})


def errors_by_index(body) -> dict[int, dict]:
    return {e["image_index"]: e for e in body["image_errors"]}


def test_health_and_ready(client, url):
    health = client.get(url + "/health").json()
    assert health["status"] == "ok" and health["version"] and health["timestamp"].endswith("+00:00")
    assert health["models"] == {name: "served by the models application" for name in WEIGHTS}
    ready = client.get(url + "/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok" and ready.json()["models"] == WEIGHTS
    assert ready.json()["checks"] == {"RetinaFace": "ok", "ArcFace": "ok"}


def test_base64_and_data_uri_one_person_twice_and_a_distinct_one(client, url, photos_dir):
    body = ok(
        extract(
            client,
            url,
            [
                {"image_base64": b64(photos_dir, "lfw_Rob_Lowe_0001.jpg")},
                {"image_base64": b64(photos_dir, "lfw_Nathalie_Baye_0002.jpg", uri=True)},
                {"image_base64": b64(photos_dir, "lfw_Rob_Lowe_0002.jpg", uri=True)},
            ],
        )
    )
    assert (body["total_faces_detected"], body["unique_faces"], body["images_processed"]) == (3, 2, 3)
    assert body["image_errors"] == [] and body["processing_time_ms"] > 0
    # No threshold given: the recogniser's calibrated one (assets/manifest.yaml), echoed.
    assert body["similarity_threshold"] == 0.5 and body["low_quality_faces"] == 0
    rob, nathalie = body["faces"]
    assert (rob["image_index"], nathalie["image_index"]) == (0, 1)
    assert len(rob["duplicate_ids"]) == 1 and rob["duplicates"][0]["image_index"] == 2
    assert rob["duplicates"][0]["face_id"] == rob["duplicate_ids"][0]
    assert rob["duplicates"][0]["similarity"] >= body["similarity_threshold"] and nathalie["duplicate_ids"] == []
    for face in body["faces"]:
        assert UUID.match(face["face_id"]) and face["low_quality"] is False
        emb = np.array(face["embedding"])
        assert emb.shape == (128,) and abs(np.linalg.norm(emb) - 1) < 1e-4
        assert len(face["bbox"]) == 4 and np.array(face["landmarks"]).shape == (5, 2)
        assert 0.5 <= face["confidence"] <= 1
        assert face["headshot_base64"].startswith("data:image/jpeg;base64,")
        shot = Image.open(io.BytesIO(base64.b64decode(face["headshot_base64"].split(",", 1)[1])))
        assert shot.format == "JPEG" and shot.size == (160, 160)
    assert float(np.dot(rob["embedding"], nathalie["embedding"])) < 0.4


def test_url_inputs_from_an_allow_listed_loopback_server(client, url, images, photos_dir):
    name = "insightface_t1.jpg"
    by_url = ok(
        extract(
            client,
            url,
            [
                {"image_url": f"{images.base}/img/{name}"},
                {"image_url": f"{images.base}/redirect?to=/img/lfw_Rob_Lowe_0001.jpg"},
            ],
        )
    )
    by_b64 = ok(extract(client, url, [{"image_base64": b64(photos_dir, name)}]))
    assert by_url["image_errors"] == [] and by_url["images_processed"] == 2
    first = [f for f in by_url["faces"] if f["image_index"] == 0]
    assert len(first) == by_b64["unique_faces"] == 6
    cos = np.array([f["embedding"] for f in first]) @ np.array([f["embedding"] for f in by_b64["faces"]]).T
    assert np.allclose(np.diag(cos), 1, atol=1e-5)
    assert any(f["image_index"] == 1 for f in by_url["faces"])


def test_url_refusals_are_per_image_errors(client, url, images, photos_dir):
    good = {"image_base64": b64(photos_dir, "lfw_Rob_Lowe_0001.jpg")}
    body = ok(
        extract(
            client,
            url,
            [
                {"image_url": "http://10.1.2.3/face.jpg"},  # private
                {
                    "image_url": f"http://127.0.0.2:{images.port}/img/lfw_Rob_Lowe_0001.jpg"
                },  # loopback, not allow-listed
                {
                    "image_url": f"{images.base}/redirect?to=http://169.254.169.254/latest/meta-data"
                },  # redirect to link-local
                {"image_url": f"{images.base}/big"},  # over MAX_IMAGE_BYTES
                {"image_url": f"{images.base}/bytes?hex=" + b"<html>not an image</html>".hex()},  # not an image
                {"image_url": "ftp://example.com/face.jpg"},  # bad scheme
                {"image_url": "file:///etc/passwd"},
                good,
            ],
        )
    )
    errs = errors_by_index(body)
    assert sorted(errs) == [0, 1, 2, 3, 4, 5, 6]
    assert errs[0]["error"] == "url_refused" and "private" in errs[0]["message"]
    assert errs[1]["error"] == "url_refused" and "loopback" in errs[1]["message"]
    assert errs[2]["error"] == "url_refused" and "link-local" in errs[2]["message"]
    assert errs[3]["error"] == "too_large"
    assert errs[4]["error"] == "unsupported_format"
    assert errs[5]["error"] == errs[6]["error"] == "url_refused" and "scheme" in errs[5]["message"]
    assert body["images_processed"] == 1 and body["unique_faces"] == 1 and body["faces"][0]["image_index"] == 7


def test_a_mix_of_good_and_broken_images(client, url, photos_dir):
    jpeg = (photos_dir / "insightface_t1.jpg").read_bytes()
    body = ok(
        extract(
            client,
            url,
            [
                {"image_base64": "!!! not base64 !!!"},
                {"image_base64": base64.b64encode(jpeg[:3000]).decode()},  # truncated
                {"image_base64": b64(photos_dir, "lfw_Nathalie_Baye_0002.jpg")},
                {"image_base64": base64.b64encode(huge_pixels_png()).decode()},  # decompression-bomb shape
                {"image_base64": ""},
                {"image_base64": base64.b64encode(b"GIF89a but not really").decode()},
            ],
        )
    )
    errs = errors_by_index(body)
    assert sorted(errs) == [0, 1, 3, 4, 5]
    assert errs[0]["error"] == "bad_input" and errs[1]["error"] == "corrupt_image"
    assert errs[3]["error"] == "too_large" and errs[4]["error"] == "empty_image"
    assert errs[5]["error"] in ("corrupt_image", "unsupported_format")
    assert body["images_processed"] == 1 and [f["image_index"] for f in body["faces"]] == [2]


def test_no_face(client, url, photos_dir):
    body = ok(extract(client, url, [{"image_base64": b64(photos_dir, "inspireface_view_noface.jpg")}]))
    assert body["faces"] == [] and body["total_faces_detected"] == 0 and body["images_processed"] == 1


def test_many_faces(client, url, photos_dir):
    body = ok(
        extract(
            client, url, [{"image_base64": b64(photos_dir, "facedet1mb_worlds_largest_selfie.jpg")}], min_face_size=0
        )
    )
    assert body["total_faces_detected"] > 100
    # One photo: every face is its own person (the old rule merged 104 faces into 70).
    assert body["unique_faces"] == body["total_faces_detected"]
    assert all(f["duplicate_ids"] == [] for f in body["faces"])
    # Small or uncertain faces come back, flagged, with their embedding.
    low = [f for f in body["faces"] if f["low_quality"]]
    assert body["low_quality_faces"] == len(low) > 20 and all(len(f["embedding"]) == 128 for f in low)
    for f in body["faces"]:
        x1, y1, x2, y2 = f["bbox"]
        side, score = min(x2 - x1, y2 - y1), f["confidence"]
        if abs(side - 32) > 0.05 and abs(score - 0.6) > 0.005:  # clear of the rounding of the shown values
            assert f["low_quality"] == (side < 32 or score < 0.6)
    strict = ok(
        extract(
            client,
            url,
            [{"image_base64": b64(photos_dir, "facedet1mb_worlds_largest_selfie.jpg")}],
            min_face_size=0,
            similarity_threshold=1.0,
        )
    )
    assert strict["unique_faces"] == strict["total_faces_detected"]


def test_a_group_photo_sent_twice_once_mirrored(client, url, photos_dir):
    """Each person merges with their own mirrored copy and no one else; a threshold in
    the request overrides the recogniser's and is echoed."""
    name = "insightface_t1.jpg"
    original = Image.open(photos_dir / name)
    buf = io.BytesIO()
    original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "JPEG", quality=95)
    mirrored = base64.b64encode(buf.getvalue()).decode()
    for threshold in (None, 0.45):
        extra = {} if threshold is None else {"similarity_threshold": threshold}
        body = ok(extract(client, url, [{"image_base64": b64(photos_dir, name)}, {"image_base64": mirrored}], **extra))
        assert body["similarity_threshold"] == (threshold or 0.5)
        assert (body["total_faces_detected"], body["unique_faces"], body["low_quality_faces"]) == (12, 6, 0)
        for face in body["faces"]:
            assert face["image_index"] == 0 and len(face["duplicates"]) == 1
            copy = face["duplicates"][0]
            x1, y1, x2, y2 = copy["bbox"]
            unmirrored = [original.width - x2, y1, original.width - x1, y2]
            assert copy["image_index"] == 1 and iou(face["bbox"], unmirrored)[0, 0] > 0.7
            assert copy["similarity"] >= body["similarity_threshold"]


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"images": []}, 400, "no_images"),
        ({"images": [{"image_url": "http://example.com/a.jpg", "image_base64": "AAAA"}]}, 400, "invalid_image_source"),
        ({"images": [{}]}, 400, "invalid_image_source"),
        ({"images": [{"image_url": "http://example.com/a.jpg"}] * 101}, 400, "too_many_images"),
        ({"images": [{"image_base64": "AAAA"}], "similarity_threshold": 2}, 422, "invalid_parameter"),
        ({"images": [{"image_base64": "AAAA"}], "min_face_size": -1}, 422, "invalid_parameter"),
        ({"images": [{"image_base64": "AAAA"}], "quality_min_face_size": -1}, 422, "invalid_parameter"),
        ({"images": [{"image_base64": "AAAA"}], "quality_min_score": 1.5}, 422, "invalid_parameter"),
        ({"images": "not a list"}, 422, "invalid_parameter"),
        ({"images": [{"image_path": "/etc/passwd"}]}, 422, "invalid_parameter"),
        ({}, 422, "invalid_parameter"),
    ],
)
def test_bad_requests_are_4xx_in_the_error_shape(client, url, payload, status, code):
    assert_error(client.post(url + "/extract-faces", json=payload), status, code)


def test_malformed_json_and_wrong_method(client, url):
    resp = client.post(url + "/extract-faces", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(resp, 400, "malformed_json")  # the client's syntax, not a parameter (issue 13)
    assert_error(client.get(url + "/extract-faces"), 405)
    assert_error(client.get(url + "/no-such-route"), 404)


def test_cors_only_for_allowed_origins(client, url):
    def preflight(origin):
        return client.options(
            url + "/extract-faces", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )

    # tests/conftest.py sets ALLOWED_ORIGINS=https://app.example for the replicas.
    assert preflight("https://app.example").headers.get("access-control-allow-origin") == "https://app.example"
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_concurrent_requests_share_arcface_batches(client, url, photos_dir):
    """One face per request: a batch of more than one crop can only come from
    several requests."""
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    arcface = serve.get_deployment_handle("ArcFace", app_name=MODEL_APP)
    payload = {"images": [{"image_base64": b64(photos_dir, "lfw_Rob_Lowe_0001.jpg")}]}
    shared = False
    for _ in range(3):  # scheduling is not deterministic; a few rounds suffice in practice
        before = arcface.batch_stats.remote().result()
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: client.post(url + "/extract-faces", json=payload), range(12)))
        assert all(r.status_code == 200 and r.json()["unique_faces"] == 1 for r in replies)
        after = arcface.batch_stats.remote().result()
        grown = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
        print(f"\nArcFace batch sizes over 12 concurrent one-face requests: {grown}")
        if any(size > 1 for size in grown):
            shared = True
            break
    assert shared


@pytest.fixture
def slow_url(serve_url, model_tier):
    """A second copy of the app's ingress (the models stay the shared ones) whose
    request deadline is 1.5 s."""
    from ray import serve

    from serve_app.apps.face_extract import FaceExtractArgs, build

    serve.run(
        build(FaceExtractArgs(max_concurrent_images=8, request_timeout_s=1.5)),
        name="face_extract_timeout",
        route_prefix="/deadline",
    )
    yield serve_url + "/deadline"
    serve.delete("face_extract_timeout")


def test_over_the_deadline_is_504_and_the_work_stops(client, slow_url, images, photos_dir):
    images.drip_hung_up.clear()
    start = time.monotonic()
    resp = extract(
        client,
        slow_url,
        [
            {"image_url": f"{images.base}/drip?seconds=30&every=0.1"},
            {"image_base64": b64(photos_dir, "lfw_Rob_Lowe_0001.jpg")},
        ],
    )
    assert_error(resp, 504, "upstream_timeout")
    assert time.monotonic() - start < 12  # answered at the deadline, not when the drip ends
    # The cancelled fetch hung up on the server instead of reading on for nobody.
    assert images.drip_hung_up.wait(10)
