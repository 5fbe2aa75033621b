"""The face-extraction pipeline glue in-process, with the real models behind
LocalBatcher (the same awaitable shape as a Serve handle). De-duplication on real
photos: faces of one photo are never merged, a photo sent twice (once mirrored) merges
each person with their own copy only, faces under the quality floor are never merged,
and the default threshold is the recogniser's calibrated one."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from serve_app import errors
from serve_app.config.model_tier import recogniser_threshold
from serve_app.faces.dedup import deduplicate
from serve_app.imaging import decode_image
from serve_app.pipelines.face_extract import FaceExtractParams, extract_faces, faces_in_image, meets_quality_floor
from serve_app.pipelines.locate import detector_input
from tests.helpers import iou

RECOGNISER = "arcface-mobilefacenet-128d"


@pytest.fixture(scope="module")
def models(asset):
    return (
        LocalBatcher(RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))),
        LocalBatcher(ArcFace(ArcFaceConfig(model_path=str(asset(RECOGNISER))))),
    )


def loader_of(photos_dir, name, mirrored=False):
    async def load():
        image = decode_image((photos_dir / name).read_bytes())
        return np.ascontiguousarray(image[:, ::-1]) if mirrored else image

    return load


def failing(code):
    async def load():
        raise errors.ApiError(415, code, "not an image")

    return load


def run(loaders, models, max_concurrent_images=8, **params):
    detect, embed = models
    return asyncio.run(
        extract_faces(
            loaders,
            FaceExtractParams(**params).with_threshold(lambda: recogniser_threshold(RECOGNISER)),
            detect=detect,
            embed=embed,
            max_concurrent_images=max_concurrent_images,
        )
    )


def mirror_box(box, width):
    return np.array([width - box[2], box[1], width - box[0], box[3]])


def test_shrinking_for_the_detector_keeps_insightface_results(models, photos_dir, asset):
    """The detector sees a pre-shrunk image; boxes mapped back match insightface run on
    the full-resolution image."""
    from insightface.model_zoo import get_model

    reference = get_model(str(asset("retinaface-det-500m")), providers=["CPUExecutionProvider"])
    reference.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    for name in ("insightface_t1.jpg", "3ddfa_trump_hillary.jpg", "facedet1mb_nine_kids.jpg"):
        image = decode_image((photos_dir / name).read_bytes())
        small, scale = detector_input(image, 640)
        assert max(small.shape[:2]) == 640 and scale < 1
        result = run([loader_of(photos_dir, name)], models, min_face_size=0)
        det, _ = reference.detect(np.ascontiguousarray(image[..., ::-1]), input_size=(640, 640))
        boxes = np.stack([f.bbox for f in result.faces])
        assert len(boxes) == len(det)
        assert np.diag(iou(boxes, det[:, :4])).min() >= 0.99, name


def test_small_images_travel_unchanged():
    image = np.zeros((250, 200, 3), np.uint8)
    small, scale = detector_input(image, 640)
    assert small is image and scale == 1.0


def test_one_person_in_two_images_is_one_face_and_others_stay_distinct(models, photos_dir):
    names = ["lfw_Rob_Lowe_0001.jpg", "lfw_Nathalie_Baye_0002.jpg", "lfw_Rob_Lowe_0002.jpg"]
    result = run([loader_of(photos_dir, n) for n in names], models)
    assert len(result.faces) == 3 and result.images_processed == 3
    assert result.dedup.leader.tolist() == [0, 1, 0]
    assert result.dedup.similarity[2] > 0.6
    face = result.faces[0]
    assert face.embedding.shape == (128,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    headshot = Image.open(io.BytesIO(face.headshot_jpeg))
    assert headshot.format == "JPEG" and headshot.size == (160, 160)
    assert len({f.face_id for f in result.faces}) == 3


def test_min_face_size_drops_small_faces(models, photos_dir):
    loaders = [loader_of(photos_dir, "facedet1mb_worlds_largest_selfie.jpg")]
    every = run(loaders, models, min_face_size=0)
    big = run(loaders, models, min_face_size=40)
    assert len(big.faces) < len(every.faces)
    for f in big.faces:
        assert min(f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]) >= 40
    assert [f.face_index for f in big.faces] == list(range(len(big.faces)))


def test_a_failing_image_is_reported_and_the_rest_go_on(models, photos_dir):
    loaders = [
        failing("unsupported_format"),
        loader_of(photos_dir, "insightface_t1.jpg"),
        loader_of(photos_dir, "inspireface_view_noface.jpg"),
    ]
    result = run(loaders, models)
    assert [(f.image_index, f.code) for f in result.failures] == [(0, "unsupported_format")]
    assert result.images_processed == 2
    assert {f.image_index for f in result.faces} == {1} and len(result.faces) == 6


def test_faces_come_in_image_then_detection_order(models, photos_dir):
    names = ["facedet1mb_nine_kids.jpg", "insightface_t1.jpg", "3ddfa_trump_hillary.jpg"]
    result = run([loader_of(photos_dir, n) for n in names], models, max_concurrent_images=3)
    keys = [(f.image_index, f.face_index) for f in result.faces]
    assert keys == sorted(keys) and {k[0] for k in keys} == {0, 1, 2}
    for i in range(3):
        scores = [f.score for f in result.faces if f.image_index == i]
        assert scores == sorted(scores, reverse=True)


def test_a_deadline_cancels_the_work_in_flight(models, photos_dir):

    async def go():
        gate = asyncio.Event()

        async def stuck():
            await gate.wait()  # an image that never arrives
            return decode_image((photos_dir / "insightface_t1.jpg").read_bytes())

        detect, embed = models
        work = extract_faces(
            [stuck, loader_of(photos_dir, "lfw_Rob_Lowe_0001.jpg")],
            FaceExtractParams().with_threshold(lambda: 0.5),
            detect=detect,
            embed=embed,
        )
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(work, 1.0)
        await asyncio.sleep(0.05)
        # Nothing of the request is left running on the loop.
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(go()) == []


def test_faces_in_one_image(models, photos_dir):
    """The per-image step on its own: faces in detector order with the image's index,
    boxes in full-resolution pixels and unrounded, 5 landmarks, unit embeddings."""
    detect, embed = LocalBatcher(models[0].model), LocalBatcher(models[1].model)  # fresh batch counts
    image = decode_image((photos_dir / "insightface_t1.jpg").read_bytes())
    faces = asyncio.run(faces_in_image(image, 7, FaceExtractParams(), detect=detect, embed=embed))
    assert len(faces) == 6
    assert [f.image_index for f in faces] == [7] * 6 and [f.face_index for f in faces] == list(range(6))
    h, w = image.shape[:2]
    for f in faces:
        assert f.bbox.shape == (4,) and f.bbox.dtype == np.float32 and f.landmarks.shape == (5, 2)
        assert 0 <= f.bbox[0] < f.bbox[2] <= w + 2 and 0 <= f.bbox[1] < f.bbox[3] <= h + 2
        assert f.embedding.shape == (128,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-5
    assert any(not np.allclose(f.bbox, np.round(f.bbox, 2)) for f in faces)  # full precision kept
    # The recogniser got the image's faces as one stacked item: one batch of one item.
    assert detect.batch_sizes == {1: 1} and embed.batch_sizes == {1: 1}
    big = FaceExtractParams(min_face_size=10_000)
    assert asyncio.run(faces_in_image(image, 0, big, detect=detect, embed=embed)) == []


def test_params_are_bounded_and_frozen():
    from pydantic import ValidationError

    assert FaceExtractParams() == FaceExtractParams(
        similarity_threshold=None, min_face_size=20.0, quality_min_face_size=32.0, quality_min_score=0.6
    )
    for bad in (
        {"similarity_threshold": 1.5},
        {"min_face_size": -1},
        {"max_concurrent_images": 3},
        {"quality_min_face_size": -1},
        {"quality_min_face_size": 20_000},
        {"quality_min_score": 1.1},
        {"quality_min_score": -0.1},
    ):
        with pytest.raises(ValidationError):
            FaceExtractParams(**bad)
    with pytest.raises(ValidationError):
        FaceExtractParams().min_face_size = 3


def test_the_default_threshold_is_the_recognisers_and_a_given_one_overrides_it(models, photos_dir):
    assert recogniser_threshold(RECOGNISER) == 0.5  # assets/manifest.yaml, scripts/calibrate_threshold.py
    loaders = [loader_of(photos_dir, "lfw_Rob_Lowe_0001.jpg"), loader_of(photos_dir, "lfw_Rob_Lowe_0002.jpg")]
    default = run(loaders, models)
    assert default.threshold == 0.5 and default.dedup.leader.tolist() == [0, 0]  # the LFW pair merges
    assert run(loaders, models, similarity_threshold=0.99).dedup.leader.tolist() == [0, 1]
    detect, embed = models
    with pytest.raises(ValueError, match="threshold"):  # neither given: no silent fallback
        asyncio.run(extract_faces(loaders, FaceExtractParams(), detect=detect, embed=embed))


CROWD = "facedet1mb_worlds_largest_selfie.jpg"


@pytest.fixture(scope="module")
def crowd_twice(models, photos_dir):
    """The crowd photo sent twice, byte for byte (detected once for the tests below)."""
    return run([loader_of(photos_dir, CROWD)] * 2, models)


@pytest.mark.parametrize("name", ["facedet1mb_nine_kids.jpg", "insightface_t1.jpg"])
def test_a_group_photo_keeps_every_face_a_separate_person(models, photos_dir, name):
    """Cannot-link: however alike two faces of one photo are, at the default threshold
    and at the old one (0.4)."""
    for threshold in (None, 0.4):
        result = run([loader_of(photos_dir, name)], models, similarity_threshold=threshold)
        assert len(result.faces) >= 6
        assert result.dedup.kept.tolist() == list(range(len(result.faces))), name


def test_the_crowd_keeps_every_face_a_separate_person(crowd_twice):
    """104 faces of 104 people; the old rule (0.4, no cannot-link) made 70 people of them."""
    first = [f for f in crowd_twice.faces if f.image_index == 0]
    assert len(first) > 100
    assert (crowd_twice.dedup.leader[: len(first)] == np.arange(len(first))).all()
    emb = np.stack([f.embedding for f in first])
    assert len(deduplicate(emb, 0.4, groups=np.zeros(len(first)), eligible=np.ones(len(first), bool)).kept) == len(
        first
    )
    assert len(deduplicate(emb, 0.4).kept) < 0.8 * len(first)  # what cannot-link prevents


def test_a_labelled_class_photo_keeps_every_labelled_face(models, asset):
    """The PASCAL VOC class photo with 7 human-labelled faces: 7 people."""
    folder = asset("benchmark-dlib-faces")
    result = run([loader_of(folder, "2007_007763.jpg")], models)
    assert len(result.faces) == 7 and len(result.dedup.kept) == 7


@pytest.mark.parametrize("name", ["facedet1mb_nine_kids.jpg", "insightface_t1.jpg"])
def test_a_photo_sent_twice_once_mirrored_merges_each_person_with_their_own_copy(models, photos_dir, name):
    width = decode_image((photos_dir / name).read_bytes()).shape[1]
    result = run([loader_of(photos_dir, name), loader_of(photos_dir, name, mirrored=True)], models)
    first = [i for i, f in enumerate(result.faces) if f.image_index == 0]
    second = [i for i, f in enumerate(result.faces) if f.image_index == 1]
    assert len(first) == len(second) >= 6 and not result.low_quality.any()
    leader = result.dedup.leader
    assert result.dedup.kept.tolist() == first  # one person per face of the first photo
    for j in second:
        own = result.faces[leader[j]]
        # The face it joined is itself: the same box once the mirror is undone.
        assert own.image_index == 0 and iou(own.bbox, mirror_box(result.faces[j].bbox, width))[0, 0] > 0.7
        assert result.dedup.similarity[j] >= result.threshold
    assert sorted(leader[second].tolist()) == first  # each person exactly one duplicate


def test_faces_under_the_quality_floor_are_returned_but_never_merged(crowd_twice):
    """The crowd photo twice: a large face merges with its copy, a small or uncertain one
    (similarity 1.0 to its copy) does not, and nothing merges into it."""
    result = crowd_twice
    faces, leader = result.faces, result.dedup.leader
    n = len(faces) // 2
    assert len(faces) == 2 * n and n > 100
    expected = np.array([not meets_quality_floor(f.bbox, f.score, FaceExtractParams()) for f in faces])
    assert (result.low_quality == expected).all() and 20 < expected[:n].sum() < n - 20
    for i in range(n):
        if result.low_quality[i]:
            assert leader[i] == i and leader[n + i] == n + i  # kept apart from its exact copy
        else:
            assert leader[i] == i and leader[n + i] == i and result.dedup.similarity[n + i] > 0.99
    merged_into = leader[leader != np.arange(len(faces))]
    assert not np.isin(np.flatnonzero(result.low_quality), merged_into).any()
    # A floor of zero makes every face count again: each merges with its copy.
    emb = np.stack([f.embedding for f in faces])
    every = deduplicate(emb, result.threshold, groups=np.repeat([0, 1], n))
    assert every.leader[n:].tolist() == list(range(n))
