"""Graph test: the anonymize app on the shared local Ray cluster, called over real HTTP on
127.0.0.1. RetinaFace (det_500m), TDDFA (mb05) and MeshRenderer (backend "auto":
plain torch on these CPU replicas; PyTorch3D is held to it in
tests/deployments/test_mesh_renderer.py) are the session's model-tier deployments (tests/conftest.py
`model_tier`); the app holds its ingress and the assembled morphable model. Small
tex_size and img_size keep the requests fast."""

from __future__ import annotations

import base64
import io
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.mesh_renderer.mesh_io import read_obj
from serve_app.imaging import decode_image
from tests.helpers import assert_error, ok
from tests.images import encode, gradient_rgb

pytestmark = pytest.mark.graph

ROUTE = "/v1/anonymize"
ONE_FACE = "lfw_Rob_Lowe_0001.jpg"  # 250 x 250
TWO_FACES = "ultralight_handshake_13.jpg"  # 450 x 344, two faces
NO_FACE = "inspireface_view_noface.jpg"
SMALL = {"tex_size": 256, "img_size": 128}
MODEL = "tddfa-bfm-assembled"


@pytest.fixture(scope="module")
def url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.anonymize import AnonymizeArgs, build
    from serve_app.pipelines.anonymize import SPEC

    serve.run(build(AnonymizeArgs(morphable_model_asset=MODEL)), name=SPEC.name, route_prefix=ROUTE)
    yield serve_url + ROUTE
    serve.delete(SPEC.name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def photo(photos_dir):
    return lambda name: (photos_dir / name).read_bytes()


@pytest.fixture(scope="module")
def description(asset):
    from deployments.tddfa.bfm import MorphableModel

    return MorphableModel.load(asset(MODEL)).description


def post(client, url, data: bytes, name="image.jpg", **form):
    fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in {**SMALL, **form}.items()}
    return client.post(url, files={"image": (name, data)}, data=fields)


def png(value: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value))))


@pytest.fixture(scope="module")
def two_faces(client, url, photo):
    """One default request on a photo with two faces, shared by the contract checks."""
    return ok(post(client, url, photo(TWO_FACES)))


