"""Crop styles on synthetic faces: where the face lands in each crop, sizes, padding,
and scale_shift's draws staying inside their configured ranges."""

import cv2
import numpy as np
import pytest

from deployments.types import FIVE_POINT, FaceLandmarks
from serve_app.faces.align import ARCFACE_TEMPLATE_112, aligned_crops
from serve_app.faces.crops import (
    CROP_STYLES,
    buffalo_crop,
    original_crop,
    scale_shift_crop,
    scale_shift_matrix,
)


def synthetic_face(scale=2.0, angle=15.0, offset=(150.0, 90.0)):
    """A face whose 5 points are the ArcFace template rotated, scaled and moved, and an
    image with a distinct dot at each point (so where the points land can be measured)."""
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
    points = (ARCFACE_TEMPLATE_112 - 56.0) @ rot.T + np.asarray(offset) + 56.0 * scale
    image = np.zeros((480, 640, 3), np.uint8)
    for i, (x, y) in enumerate(points):
        cv2.circle(image, (int(round(x)), int(round(y))), 3, (40 * (i + 1), 255, 0), -1)
    box = np.array([*points.min(0) - 30 * scale, *points.max(0) + 30 * scale], np.float32)
    face = FaceLandmarks(box=box, score=0.9, points=points.astype(np.float32), scheme=FIVE_POINT)
    return image, face


def dot_centre(crop, i):
    """Centre of mass of the dot painted for point i (its red value is 40 * (i + 1))."""
    mask = (np.abs(crop[..., 0].astype(int) - 40 * (i + 1)) < 12) & (crop[..., 1] > 220)  # dot cores only
    ys, xs = np.nonzero(mask)
    assert len(xs), f"dot {i} is not in the crop"
    return np.array([xs.mean(), ys.mean()])


def test_styles():
    assert CROP_STYLES == ("buffalo", "original_cropping", "scale_shift")


