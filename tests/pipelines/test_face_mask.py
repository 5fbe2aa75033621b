"""The face-mask pipeline glue in-process, with the real models behind LocalBatcher
(the same awaitable shape as a Serve handle)."""

import asyncio

import numpy as np
import pytest

from deployments.lbp_detector import LBPDetector, LBPDetectorConfig
from deployments.segformer_parser import SegFormerParser, SegFormerParserConfig
from deployments.serving import LocalBatcher
from serve_app.imaging import decode_image
from serve_app.pipelines.face_mask import FaceMaskParams, face_mask, face_rois, merge_masks


@pytest.fixture(scope="module")
def models(asset):
    return (LocalBatcher(LBPDetector(LBPDetectorConfig(str(asset("lbp-detector-cascade"))))),
            LocalBatcher(SegFormerParser(SegFormerParserConfig(str(asset("segformer-parser-tiny"))))))


@pytest.fixture(scope="module")
def five_faces(cartoon_dir):
    return decode_image((cartoon_dir / "kanosawa_anime_5faces.png").read_bytes())


def run(image, params, models):
    return asyncio.run(face_mask(image, params, *models))


def test_mask_covers_only_the_grown_face_boxes(models, five_faces):
    params = FaceMaskParams(threshold=0.0)  # every ROI pixel passes: the mask is the ROI union
    result = run(five_faces, params, models)
    assert len(result.boxes) == 5 and result.mask.shape == five_faces.shape[:2]
    expected = np.zeros_like(result.mask)
    for box, _ in face_rois(five_faces, np.array(result.boxes), params):
        x1, y1, x2, y2 = box
        expected[y1:y2, x1:x2] = 255
    assert np.array_equal(result.mask, expected)


def test_threshold_one_keeps_nothing_and_no_face_gives_an_empty_mask(models, five_faces, photos_dir):
    assert run(five_faces, FaceMaskParams(threshold=1.0), models).mask.max() == 0
    photo = decode_image((photos_dir / "dlib_dogs_noface.jpg").read_bytes())
    result = run(photo, FaceMaskParams(), models)
    assert result.boxes == [] and result.mask.shape == photo.shape[:2] and result.mask.max() == 0


def test_rois_are_capped_at_max_size(five_faces):
    boxes = np.array([[0, 0, 400, 300]], np.float32)
    ((box, small),) = face_rois(five_faces, boxes, FaceMaskParams(max_size=100, expand=0.0))
    assert box == (0, 0, 400, 300) and max(small.shape[:2]) == 100


def test_concurrent_images_share_parser_batches(asset, five_faces, cartoon_dir):
    detect = LocalBatcher(LBPDetector(LBPDetectorConfig(str(asset("lbp-detector-cascade")))))
    parse = LocalBatcher(SegFormerParser(SegFormerParserConfig(str(asset("segformer-parser-tiny")))))
    other = decode_image((cartoon_dir / "cartoonface_11008.jpg").read_bytes())

    async def both():
        return await asyncio.gather(*(face_mask(im, FaceMaskParams(), detect, parse) for im in (five_faces, other)))

    a, b = asyncio.run(both())
    assert len(a.boxes) == 5 and len(b.boxes) == 1
    assert detect.batch_sizes == {2: 1} and parse.batch_sizes == {6: 1}


def test_crf_refines_within_the_rois(models, five_faces):
    plain = run(five_faces, FaceMaskParams(), models)
    refined = run(five_faces, FaceMaskParams(use_crf=True), models)
    assert refined.boxes == plain.boxes
    assert refined.mask.shape == plain.mask.shape and refined.mask.max() == 255
    outside = np.ones_like(plain.mask, bool)
    for box, _ in face_rois(five_faces, np.array(plain.boxes), FaceMaskParams()):
        x1, y1, x2, y2 = box
        outside[y1:y2, x1:x2] = False
    assert refined.mask[outside].max() == 0


def test_merge_takes_the_max_where_faces_overlap():
    probs = [np.full((10, 10), 0.3, np.float32), np.full((10, 10), 0.8, np.float32)]
    mask = merge_masks((20, 20), [(0, 0, 10, 10), (5, 5, 15, 15)], probs, 0.5)
    assert mask[2, 2] == 0 and mask[7, 7] == 255 and mask[12, 12] == 255 and mask[18, 18] == 0


def test_crf_pulls_a_noisy_map_onto_the_image_edges():
    from serve_app.refine import crf_refine

    yy, xx = np.mgrid[:64, :64]
    disk = (yy - 32) ** 2 + (xx - 32) ** 2 < 16**2
    rgb = np.where(disk[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.where(disk, 0.65, 0.35) + rng.normal(0, 0.25, disk.shape), 0, 1).astype(np.float32)
    before = ((noisy >= 0.5) != disk).mean()
    after = ((crf_refine(rgb, noisy) >= 0.5) != disk).mean()
    assert after < before / 3
