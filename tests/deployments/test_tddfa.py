"""TDDFA (3DDFA_V2 mb05, real weights) on real photos: faces from RetinaFace, crops by
3DDFA_V2's rule, the 68 landmarks from the assembled morphable model checked against
RetinaFace's own 5 points; batching, the channel order, pose signs, the crop helpers."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.tddfa.bfm import MorphableModel, to_image
from deployments.tddfa.crops import crop_120, crops_for_boxes, roi_box_from_bbox
from deployments.tddfa.model import TDDFA, TDDFAConfig
from serve_app.imaging import decode_image
from tests.helpers import FRONTAL_PHOTOS

# Photos with near-frontal faces (|yaw| up to ~30 degrees): the 68 landmarks' eye
# centres, nose tip and mouth corners land within 8 % of the inter-ocular distance of
# RetinaFace's 5 points on average per photo (measured 2.3-6.9 %, see the report).
FRONTAL = list(FRONTAL_PHOTOS)


@pytest.fixture(scope="module")
def tddfa(asset):
    return TDDFA(
        TDDFAConfig(
            weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std")), arch="mb05"
        )
    )


@pytest.fixture(scope="module")
def bfm(asset):
    return MorphableModel.load(asset("tddfa-bfm-assembled"))


@pytest.fixture(scope="module")
def faces_of(asset, photos_dir):
    """name -> (RGB image, RetinaFace faces), cached for the module."""
    detector = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))
    cache = {}

    def _faces(name: str):
        if name not in cache:
            image = decode_image((photos_dir / name).read_bytes())
            cache[name] = image, detector.predict([image])[0]
        return cache[name]

    return _faces


def five_from_68(points: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners: RetinaFace's 5 points from the iBUG 68."""
    p = points[:, :2]
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def landmark_errors(tddfa, bfm, image, faces, bgr_swap: bool = False) -> list[float]:
    """Per face: mean distance of the 5 derived points to RetinaFace's, / inter-ocular."""
    crops, rois = crops_for_boxes(image, [f.box for f in faces])
    if bgr_swap:
        crops = np.ascontiguousarray(crops[..., ::-1])
    params = tddfa.predict([crops])[0]
    errors = []
    for face, p, roi in zip(faces, params, rois):
        ours = five_from_68(to_image(bfm.landmarks(p), roi))
        inter_ocular = np.linalg.norm(face.points[0] - face.points[1])
        errors.append(float(np.linalg.norm(ours - face.points, axis=1).mean() / inter_ocular))
    return errors


@pytest.mark.parametrize("name", FRONTAL)
def test_68_landmarks_agree_with_retinaface_five_points(tddfa, bfm, faces_of, name):
    image, faces = faces_of(name)
    assert faces
    errors = landmark_errors(tddfa, bfm, image, faces)
    print(f"{name}: {len(faces)} faces, error / inter-ocular mean {np.mean(errors):.3f} max {np.max(errors):.3f}")
    assert np.mean(errors) < 0.08
    assert np.max(errors) < 0.12


def test_weights_expect_bgr_crops(tddfa, bfm, faces_of):
    # 3DDFA_V2 trained on OpenCV (BGR) crops; we take RGB and swap. Feeding the other
    # order (swapping back) makes the landmarks worse over the frontal photos.
    ours, swapped = [], []
    for name in FRONTAL:
        image, faces = faces_of(name)
        ours += landmark_errors(tddfa, bfm, image, faces)
        swapped += landmark_errors(tddfa, bfm, image, faces, bgr_swap=True)
    print(f"mean error: RGB->BGR (ours) {np.mean(ours):.4f}, channels swapped {np.mean(swapped):.4f}")
    assert np.mean(ours) < np.mean(swapped)


def test_golden_pose_of_a_portrait(tddfa, bfm, faces_of):
    image, faces = faces_of("3ddfa_JianzhuGuo.jpg")
    crops, _ = crops_for_boxes(image, [faces[0].box])
    pose = bfm.pose(tddfa.predict([crops])[0][0])
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((0.0, 2.0, -5.0), abs=2.0)


