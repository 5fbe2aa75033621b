"""The shared per-face type (FaceLandmarks) and Placement: validation, scaling, and the
five alignment points each scheme gives."""

import dataclasses

import numpy as np
import pytest

from deployments.types import (
    BOX_ONLY,
    FIVE_POINT,
    IBUG_68,
    MESH_478,
    POINTS_PER_SCHEME,
    SCHEMES,
    FaceLandmarks,
    Placement,
    Pose,
)

BOX = np.array([10, 20, 110, 140], np.float32)
FIVE = np.array([[40, 60], [80, 60], [60, 85], [45, 110], [75, 110]], np.float32)


def points(n: int, dims: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, (n, dims)).astype(np.float32)


def face(scheme: str, dims: int = 2, **kw) -> FaceLandmarks:
    return FaceLandmarks(box=BOX, score=0.9, points=points(POINTS_PER_SCHEME[scheme], dims), scheme=scheme, **kw)


# ---- validation -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_takes_exactly_its_points(scheme):
    want = POINTS_PER_SCHEME[scheme]
    assert len(face(scheme).points) == want
    for wrong in {want + 1, max(want - 1, 0)} - {want}:
        with pytest.raises(ValueError, match=scheme):
            FaceLandmarks(box=BOX, score=0.9, points=points(wrong), scheme=scheme)


def test_schemes_and_counts():
    assert POINTS_PER_SCHEME == {BOX_ONLY: 0, FIVE_POINT: 5, IBUG_68: 68, MESH_478: 478}
    assert set(SCHEMES) == set(POINTS_PER_SCHEME)


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        FaceLandmarks(box=BOX, score=1.0, points=points(5), scheme="5 points")


def test_faces_are_frozen_and_keyword_only():
    f = face(FIVE_POINT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.score = 0.1
    with pytest.raises(TypeError):
        FaceLandmarks(BOX, 0.9, points(5), FIVE_POINT)
    assert f.pose is None and f.five is None and f.meshed is True


def test_box_only_is_a_face_without_landmarks():
    f = FaceLandmarks.box_only([1, 2, 30, 40], np.float64(0.75))
    assert f.scheme == BOX_ONLY and f.points.shape == (0, 2)
    assert f.box.dtype == np.float32 and f.box.tolist() == [1, 2, 30, 40]
    assert isinstance(f.score, float) and f.score == 0.75


# ---- scaled -----------------------------------------------------------------------------


def test_scaled_scales_box_points_and_five_alike():
    pose = Pose(yaw=10.0, pitch=-5.0, roll=2.0)
    f = face(MESH_478, dims=3, pose=pose, five=FIVE, meshed=False)
    g = f.scaled(2.5)
    np.testing.assert_allclose(g.box, BOX * 2.5, rtol=1e-6)
    np.testing.assert_allclose(g.points, f.points * 2.5, rtol=1e-6)  # z too (scaled like x, y)
    np.testing.assert_allclose(g.five, FIVE * 2.5, rtol=1e-6)
    assert g.box.dtype == g.points.dtype == g.five.dtype == np.float32
    assert g.points.shape == (478, 3)
    # What is not a length stays: score, scheme, pose (angles), meshed.
    assert (g.score, g.scheme, g.pose, g.meshed) == (0.9, MESH_478, pose, False)
    # The original is untouched.
    np.testing.assert_array_equal(f.box, BOX)


def test_scaled_keeps_missing_five_missing_and_round_trips():
    f = face(FIVE_POINT)
    g = f.scaled(1 / 3)
    assert g.five is None
    np.testing.assert_allclose(g.scaled(3).points, f.points, rtol=1e-5)
    assert face(BOX_ONLY).scaled(2).points.shape == (0, 2)


# ---- five_points, per scheme --------------------------------------------------------


def test_five_points_of_a_5_point_face_are_its_points():
    f = FaceLandmarks(box=BOX, score=0.9, points=FIVE, scheme=FIVE_POINT)
    np.testing.assert_array_equal(f.five_points(), FIVE)


def test_five_points_of_a_68_point_face():
    f = face(IBUG_68)
    p = f.points
    want = [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]  # eye centres, nose tip, mouth corners
    out = f.five_points()
    assert out.shape == (5, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_five_points_of_a_68_point_face_with_depth():
    f = face(IBUG_68, dims=3)
    assert f.five_points().shape == (5, 2)
    np.testing.assert_allclose(f.five_points()[2], f.points[30, :2])


def test_five_points_of_a_mesh_are_irises_nose_tip_and_mouth_corners():
    f = face(MESH_478, dims=3)
    out = f.five_points()
    assert out.shape == (5, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, f.points[[468, 473, 1, 61, 291], :2])


@pytest.mark.parametrize("scheme", [IBUG_68, MESH_478])
def test_the_detectors_five_points_win_when_kept(scheme):
    f = face(scheme, dims=3, five=FIVE)
    np.testing.assert_array_equal(f.five_points(), FIVE)


def test_a_box_only_face_has_no_five_points():
    with pytest.raises(ValueError, match="box-only"):
        face(BOX_ONLY).five_points()
    # ...unless a detector's five points were kept with it.
    np.testing.assert_array_equal(face(BOX_ONLY, five=FIVE).five_points(), FIVE)


# ---- Placement and Pose --------------------------------------------------------------


def test_placement_defaults_to_one_cpu_thread_and_is_keyword_only():
    assert Placement() == Placement(device="cpu", threads=1)
    assert Placement(device="cuda", threads=4).device == "cuda"
    with pytest.raises(TypeError):
        Placement("cuda")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Placement().threads = 2


def test_pose_is_keyword_only():
    with pytest.raises(TypeError):
        Pose(1.0, 2.0, 3.0)
    assert Pose(yaw=1.0, pitch=2.0, roll=3.0).roll == 3.0
