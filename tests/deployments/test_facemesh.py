"""FaceMesh on real photos with MediaPipe's bundled models (no Ray): results as
FaceLandmarks in the 478-mesh scheme, the face oval, and the head pose from the mesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from deployments.facemesh.landmarks import NUM_LANDMARKS, OVAL_IDS, face_oval, mesh_pose, oval_order
from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from deployments.types import MESH_478, FaceLandmarks, Placement, Pose

SINGLE_FACES = ["lfw_Rob_Lowe_0001.jpg", "3ddfa_JianzhuGuo.jpg", "inspireface_woman_search.jpeg"]
NO_FACES = ["inspireface_view_noface.jpg", "dlib_dogs_noface.jpg"]


@pytest.fixture(scope="module")
def model():
    m = FaceMesh(FaceMeshConfig())
    yield m
    m.close()


@pytest.fixture(scope="module")
def load(photos_dir):
    def _load(name: str) -> np.ndarray:
        return np.asarray(Image.open(photos_dir / name).convert("RGB"))

    return _load


def mediapipe_direct(image: np.ndarray, max_num_faces: int = 5) -> list[np.ndarray]:
    """What MediaPipe itself says, in pixels: [478, 3] per face."""
    from mediapipe.python.solutions import face_mesh

    h, w = image.shape[:2]
    with face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_num_faces, refine_landmarks=True, min_detection_confidence=0.5
    ) as mesh:
        result = mesh.process(image)
    return [
        np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], np.float32)
        for f in (result.multi_face_landmarks or [])
    ]


def is_simple_polygon(poly: np.ndarray) -> bool:
    """No two non-adjacent edges cross."""
    n = len(poly)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    for i in range(n):
        p1, p2 = poly[i], poly[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing edge
            q1, q2 = poly[j], poly[(j + 1) % n]
            if cross(q1, q2, p1) * cross(q1, q2, p2) < 0 and cross(p1, p2, q1) * cross(p1, p2, q2) < 0:
                return False
    return True


def test_group_photo_faces_are_found(model, load):
    # insightface_t1.jpg: six people around a table, faces ~100 px in 1280 px. The
    # mesh's own short-range detector finds none; the full-range pass finds them.
    faces = model.predict([load("insightface_t1.jpg")])[0]
    assert len(faces) >= 3
    boxes = np.array([f.box for f in faces])
    sides = boxes[:, 2:] - boxes[:, :2]
    assert (sides > 50).all() and (sides < 250).all()


@pytest.mark.parametrize("name", SINGLE_FACES)
def test_one_face_photos(model, load, name):
    assert len(model.predict([load(name)])[0]) == 1


@pytest.mark.parametrize("name", NO_FACES)
def test_no_face_images(model, load, name):
    assert model.predict([load(name)])[0] == []


@pytest.mark.parametrize(
    "name",
    [
        "insightface_t1.jpg",
        "3ddfa_trump_hillary.jpg",
        "lfw_Rob_Lowe_0001.jpg",
        "insightface_Tom_Hanks_54745_aligned112.png",
    ],
)
def test_landmarks_and_oval_are_inside_the_image(model, load, name):
    image = load(name)
    h, w = image.shape[:2]
    for face in model.predict([image])[0]:
        assert isinstance(face, FaceLandmarks) and face.scheme == MESH_478
        assert face.points.shape == (NUM_LANDMARKS, 3) and face.points.dtype == np.float32
        assert face.box.shape == (4,) and face.box.dtype == np.float32
        assert face.score == 1.0 and isinstance(face.pose, Pose) and face.five is None and face.meshed
        xy = face.points[:, :2]
        assert (xy >= 0).all() and (xy[:, 0] <= w).all() and (xy[:, 1] <= h).all()
        oval = face_oval(face)
        assert oval.shape == (36, 2) and oval.dtype == np.float32


@pytest.mark.parametrize("name", ["3ddfa_trump_hillary.jpg", "lfw_Rob_Lowe_0002.jpg", "ultralight_handshake_13.jpg"])
def test_results_equal_mediapipe_called_directly(load, name):
    image = load(name)
    direct = mediapipe_direct(image)
    ours = FaceMesh(FaceMeshConfig(find_small_faces=False))
    try:
        faces = ours.predict([image])[0]
    finally:
        ours.close()
    assert len(faces) == len(direct) > 0
    h, w = image.shape[:2]
    for face, ref in zip(faces, direct):
        ref[:, 0] = np.clip(ref[:, 0], 0, w)
        ref[:, 1] = np.clip(ref[:, 1], 0, h)
        np.testing.assert_allclose(face.points, ref, atol=1e-3)


def test_first_pass_faces_come_first_and_unchanged(model, load):
    image = load("ultralight_audience_profiles_24.jpg")
    direct = mediapipe_direct(image)
    faces = model.predict([image])[0]
    assert len(faces) >= len(direct)
    for face, ref in zip(faces, direct):
        np.testing.assert_allclose(face.points[:, :2], np.clip(ref[:, :2], 0, None), atol=1e-3)


@pytest.mark.parametrize(
    "name",
    [
        "insightface_t1.jpg",
        "3ddfa_trump_hillary.jpg",
        "facedet1mb_nine_kids.jpg",
        "ultralight_audience_profiles_24.jpg",
    ],
)
def test_ordered_oval_is_a_simple_polygon(model, load, name):
    faces = model.predict([load(name)])[0]
    assert faces
    for face in faces:
        oval = face_oval(face)
        assert is_simple_polygon(oval)
        box = [oval[:, 0].min(), oval[:, 1].min(), oval[:, 0].max(), oval[:, 1].max()]
        np.testing.assert_array_equal(face.box, box)


def test_oval_order_walks_the_edge_chain():
    from mediapipe.python.solutions import face_mesh

    order = oval_order(face_mesh.FACEMESH_FACE_OVAL)
    assert order[0] == 10 and len(order) == len(set(order)) == 36
    edges = {frozenset(e) for e in face_mesh.FACEMESH_FACE_OVAL}
    assert all(frozenset((a, b)) in edges for a, b in zip(order, order[1:] + order[:1]))
    # Independent of the set's iteration order.
    assert oval_order(sorted(face_mesh.FACEMESH_FACE_OVAL, reverse=True)) == order
    with pytest.raises(ValueError):
        oval_order([(1, 2), (2, 3), (3, 1), (4, 5), (5, 6), (6, 4)])


def test_batch_equals_one_by_one_and_no_state_carries(model, load):
    images = [load("lfw_Rob_Lowe_0001.jpg"), load(NO_FACES[0]), load("3ddfa_trump_hillary.jpg")]
    batched = model.predict(images)
    singles = [model.predict([img])[0] for img in reversed(images)][::-1]
    assert [len(b) for b in batched] == [1, 0, 2]
    for b, s in zip(batched, singles):
        for fb, fs in zip(b, s):
            np.testing.assert_array_equal(fb.points, fs.points)
            assert fb.pose == fs.pose


def test_max_num_faces_caps_both_passes(load):
    capped = FaceMesh(FaceMeshConfig(max_num_faces=2))
    try:
        assert len(capped.predict([load("facedet1mb_nine_kids.jpg")])[0]) == 2
        assert len(capped.predict([load("insightface_t1.jpg")])[0]) == 2
    finally:
        capped.close()


def test_scaled_face_matches_a_larger_image(model, load):
    (face,) = model.predict([load("lfw_Rob_Lowe_0001.jpg")])[0]
    big = face.scaled(2.5)
    np.testing.assert_allclose(big.points, face.points * 2.5, rtol=1e-6)  # x, y and z alike
    np.testing.assert_allclose(big.box, face.box * 2.5, rtol=1e-6)
    np.testing.assert_allclose(face_oval(big), face_oval(face) * 2.5, rtol=1e-6)
    assert big.scheme == MESH_478 and big.pose == face.pose  # angles do not scale


def test_oval_ids_are_mediapipes_oval_walked_from_the_forehead():
    """The pipelines take the oval from OVAL_IDS without importing MediaPipe: it must
    be MediaPipe's own FACEMESH_FACE_OVAL edge chain."""
    from mediapipe.python.solutions import face_mesh

    assert OVAL_IDS == tuple(oval_order(face_mesh.FACEMESH_FACE_OVAL))