@pytest.mark.parametrize("size", [112, 224])
def test_buffalo_puts_the_points_on_the_scaled_arcface_template(size):
    image, face = synthetic_face()
    crop = buffalo_crop(image, face, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    for i, target in enumerate(ARCFACE_TEMPLATE_112 * size / 112):
        assert np.linalg.norm(dot_centre(crop, i) - target) < 1.0 * size / 112


def test_buffalo_112_is_the_extraction_pipelines_crop_bit_for_bit():
    image, face = synthetic_face(scale=1.3, angle=-8)
    np.testing.assert_array_equal(buffalo_crop(image, face), aligned_crops(image, face.points, (112,))[0])


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_original_crop_is_the_grown_box_made_square(margin):
    image = np.zeros((400, 600, 3), np.uint8)
    box = np.array([200, 100, 280, 220], np.float32)  # 80 x 120: taller than wide
    image[100:220, 200:280] = 255
    face = FaceLandmarks.box_only(box, 0.9)
    crop = original_crop(image, face, margin=margin, size=112)
    assert crop.shape == (112, 112, 3)
    # The square's side is the grown box's height, so the box's height fills
    # 1 / (1 + 2 * margin) of the crop and its width 2/3 of that, centred.
    ys, xs = np.nonzero(crop[..., 0] > 127)
    expect_h = 112 / (1 + 2 * margin)
    assert ys.max() - ys.min() + 1 == pytest.approx(expect_h, abs=2)
    assert xs.max() - xs.min() + 1 == pytest.approx(expect_h * 80 / 120, abs=2)
    assert xs.mean() == pytest.approx(55.5, abs=1) and ys.mean() == pytest.approx(55.5, abs=1)


def test_original_crop_pads_with_black_beyond_the_image_and_shrinks_large_faces():
    image = np.full((300, 300, 3), 200, np.uint8)
    face = FaceLandmarks.box_only([0, 0, 300, 300], 0.9)  # at the border, larger than the crop
    crop = original_crop(image, face, margin=0.25, size=100)
    assert crop.shape == (100, 100, 3)
    # Grown square: 450 px centred on the image: a 75 px black frame, 16.7 px in the crop.
    assert crop[:14].max() == 0 and crop[-14:].max() == 0 and crop[:, :14].max() == 0
    assert np.all(crop[20:80, 20:80] == 200)


def test_scale_shift_draws_stay_inside_their_ranges_and_cover_them():
    image, face = synthetic_face()
    rng = np.random.default_rng(7)
    draws = [scale_shift_crop(image, face, rng, scale_range=(0.85, 1.05), shift_range=0.1)[1] for _ in range(300)]
    scales = np.array([s for s, _ in draws])
    shifts = np.array([sh for _, sh in draws])
    assert scales.min() >= 0.85 and scales.max() <= 1.05
    assert np.abs(shifts).max() <= 0.1
    # Not a constant: the draws spread over most of each range.
    assert scales.max() - scales.min() > 0.15 and np.ptp(shifts, axis=0).min() > 0.16


def test_scale_shift_crop_moves_the_face_by_what_it_reports():
    image, face = synthetic_face(scale=2.2, angle=-12)
    crop, (scale, (sx, sy)) = scale_shift_crop(image, face, np.random.default_rng(3), size=112)
    np.testing.assert_array_equal(crop, cv2.warpAffine(image, scale_shift_matrix(face, scale, (sx, sy)), (112, 112)))
    centre = 56.0
    for i, target in enumerate(ARCFACE_TEMPLATE_112):
        expect = scale * (target - centre) + centre + np.array([sx, sy]) * 112
        assert np.linalg.norm(dot_centre(crop, i) - expect) < 1.0


def test_scale_shift_with_a_point_range_is_the_aligned_crop():
    image, face = synthetic_face()
    crop, (scale, shift) = scale_shift_crop(image, face, np.random.default_rng(0), scale_range=(1, 1), shift_range=0)
    assert scale == 1.0 and shift == (0.0, 0.0)
    np.testing.assert_allclose(crop.astype(int), buffalo_crop(image, face).astype(int), atol=1)


def test_scale_shift_is_seeded():
    image, face = synthetic_face()
    a = scale_shift_crop(image, face, np.random.default_rng(11))
    b = scale_shift_crop(image, face, np.random.default_rng(11))
    c = scale_shift_crop(image, face, np.random.default_rng(12))
    assert a[1] == b[1] and np.array_equal(a[0], b[0])
    assert a[1] != c[1]


def test_scale_shift_rejects_bad_ranges():
    image, face = synthetic_face()
    with pytest.raises(ValueError):
        scale_shift_crop(image, face, np.random.default_rng(0), scale_range=(1.1, 0.9))
    with pytest.raises(ValueError):
        scale_shift_crop(image, face, np.random.default_rng(0), shift_range=-0.1)


@pytest.mark.parametrize("mirrored", [False, True])
def test_similarity_transform_is_skimages_estimate_that_norm_crop_uses(mirrored):
    """Our closed form against skimage's Umeyama (SVD) on noisy detector-like points,
    and on mirrored points, where Umeyama's reflection check has to act."""
    import warnings

    from skimage.transform import SimilarityTransform

    from serve_app.faces.align import similarity_transform

    rng = np.random.default_rng(7)
    for _ in range(20):
        _, face = synthetic_face(scale=rng.uniform(0.3, 4), angle=rng.uniform(-60, 60), offset=rng.uniform(0, 300, 2))
        src = face.points + rng.normal(0, 3, face.points.shape)
        if mirrored:
            src[:, 0] = -src[:, 0]
        tform = SimilarityTransform()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage's deprecation notice on estimate
            tform.estimate(src, ARCFACE_TEMPLATE_112)
        np.testing.assert_allclose(
            similarity_transform(src, ARCFACE_TEMPLATE_112), tform.params[:2], rtol=1e-6, atol=1e-5
        )  # skimage keeps float32 points
