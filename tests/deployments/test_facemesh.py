"""FaceMesh on real photos with MediaPipe's bundled models (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deployments.facemesh import NUM_LANDMARKS, FaceMesh, FaceMeshConfig, MeshFace, oval_order

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
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_num_faces, refine_landmarks=True,
                            min_detection_confidence=0.5) as mesh:
        result = mesh.process(image)
    return [np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], np.float32)
            for f in (result.multi_face_landmarks or [])]


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


@pytest.mark.parametrize("name", ["insightface_t1.jpg", "3ddfa_trump_hillary.jpg", "lfw_Rob_Lowe_0001.jpg",
                                  "insightface_Tom_Hanks_54745_aligned112.png"])
def test_landmarks_and_oval_are_inside_the_image(model, load, name):
    image = load(name)
    h, w = image.shape[:2]
    for face in model.predict([image])[0]:
        assert face.landmarks.shape == (NUM_LANDMARKS, 3) and face.landmarks.dtype == np.float32
        xy = face.landmarks[:, :2]
        assert (xy >= 0).all() and (xy[:, 0] <= w).all() and (xy[:, 1] <= h).all()
        assert face.oval.shape == (36, 2)


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
        np.testing.assert_allclose(face.landmarks, ref, atol=1e-3)


def test_first_pass_faces_come_first_and_unchanged(model, load):
    image = load("ultralight_audience_profiles_24.jpg")
    direct = mediapipe_direct(image)
    faces = model.predict([image])[0]
    assert len(faces) >= len(direct)
    for face, ref in zip(faces, direct):
        np.testing.assert_allclose(face.landmarks[:, :2], np.clip(ref[:, :2], 0, None), atol=1e-3)


@pytest.mark.parametrize("name", ["insightface_t1.jpg", "3ddfa_trump_hillary.jpg", "facedet1mb_nine_kids.jpg",
                                  "ultralight_audience_profiles_24.jpg"])
def test_ordered_oval_is_a_simple_polygon(model, load, name):
    faces = model.predict([load(name)])[0]
    assert faces
    for face in faces:
        assert is_simple_polygon(face.oval)
        box = face.box
        assert box == (face.oval[:, 0].min(), face.oval[:, 1].min(), face.oval[:, 0].max(), face.oval[:, 1].max())


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
            np.testing.assert_array_equal(fb.landmarks, fs.landmarks)


def test_max_num_faces_caps_both_passes(load):
    capped = FaceMesh(FaceMeshConfig(max_num_faces=2))
    try:
        assert len(capped.predict([load("facedet1mb_nine_kids.jpg")])[0]) == 2
        assert len(capped.predict([load("insightface_t1.jpg")])[0]) == 2
    finally:
        capped.close()


def test_scaled_face_matches_a_larger_image():
    face = MeshFace(np.ones((NUM_LANDMARKS, 3), np.float32), np.ones((36, 2), np.float32), (1.0, 1.0, 1.0, 1.0))
    big = face.scaled(2.5)
    assert big.landmarks[0].tolist() == [2.5, 2.5, 2.5] and big.box == (2.5, 2.5, 2.5, 2.5)


def test_rejects_non_rgb(model):
    with pytest.raises(ValueError):
        model.predict([np.zeros((10, 10), np.uint8)])