def test_health_and_ready_name_the_morphable_model(client, url, description):
    from serve_app.pipelines.anonymize import SPEC

    served = {name: "served by the models application" for name in SPEC.models.values()}
    r = client.get(f"{url}/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["models"] == {**served, "MorphableModel": description}
    assert "assembled" in description
    r = client.get(f"{url}/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["checks"] == {name: "ok" for name in SPEC.models.values()}
    assert body["models"]["MorphableModel"] == description
    assert body["models"]["TDDFA"] == "tddfa-mb05-120" and body["models"]["RetinaFace"] == "retinaface-det-500m"


def test_contract_per_face_and_default_outputs(two_faces, photo, description):
    body = two_faces
    image = decode_image(photo(TWO_FACES))
    height, width = image.shape[:2]
    assert (body["width"], body["height"]) == (width, height)
    assert body["morphable_model"] == description
    assert len(body["faces"]) == 2 and [f["face_index"] for f in body["faces"]] == [0, 1]
    for face in body["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and 0 < face["score"] <= 1
        marks = np.array(face["landmarks"])
        assert marks.shape == (68, 3)
        # The landmarks lie on the face: within its box, grown a little.
        w, h = x2 - x1, y2 - y1
        assert np.all((marks[:, 0] > x1 - 0.3 * w) & (marks[:, 0] < x2 + 0.3 * w))
        assert np.all((marks[:, 1] > y1 - 0.3 * h) & (marks[:, 1] < y2 + 0.3 * h))
        assert set(face["pose"]) == {"yaw", "pitch", "roll"} and all(abs(v) < 90 for v in face["pose"].values())
        # Renders on by default: the frontal render is RGBA img_size^2; the mesh only on request.
        render = png(face["render_png_base64"])
        assert render.shape == (128, 128, 4) and (render[..., 3] == 255).mean() > 0.2
        assert face["mesh_zip_base64"] is None
    anonymized = png(body["anonymized_png_base64"])
    segmented = png(body["segmented_png_base64"])
    assert anonymized.shape == (height, width, 3) and segmented.shape == (height, width, 4)
    assert not np.array_equal(anonymized, image)
    assert (segmented[..., 3] == 0).any() and (segmented[..., 3] == 255).mean() > 0.9
    # The background, far from both faces, is the photo (PNG is lossless).
    np.testing.assert_array_equal(anonymized[-10:, :], image[-10:, :])


def test_mesh_only_on_request_is_a_valid_zip(client, url, photo, tmp_path):
    body = ok(post(client, url, photo(ONE_FACE), outputs="mesh"))
    assert body["anonymized_png_base64"] is None and body["segmented_png_base64"] is None
    [face] = body["faces"]
    assert face["render_png_base64"] is None
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(face["mesh_zip_base64"])))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == ["face0.mtl", "face0.obj", "face0_texture.png"]
    assert "map_Kd face0_texture.png" in archive.read("face0.mtl").decode()
    assert archive.read("face0.obj").decode().startswith("mtllib face0.mtl")
    # It reads back as the textured mesh: the model's vertices, triangles and UVs, the texture at tex_size.
    archive.extractall(tmp_path)
    mesh = read_obj(tmp_path / "face0.obj")
    assert mesh.vertices.shape == (38365, 3) and mesh.triangles.shape == (76073, 3)
    assert mesh.uvs.shape == (38365, 2) and mesh.texture.shape == (256, 256, 3)
    assert not np.any(np.all(mesh.texture == 0, axis=2))  # no black texels


def test_no_face_is_200_with_the_image_unchanged(client, url, photo):
    data = photo(NO_FACE)
    body = ok(post(client, url, data))
    assert body["faces"] == []
    np.testing.assert_array_equal(png(body["anonymized_png_base64"]), decode_image(data))
    assert np.all(png(body["segmented_png_base64"])[..., 3] == 255)


@pytest.mark.parametrize(
    "fields",
    [
        {"alpha": "1.5"},
        {"alpha": "most"},
        {"tex_size": "128"},
        {"tex_size": "8192"},
        {"img_size": "10"},
        {"margin": "0"},
        {"alpha_thresh": "1"},
        {"keep_pose": "perhaps"},
        {"margin_px": "-1"},
        {"outputs": "anonymized,thumbnail"},
        {"outputs": " , "},
    ],
)
def test_bad_params_are_422_in_the_error_shape(client, url, fields):
    jpeg = encode(gradient_rgb(), "JPEG")
    body = assert_error(post(client, url, jpeg, **fields), 422, "invalid_parameter")
    assert body["message"]


def test_text_file_is_415_and_junk_bytes_are_400(client, url):
    assert_error(post(client, url, b"just some text, not an image\n", name="notes.txt"), 415, "unsupported_format")
    jpeg = encode(gradient_rgb(), "JPEG")
    assert_error(post(client, url, jpeg[:200]), 400, "corrupt_image")
    assert_error(post(client, url, b""), 400, "empty_image")


def test_parameters_reach_the_pipeline(client, url, photo):
    """keep_pose=False, alpha=0, remove_mouth=False: a different anonymised photo and a
    segmented alpha that keeps the mouth; bg_white turns the render's background white."""
    data = photo(ONE_FACE)
    default = ok(post(client, url, data, outputs="segmented,renders"))
    other = ok(post(client, url, data, outputs="segmented,renders", remove_mouth=False, bg_white=True))
    mouth = np.array(default["faces"][0]["landmarks"])[48:60, :2].mean(0).round().astype(int)
    assert png(default["segmented_png_base64"])[mouth[1], mouth[0], 3] == 0
    assert png(other["segmented_png_base64"])[mouth[1], mouth[0], 3] == 255
    white, black = (png(b["faces"][0]["render_png_base64"]) for b in (other, default))
    for render, colour in ((white, 255), (black, 0)):  # the frame's corners are background
        assert np.all(render[:4, :4, 3] == 0) and np.all(render[:4, :4, :3] == colour)
