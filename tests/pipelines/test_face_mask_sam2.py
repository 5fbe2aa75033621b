"""The face-mask-SAM2 pipeline glue in-process: the real RetinaFace and FaceMesh behind
LocalBatcher (the same awaitable shape as a model-tier call), SAM2 stood in by a real
HTTP server on 127.0.0.1 (tests/sam2_standin.py: it answers with the ellipse inscribed
in each box prompt), or an unconfigured client for the polygon fallback."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

import serve_app.clients.sam2 as sc
from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from deployments.types import MESH_478
from serve_app.clients.sam2 import Sam2Client
from serve_app.config.settings import Sam2Config
from serve_app.pipelines.face_mask_sam2 import (
    POLYGON,
    SAM2,
    SPEC,
    FaceMaskSam2Params,
    face_mask_sam2,
    face_outline,
    polygon_mask,
)
from serve_app.pipelines.locate import locate_faces
from tests.helpers import iou
from tests.sam2_standin import Sam2StandIn, ellipse_mask

TWO_FACES = "3ddfa_trump_hillary.jpg"  # 1536 x 689, two faces
GROUP = "insightface_t1.jpg"  # six people around a table, faces ~100 px
NO_FACE = "inspireface_view_noface.jpg"


@pytest.fixture(scope="module")
def models(asset):
    mesh_model = FaceMesh(FaceMeshConfig())
    yield (
        LocalBatcher(RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))),
        LocalBatcher(mesh_model),
    )
    mesh_model.close()


@pytest.fixture(scope="module")
def standin():
    with Sam2StandIn(mode="png") as server:
        yield server


@pytest.fixture(autouse=True)
def sam2_works(standin):
    standin.mode = "png"
    yield
    standin.mode = "png"


def run(image, models, sam2_cfg: Sam2Config, **params):
    """One pipeline call with a fresh SAM2 client (closed after)."""
    detect, mesh = models

    async def go():
        client = Sam2Client(sam2_cfg)
        try:
            return await face_mask_sam2(image, FaceMaskSam2Params(**params), detect=detect, mesh=mesh, sam2=client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def located(image, models, max_faces=20):
    detect, mesh = models
    return asyncio.run(locate_faces(image, detect, mesh, max_faces))


def expected_sam2_mask(result) -> np.ndarray:
    """What the stand-in computes, the ellipse inscribed in each face's box prompt, as
    the pipeline keeps it: inside the box (x2, y2 exclusive)."""
    mask = np.zeros((result.height, result.width), np.uint8)
    for face in result.faces:
        x1, y1, x2, y2 = face.prompt_box
        ellipse = ellipse_mask(result.height, result.width, face.prompt_box)
        mask[y1:y2, x1:x2] |= ellipse[y1:y2, x1:x2]
    return mask * 255


def inside_prompt_boxes(result) -> np.ndarray:
    inside = np.zeros((result.height, result.width), bool)
    for face in result.faces:
        x1, y1, x2, y2 = face.prompt_box
        inside[y1:y2, x1:x2] = True
    return inside


def test_spec_names_the_models_it_calls():
    assert SPEC.name == "face_mask_sam2" and SPEC.params is FaceMaskSam2Params
    assert SPEC.models == {"detect": "RetinaFace", "mesh": "FaceMesh"}


def test_sam2_masks_on_a_real_photo(models, load_photo, standin):
    image = load_photo(TWO_FACES)
    before = standin.calls()
    result = run(image, models, Sam2Config(url=standin.url))
    assert (result.width, result.height) == (1536, 689) and result.mask.shape == (689, 1536)
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 255}
    assert len(result.faces) == 2
    assert [(f.mask_source, f.fallback_reason, f.meshed) for f in result.faces] == [(SAM2, None, True)] * 2
    np.testing.assert_array_equal(result.mask, expected_sam2_mask(result))
    # One SAM2 call per face, the full image each time, the prompt box sent as given.
    calls = standin.received[before:]
    assert len(calls) == 2 and {c["image_shape"] for c in calls} == {(689, 1536, 3)}
    assert sorted(c["box"] for c in calls) == sorted(f.prompt_box for f in result.faces)
    for call in calls:
        labels = [p[2] for p in call["points"]]
        assert labels.count(1) == 16 and labels.count(0) > 0 and call["multimask"] is True


def test_parameters_reach_sam2(models, load_photo, standin):
    before = standin.calls()
    result = run(
        load_photo("lfw_Rob_Lowe_0001.jpg"),
        models,
        Sam2Config(url=standin.url),
        multimask=False,
        pos_points=4,
        expand=0.0,
    )
    [call] = standin.received[before:]
    assert call["multimask"] is False and [p[2] for p in call["points"]].count(1) == 4
    assert call["box"] == result.faces[0].prompt_box


def test_polygon_fallback_without_sam2(models, load_photo, standin):
    """No SAM2_URL: every face is its filled face-oval polygon, drawn from the mesh."""
    image = load_photo(TWO_FACES)
    before = standin.calls()
    result = run(image, models, Sam2Config())
    assert standin.calls() == before
    assert [(f.mask_source, f.fallback_reason) for f in result.faces] == [(POLYGON, sc.NOT_CONFIGURED)] * 2
    faces = located(image, models)
    expected = np.zeros(image.shape[:2], bool)
    for face in faces:
        expected |= polygon_mask(face_outline(face), image.shape[:2])
    np.testing.assert_array_equal(result.mask, expected.astype(np.uint8) * 255)
    # The polygons stay inside their prompt boxes (the oval's box, grown).
    assert not result.mask[~inside_prompt_boxes(result)].any()


def test_a_failing_sam2_falls_back_to_the_same_polygons(models, load_photo, standin):
    image = load_photo(TWO_FACES)
    polygons = run(image, models, Sam2Config())
    standin.mode = "error500"
    failed = run(image, models, Sam2Config(url=standin.url, retries=0, breaker_failures=0))
    assert [(f.mask_source, f.fallback_reason) for f in failed.faces] == [(POLYGON, sc.SERVER_ERROR)] * 2
    np.testing.assert_array_equal(failed.mask, polygons.mask)
    standin.mode = "empty"
    empty = run(image, models, Sam2Config(url=standin.url, breaker_failures=0))
    assert [(f.mask_source, f.fallback_reason) for f in empty.faces] == [(POLYGON, sc.EMPTY_MASK)] * 2
    np.testing.assert_array_equal(empty.mask, polygons.mask)


def test_masks_cover_the_faces_on_real_photos(models, load_photo):
    """Each face's mask is its own face: the mesh sits on the detector's face (its 5
    points agree), the mask fills most of the detector box and little outside it, and
    on faces turned less than 25 degrees it holds the eyes, nose tip and mouth corners
    (on a face turned further the projected oval can leave the nose out)."""
    for name in (TWO_FACES, GROUP, "lfw_Nathalie_Baye_0002.jpg", "facedet1mb_nine_kids.jpg"):
        image = load_photo(name)
        result = run(image, models, Sam2Config())
        faces = located(image, models)
        assert len(result.faces) == len(faces) > 0, name
        union = np.zeros(image.shape[:2], bool)
        for source, face in zip(result.faces, faces):
            np.testing.assert_array_equal(source.box, face.box)
            assert source.meshed and face.meshed, name
            assert face.scheme == MESH_478 and face.five is not None and face.pose is not None
            x1, y1, x2, y2 = np.round(face.box).astype(int)
            width = x2 - x1
            mesh_five = face.points[[468, 473, 1, 61, 291], :2]  # the mesh's own irises, nose tip, mouth corners
            assert np.linalg.norm(mesh_five - face.five, axis=1).max() < 0.12 * width, name
            mask = polygon_mask(face_outline(face), image.shape[:2])
            union |= mask
            in_box = mask[y1:y2, x1:x2].sum()
            assert in_box > 0.45 * width * (y2 - y1) and mask.sum() - in_box < 0.08 * mask.sum(), name
            if abs(face.pose.yaw) < 25:
                for x, y in face.five:
                    assert mask[int(y), int(x)], (name, face.pose)
        np.testing.assert_array_equal(result.mask > 0, union)


def test_small_faces_of_a_group_photo_are_meshed_and_capped(models, load_photo, standin):
    image = load_photo(GROUP)
    result = run(image, models, Sam2Config(url=standin.url))
    assert len(result.faces) == 6  # RetinaFace's six faces, each meshed on its own crop
    assert all(f.meshed and f.mask_source == SAM2 for f in result.faces)
    capped = run(image, models, Sam2Config(url=standin.url), max_num_faces=2)
    assert len(capped.faces) == 2
    # The best two by detector score, in the same order as the full run.
    for a, b in zip(capped.faces, result.faces[:2]):
        np.testing.assert_array_equal(a.box, b.box)


def test_a_larger_image_gives_the_same_faces_scaled(models, load_photo):
    image = load_photo("lfw_Rob_Lowe_0001.jpg")
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    small_run, big_run = run(image, models, Sam2Config()), run(big, models, Sam2Config())
    assert len(small_run.faces) == len(big_run.faces) == 1
    assert iou([small_run.faces[0].box * 3], [big_run.faces[0].box])[0, 0] > 0.9
    small_mask = cv2.resize(small_run.mask, (big.shape[1], big.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    big_mask = big_run.mask > 0
    assert (small_mask & big_mask).sum() / (small_mask | big_mask).sum() > 0.9


def test_no_face_is_an_empty_mask_and_no_sam2_call(models, load_photo, standin):
    image = load_photo(NO_FACE)
    before = standin.calls()
    result = run(image, models, Sam2Config(url=standin.url))
    assert result.faces == [] and result.mask.shape == image.shape[:2] and result.mask.max() == 0
    assert standin.calls() == before


def test_an_unmeshed_face_is_the_ellipse_of_its_box():
    from deployments.types import FIVE_POINT, FaceLandmarks

    five = np.array([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]], np.float32)
    face = FaceLandmarks(
        box=np.array([20, 30, 80, 100], np.float32), score=0.9, points=five, scheme=FIVE_POINT, meshed=False
    )
    outline = face_outline(face)
    assert outline.shape == (36, 2)
    np.testing.assert_allclose(outline[0], [50, 30], atol=1e-4)  # starts at the top, like the oval
    np.testing.assert_allclose(
        [outline[:, 0].min(), outline[:, 1].min(), outline[:, 0].max(), outline[:, 1].max()],
        [20, 30, 80, 100],
        atol=0.2,
    )
    mask = polygon_mask(outline, (120, 100))
    ellipse = ellipse_mask(120, 100, (20, 30, 80, 100)).astype(bool)
    assert (mask & ellipse).sum() / (mask | ellipse).sum() > 0.95