def test_pose_signs_on_turned_faces(tddfa, bfm, faces_of):
    """yaw > 0: the face turns to the image's right (the detector's nose right of its eye
    midpoint); roll follows the eye line's clockwise angle; pitch > 0 chin down."""
    checked = rolls = 0
    for name in [*FRONTAL, "insightface_t1.jpg", "ultralight_audience_profiles_24.jpg"]:
        image, faces = faces_of(name)
        crops, _ = crops_for_boxes(image, [f.box for f in faces])
        for face, p in zip(faces, tddfa.predict([crops])[0]):
            pose = bfm.pose(p)
            left_eye, right_eye, nose = face.points[:3]
            inter_ocular = np.linalg.norm(right_eye - left_eye)
            nose_shift = (nose[0] - (left_eye[0] + right_eye[0]) / 2) / inter_ocular
            eye_line = np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
            print(
                f"{name} box {face.box.astype(int)} yaw {pose.yaw:.0f} pitch {pose.pitch:.0f} "
                f"roll {pose.roll:.0f} (eye line {eye_line:.0f}, nose shift {nose_shift:.2f})"
            )
            if abs(nose_shift) > 0.15 and abs(pose.roll) < 20:
                assert np.sign(pose.yaw) == np.sign(nose_shift)
                checked += 1
            if abs(pose.yaw) < 30 and abs(pose.pitch) < 15:  # else the eye line is no longer the roll
                assert abs(pose.roll - eye_line) < 8
                rolls += 1
    assert checked >= 5 and rolls >= 10
    # The audience photo: every face seen from the side, looking to the image's left.
    image, faces = faces_of("ultralight_audience_profiles_24.jpg")
    crops, _ = crops_for_boxes(image, [f.box for f in faces])
    yaws = [bfm.pose(p).yaw for p in tddfa.predict([crops])[0]]
    assert len(yaws) >= 5 and sum(y < -45 for y in yaws) >= len(yaws) - 1
    # insightface_t1: the two players in the middle look down at the table.
    image, faces = faces_of("insightface_t1.jpg")
    centres = {(int(f.box[0] + f.box[2]) // 2, int(f.box[1] + f.box[3]) // 2): f for f in faces}
    down = [
        f
        for (cx, cy), f in centres.items()
        if (abs(cx - 517) < 30 and abs(cy - 340) < 30) or (abs(cx - 796) < 30 and abs(cy - 411) < 30)
    ]
    assert len(down) == 2
    crops, _ = crops_for_boxes(image, [f.box for f in down])
    assert all(bfm.pose(p).pitch > 10 for p in tddfa.predict([crops])[0])


def test_a_batch_gives_the_one_by_one_parameters(tddfa, faces_of):
    items = []
    for name in ["facedet1mb_nine_kids.jpg", "3ddfa_trump_hillary.jpg", "lfw_Rob_Lowe_0001.jpg"]:
        image, faces = faces_of(name)
        items.append(crops_for_boxes(image, [f.box for f in faces])[0])
    batched = tddfa.predict(items)
    assert [len(b) for b in batched] == [len(i) for i in items] == [tddfa.item_size(i) for i in items]
    for item, params in zip(items, batched):
        assert params.dtype == np.float32 and params.shape == (len(item), 62)
        one_by_one = np.stack([tddfa.predict([crop])[0][0] for crop in item])
        # Compare in the network's normalised units: the de-normalised shape
        # coefficients are ~1e5, so absolute float rounding there is not small.
        np.testing.assert_allclose((params - one_by_one) / tddfa.param_std, 0, atol=1e-4)


def test_items_of_any_size(tddfa):
    crop = np.full((120, 120, 3), 128, np.uint8)
    assert tddfa.predict([]) == []
    out = tddfa.predict([crop, np.zeros((0, 120, 120, 3), np.uint8), np.stack([crop, crop])])
    assert [o.shape for o in out] == [(1, 62), (0, 62), (2, 62)]
    assert TDDFA.item_size(crop) == 1 and TDDFA.item_size(np.stack([crop] * 3)) == 3
    np.testing.assert_array_equal(out[0][0], out[2][1])
    with pytest.raises(ValueError, match="uint8"):
        tddfa.predict([np.zeros((1, 112, 112, 3), np.uint8)])


def test_arch_must_match_the_weights(asset):
    cfg = dict(weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std")))
    assert TDDFA(TDDFAConfig(**cfg)).width == 0.5  # read from the weights
    with pytest.raises(ValueError, match="does not match"):
        TDDFA(TDDFAConfig(**cfg, arch="mb1"))
    with pytest.raises(ValueError, match="unknown TDDFA arch"):
        TDDFA(TDDFAConfig(**cfg, arch="resnet"))


def test_roi_box_follows_3ddfa_v2():
    # Box 100x120 at (50, 40): mean side 110, centre (100, 100 + 0.14*110), side int(173.8).
    roi = roi_box_from_bbox([50, 40, 150, 160])
    np.testing.assert_allclose(roi, [100 - 86.5, 115.4 - 86.5, 100 + 86.5, 115.4 + 86.5])


def test_crop_pads_with_zeros_outside_the_image():
    image = np.full((100, 200, 3), 200, np.uint8)
    image[:, 100:] = 50
    crop = crop_120(image, [-60.4, -20, 60, 100])  # rounds to x -60..60, y -20..100
    assert crop.shape == (120, 120, 3) and crop.dtype == np.uint8
    assert (crop[:, :55] == 0).all() and (crop[:15] == 0).all()  # left and top outside
    assert (crop[30:, 65:] == 200).all()
    whole = crop_120(image, [0, 0, 200, 100])  # non-square ROI: stretched, as 3DDFA_V2 does
    assert (whole[:, :55] == 200).all() and (whole[:, 65:] == 50).all()
    assert (crop_120(image, [300, 300, 400, 400]) == 0).all()  # entirely outside
    with pytest.raises(ValueError, match="empty ROI"):
        crop_120(image, [10, 10, 10, 50])
