"""Graph test: the mask_augment app on the shared local Ray cluster, called over real
HTTP on 127.0.0.1. RetinaFace (det_500m) and FaceMesh are the session's model-tier
deployments (tests/conftest.py `model_tier`); the app holds only its ingress."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_app.faces.crops import CROP_STYLES
from serve_app.faces.mask_painting import MASK_TYPES
from serve_app.imaging import decode_image
from tests.helpers import assert_error, ok
from tests.images import encode, gradient_rgb

pytestmark = pytest.mark.graph

ROUTE = "/v1/mask-augment"
GROUP = "insightface_t1.jpg"  # 1280 x 886, six faces
ONE_FACE = "lfw_Rob_Lowe_0001.jpg"
NO_FACE = "inspireface_view_noface.jpg"
JPEG_URI = "data:image/jpeg;base64,"


@pytest.fixture(scope="module")
def url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.mask_augment import MaskAugmentArgs, build
    from serve_app.pipelines.mask_augment import SPEC

    serve.run(build(MaskAugmentArgs()), name=SPEC.name, route_prefix=ROUTE)
    yield serve_url + ROUTE
    serve.delete(SPEC.name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def photo(photos_dir):
    return lambda name: (photos_dir / name).read_bytes()


def post(client, url, data: bytes, name="image.jpg", headers=None, **form):
    return client.post(
        url, files={"image": (name, data)}, data={k: str(v) for k, v in form.items()}, headers=headers or {}
    )


def png(value: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value))))


def jpeg_uri(value: str) -> np.ndarray:
    assert value.startswith(JPEG_URI)
    img = Image.open(io.BytesIO(base64.b64decode(value[len(JPEG_URI) :])))
    assert img.format == "JPEG"
    return np.asarray(img)


def test_health_and_ready(client, url):
    health = client.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["models"] == {
        "RetinaFace": "served by the models application",
        "FaceMesh": "served by the models application",
    }
    ready = client.get(url + "/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok" and body["checks"] == {"RetinaFace": "ok", "FaceMesh": "ok"}
    assert body["models"]["RetinaFace"] == "retinaface-det-500m"
    assert body["models"]["FaceMesh"].startswith("mediapipe ")


def test_full_contract_on_a_group_photo(client, url, photo):
    data = photo(GROUP)
    body = ok(post(client, url, data, seed=3, n_augmentations=2, crop_style="all"))
    assert set(body) == {"request_id", "width", "height", "seed", "faces", "augmentations"}
    assert (body["width"], body["height"], body["seed"]) == (1280, 886, 3)
    assert len(body["faces"]) == 6
    for i, face in enumerate(body["faces"]):
        assert set(face) == {"face_index", "box", "score", "landmarks", "yaw", "meshed", "augmentations"}
        assert face["face_index"] == i and face["meshed"] is True and isinstance(face["yaw"], float)
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 886 and 0 < face["score"] <= 1
        assert np.asarray(face["landmarks"]).shape == (5, 2)
        assert [a["augmentation"] for a in face["augmentations"]] == [0, 1]
        for aug in face["augmentations"]:
            assert set(aug) == {"augmentation", "mask_type", "mask_color", "texture", "error", "crops"}
            assert aug["mask_type"] in MASK_TYPES and aug["error"] is None
            assert aug["mask_color"] is None or aug["mask_color"].startswith("#")
            assert aug["texture"] is None or "/" in aug["texture"]
            assert list(aug["crops"]) == list(CROP_STYLES)
            for crop in aug["crops"].values():
                assert jpeg_uri(crop).shape == (112, 112, 3)
    original = decode_image(data)
    assert [a["augmentation"] for a in body["augmentations"]] == [0, 1]
    masked = [png(a["masked_png_base64"]) for a in body["augmentations"]]
    for image in masked:
        assert image.shape == (886, 1280, 3) and image.dtype == np.uint8
        assert not np.array_equal(image, original)
        # Every face's lower half is painted, in the full image.
        for face in body["faces"]:
            x1, y1, x2, y2 = (int(v) for v in face["box"])
            lower = np.s_[(y1 + y2) // 2 : y2, x1:x2]
            assert (image[lower] != original[lower]).any()
    assert not np.array_equal(masked[0], masked[1])


def test_the_seed_is_echoed_and_fixes_the_bytes(client, url, photo):
    a, b = (ok(post(client, url, photo(ONE_FACE), seed=77, crop_style="all")) for _ in range(2))
    assert a["seed"] == b["seed"] == 77 and a["request_id"] != b["request_id"]
    assert a["faces"] == b["faces"] and a["augmentations"] == b["augmentations"]


def test_seed_defaults_to_one_derived_from_the_request_id(client, url, photo):
    from serve_app.pipelines.mask_augment import seed_from

    data = photo(ONE_FACE)
    first, second = (post(client, url, data, headers={"X-Request-ID": "augment-42"}) for _ in range(2))
    a, b = ok(first), ok(second)
    assert a["request_id"] == b["request_id"] == "augment-42"
    assert a["seed"] == b["seed"] == seed_from("augment-42")
    assert a["faces"] == b["faces"] and a["augmentations"] == b["augmentations"]
    # The same seed sent explicitly gives the same bytes under another id.
    c = ok(post(client, url, data, seed=a["seed"]))
    assert c["faces"] == a["faces"] and c["augmentations"] == a["augmentations"]
    # Another id, another seed.
    d = ok(post(client, url, data, headers={"X-Request-ID": "augment-43"}))
    assert d["seed"] == seed_from("augment-43") != a["seed"]
    # No id sent: the proxy makes one up, and the seed follows it.
    e = ok(post(client, url, data))
    assert e["seed"] == seed_from(e["request_id"])


@pytest.mark.parametrize("outputs", ["crops", "masked"])
def test_only_the_requested_outputs(client, url, photo, outputs):
    body = ok(post(client, url, photo(ONE_FACE), outputs=outputs, n_augmentations=2))
    [face] = body["faces"]
    for aug in face["augmentations"]:
        assert aug["mask_type"] in MASK_TYPES  # choices are reported either way
        assert (list(aug["crops"]) == ["buffalo"]) == (outputs == "crops")
        assert aug["crops"] or outputs == "masked"
    for aug in body["augmentations"]:
        assert (aug["masked_png_base64"] is None) == (outputs == "crops")


def test_no_mask_returns_the_original(client, url, photo):
    data = photo(ONE_FACE)
    body = ok(post(client, url, data, no_mask="true", crop_style="original_cropping"))
    [aug] = body["faces"][0]["augmentations"]
    assert aug["mask_type"] is None and aug["mask_color"] is None and aug["error"] is None
    assert list(aug["crops"]) == ["original_cropping"]
    np.testing.assert_array_equal(png(body["augmentations"][0]["masked_png_base64"]), decode_image(data))


@pytest.mark.parametrize("source", ["photo", "gradient"])
def test_no_face_is_200_with_empty_lists(client, url, photo, source):
    data = photo(NO_FACE) if source == "photo" else encode(gradient_rgb(320, 240), "PNG")
    body = ok(post(client, url, data, seed=5, n_augmentations=3))
    assert body["faces"] == [] and body["augmentations"] == [] and body["seed"] == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"n_augmentations": 0},
        {"n_augmentations": 17},
        {"n_augmentations": "many"},
        {"mask_types": "balaclava"},
        {"mask_types": "surgical,snorkel"},
        {"crop_style": "tight"},
        {"scale_min": 1.2, "scale_max": 1.0},
        {"seed": -1},
        {"outputs": "masked,thumbnail"},
    ],
)
def test_bad_parameters_are_422(client, url, fields):
    resp = post(client, url, encode(gradient_rgb(), "PNG"), **fields)
    body = assert_error(resp, 422, "invalid_parameter")
    assert body["message"]


def test_bad_images(client, url):
    assert_error(post(client, url, b"just some text, not pixels", name="notes.txt"), 415, "unsupported_format")
    assert_error(post(client, url, b""), 400, "empty_image")
    assert_error(post(client, url, encode(gradient_rgb(300, 300), "JPEG")[:1500]), 400, "corrupt_image")
    bad = post(client, url, b"hello", name="a.txt", headers={"X-Request-ID": "client-7"})
    assert assert_error(bad, 415)["request_id"] == "client-7"