def test_face_oval_takes_the_oval_points_in_order():
    points = np.arange(NUM_LANDMARKS * 3, dtype=np.float32).reshape(NUM_LANDMARKS, 3)
    face = FaceLandmarks(box=np.zeros(4, np.float32), score=1.0, points=points, scheme=MESH_478)
    np.testing.assert_array_equal(face_oval(face), points[list(OVAL_IDS), :2])


# ---- head pose from the mesh ----------------------------------------------------------


def synthetic_head(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """[478, 3] with the four points mesh_pose reads, of a frontal head (image axes: x
    right, y down, z away from the camera) turned by the given angles in degrees."""
    pts = np.zeros((NUM_LANDMARKS, 3), np.float64)
    pts[33], pts[263] = (-40, 0, 0), (40, 0, 0)  # eye outer corners: image left, image right
    pts[10], pts[152] = (0, -60, 0), (0, 80, 0)  # forehead top, chin
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    turn = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    tilt = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    spin = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (pts @ (spin @ tilt @ turn).T + (200, 200, 0)).astype(np.float32)


@pytest.mark.parametrize(
    "angles", [(0, 0, 0), (30, 0, 0), (-50, 0, 0), (0, 20, 0), (0, -15, 0), (0, 0, 25), (0, 0, -10)]
)
def test_mesh_pose_recovers_known_rotations(angles):
    pose = mesh_pose(synthetic_head(*angles))
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx(angles, abs=1e-3)


def test_mesh_pose_on_a_frontal_face(model, load):
    (face,) = model.predict([load("3ddfa_JianzhuGuo.jpg")])[0]
    print(f"\nfrontal: yaw {face.pose.yaw:.1f}, pitch {face.pose.pitch:.1f}, roll {face.pose.roll:.1f}")
    assert abs(face.pose.yaw) < 8 and abs(face.pose.pitch) < 20 and abs(face.pose.roll) < 15


@pytest.mark.parametrize("name", ["lfw_Nathalie_Baye_0002.jpg", "inspireface_woman_search.jpeg"])
def test_a_mirrored_photo_turns_the_other_way(model, load, name):
    image = load(name)
    (face,) = model.predict([image])[0]
    (mirrored,) = model.predict([np.ascontiguousarray(image[:, ::-1])])[0]
    a, b = face.pose, mirrored.pose
    print(f"\n{name}: yaw {a.yaw:.1f} / mirrored {b.yaw:.1f}; roll {a.roll:.1f} / {b.roll:.1f}")
    assert abs(a.yaw) > 10 and a.yaw * b.yaw < 0
    assert abs(a.yaw + b.yaw) < 6 and abs(a.pitch - b.pitch) < 6  # mirroring flips yaw, keeps pitch
    # yaw > 0 turns the face towards the image's right: the nose tip is right of the oval's centre.
    oval = face_oval(face)
    nose_offset = face.points[1, 0] - (oval[:, 0].min() + oval[:, 0].max()) / 2
    assert np.sign(nose_offset) == np.sign(a.yaw)


def test_profiles_have_large_yaw(model, load):
    faces = model.predict([load("ultralight_audience_profiles_24.jpg")])[0]
    yaws = [f.pose.yaw for f in faces]
    print(f"\nprofiles: yaw {[round(y, 1) for y in yaws]}")
    assert len(faces) >= 4 and all(y < -40 for y in yaws)  # all turned towards the image's left


def test_placement_is_accepted_and_changes_nothing(load):
    image = load("lfw_Rob_Lowe_0001.jpg")
    placed = FaceMesh(FaceMeshConfig(find_small_faces=False), Placement(device="cpu", threads=2))
    plain = FaceMesh(FaceMeshConfig(find_small_faces=False))
    try:
        np.testing.assert_array_equal(placed.predict([image])[0][0].points, plain.predict([image])[0][0].points)
    finally:
        placed.close()
        plain.close()


def test_rejects_non_rgb(model):
    with pytest.raises(ValueError):
        model.predict([np.zeros((10, 10), np.uint8)])
