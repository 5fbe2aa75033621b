"""The face-mask pipeline glue in-process, with the real models behind LocalBatcher
(the same awaitable shape as a Serve handle)."""

import asyncio

import numpy as np
import pytest

from deployments.lbp_detector.model import LBPDetector, LBPDetectorConfig
from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
from deployments.serving import LocalBatcher
from serve_app.imaging import decode_image
from serve_app.pipelines.face_mask import FaceMaskParams, face_mask, face_rois, merge_masks


@pytest.fixture(scope="module")
def models(asset):
    return (
        LocalBatcher(LBPDetector(LBPDetectorConfig(cascade_path=str(asset("lbp-detector-cascade"))))),
        LocalBatcher(SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(asset("segformer-parser-tiny"))))),
    )


@pytest.fixture(scope="module")
def five_faces(cartoon_dir):
    return decode_image((cartoon_dir / "kanosawa_anime_5faces.png").read_bytes())


def run(image, params, models):
    detect, parse = models
    return asyncio.run(face_mask(image, params, detect=detect, parse=parse))


def test_mask_covers_only_the_grown_face_boxes(models, five_faces):
    params = FaceMaskParams(threshold=0.0)  # every ROI pixel passes: the mask is the ROI union
    result = run(five_faces, params, models)
    assert result.boxes.shape == (5, 4) and result.mask.shape == five_faces.shape[:2]
    assert (result.width, result.height) == (five_faces.shape[1], five_faces.shape[0])
    expected = np.zeros_like(result.mask)
    for box, _ in face_rois(five_faces, result.boxes, params):
        x1, y1, x2, y2 = box
        expected[y1:y2, x1:x2] = 255
    assert np.array_equal(result.mask, expected)


def test_boxes_are_the_detectors_own_unrounded(models, five_faces):
    """The pipeline keeps full precision (rounding is the apps' and jobs' job): its
    boxes are exactly the detector's, best score first."""
    detect, _ = models
    import cv2

    faces = asyncio.run(detect(cv2.cvtColor(five_faces, cv2.COLOR_RGB2GRAY)))
    result = run(five_faces, FaceMaskParams(), models)
    assert result.boxes.dtype == np.float32
    np.testing.assert_array_equal(result.boxes, np.stack([f.box for f in faces]))


def test_hair_widens_the_mask(models, five_faces):
    # The test parser has random weights: its softmax is near uniform, so the face
    # labels sum to about 12/19 = 0.63 and face + hair to 13/19 = 0.68. A threshold
    # between the two shows the hair label really travels to the parser.
    face_only = run(five_faces, FaceMaskParams(threshold=0.66), models)
    with_hair = run(five_faces, FaceMaskParams(threshold=0.66, include_hair=True), models)
    assert (with_hair.mask >= face_only.mask).all() and with_hair.mask.sum() > face_only.mask.sum()


def test_threshold_one_keeps_nothing_and_no_face_gives_an_empty_mask(models, five_faces, photos_dir):
    assert run(five_faces, FaceMaskParams(threshold=1.0), models).mask.max() == 0
    photo = decode_image((photos_dir / "dlib_dogs_noface.jpg").read_bytes())
    result = run(photo, FaceMaskParams(), models)
    assert result.boxes.shape == (0, 4) and result.mask.shape == photo.shape[:2] and result.mask.max() == 0


def test_rois_are_capped_at_max_size(five_faces):
    boxes = np.array([[0, 0, 400, 300]], np.float32)
    ((box, small),) = face_rois(five_faces, boxes, FaceMaskParams(max_size=100, expand=0.0))
    assert box == (0, 0, 400, 300) and max(small.shape[:2]) == 100


def test_concurrent_images_share_parser_batches(asset, five_faces, cartoon_dir):
    detect = LocalBatcher(LBPDetector(LBPDetectorConfig(cascade_path=str(asset("lbp-detector-cascade")))))
    parse = LocalBatcher(SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(asset("segformer-parser-tiny")))))
    other = decode_image((cartoon_dir / "cartoonface_11008.jpg").read_bytes())

    async def both():
        return await asyncio.gather(
            *(face_mask(im, FaceMaskParams(), detect=detect, parse=parse) for im in (five_faces, other))
        )

    a, b = asyncio.run(both())
    assert len(a.boxes) == 5 and len(b.boxes) == 1
    # One parser batch: the two images' faces, each image's as one list item (5 + 1 ROIs).
    assert detect.batch_sizes == {2: 1} and parse.batch_sizes == {2: 1}


def test_crf_refines_within_the_rois(models, five_faces):
    plain = run(five_faces, FaceMaskParams(), models)
    refined = run(five_faces, FaceMaskParams(use_crf=True), models)
    np.testing.assert_array_equal(refined.boxes, plain.boxes)
    assert refined.mask.shape == plain.mask.shape and refined.mask.max() == 255
    outside = np.ones_like(plain.mask, bool)
    for box, _ in face_rois(five_faces, plain.boxes, FaceMaskParams()):
        x1, y1, x2, y2 = box
        outside[y1:y2, x1:x2] = False
    assert refined.mask[outside].max() == 0


def test_merge_takes_the_max_where_faces_overlap():
    probs = [np.full((10, 10), 0.3, np.float32), np.full((10, 10), 0.8, np.float32)]
    mask = merge_masks((20, 20), [(0, 0, 10, 10), (5, 5, 15, 15)], probs, 0.5)
    assert mask[2, 2] == 0 and mask[7, 7] == 255 and mask[12, 12] == 255 and mask[18, 18] == 0


def test_crf_pulls_a_noisy_map_onto_the_image_edges():
    from serve_app.faces.refine import crf_refine

    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 32) ** 2 < 16**2
    rgb = np.where(disk[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.where(disk, 0.65, 0.35) + rng.normal(0, 0.25, disk.shape), 0, 1).astype(np.float32)
    before = ((noisy >= 0.5) != disk).mean()
    after = ((crf_refine(rgb, noisy) >= 0.5) != disk).mean()
    assert after < before / 3
