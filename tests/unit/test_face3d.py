"""serve_app/faces/face3d.py on the assembled morphable model: Umeyama, the morph (alpha 0 is
the face itself, alpha 1 the mean face, keep_pose aligns), the eye/mouth cut-out, the
z-buffer visibility, the UV bake (no black texels) and the blend (nothing outside its
region changes). Real TDDFA parameters (mb05 on a real photo) where a regressed pose
matters; exact synthetic poses where a closed-form answer is wanted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.tddfa.bfm import MorphableModel, split_params, to_image
from deployments.tddfa.crops import crops_for_boxes
from deployments.tddfa.model import TDDFA, TDDFAConfig
from deployments.types import FIVE_POINT, FaceLandmarks
from serve_app.faces import face3d
from serve_app.imaging import decode_image

ROI = np.array([50.0, 50.0, 200.0, 200.0])  # a 150-pixel crop: 1.25 pixels per crop unit
SHAPE = (256, 256)


@pytest.fixture(scope="module")
def bfm(asset) -> MorphableModel:
    return MorphableModel.load(asset("tddfa-bfm-assembled"))


def rotation(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """Rz(-roll) @ Ry(yaw) @ Rx(pitch), degrees, in the crop frame (x right, y up)."""
    a, b, c = (math.radians(v) for v in (pitch, yaw, -roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def params_with(rot: np.ndarray, scale=5e-4, offset=(60.0, 60.0, 0.0), alpha_shp=None) -> np.ndarray:
    p = np.zeros(62, np.float32)
    p[:12] = np.hstack([scale * rot, np.reshape(offset, (3, 1))]).ravel()
    if alpha_shp is not None:
        p[12:52] = alpha_shp
    return p


def detection(box=(90.0, 80.0, 170.0, 180.0)) -> FaceLandmarks:
    return FaceLandmarks(
        box=np.array(box, np.float32), score=0.99, points=np.zeros((5, 2), np.float32), scheme=FIVE_POINT
    )


def synthetic_face(bfm, yaw=0.0, shape=SHAPE) -> face3d.Face3D:
    return face3d.reconstruct(bfm, params_with(rotation(yaw=yaw)), ROI, detection(), shape)


@pytest.fixture(scope="module")
def frontal(bfm) -> face3d.Face3D:
    return synthetic_face(bfm)


@pytest.fixture(scope="module")
def real(bfm, asset, photos_dir):
    """(image, Face3D) of a real face: RetinaFace det_500m, TDDFA mb05, as the pipeline does."""
    image = decode_image((photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes())
    [det] = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m")))).predict([image])[0]
    tddfa = TDDFA(
        TDDFAConfig(weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std")))
    )
    crops, rois = crops_for_boxes(image, [det.box])
    [params] = tddfa.predict([crops])[0]
    return image, face3d.reconstruct(bfm, params, rois[0], det, image.shape[:2])


def face_size(face: face3d.Face3D) -> float:
    xy = face.vertices[:, :2]
    return float(np.linalg.norm(xy.max(0) - xy.min(0)))


# ---- Umeyama ----------------------------------------------------------------------------


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(200, 3)) * (50.0, 80.0, 30.0)
    rot, scale, shift = rotation(yaw=25, pitch=-10, roll=40), 1.7, np.array([12.0, -3.0, 40.0])
    dst = scale * src @ rot.T + shift
    s, r, t = face3d.umeyama(src, dst)
    assert s == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(t, shift, atol=1e-7)
    # With noise: still close, and always a proper rotation.
    s, r, t = face3d.umeyama(src, dst + rng.normal(scale=0.5, size=dst.shape))
    assert s == pytest.approx(scale, rel=1e-2) and np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r, rot, atol=1e-2)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(100, 3))
    mirrored = src * (-1.0, 1.0, 1.0)
    _, r, _ = face3d.umeyama(src, mirrored)
    assert np.linalg.det(r) == pytest.approx(1.0)


# ---- morph ------------------------------------------------------------------------------


def test_alpha_zero_without_keep_pose_is_the_face_itself(bfm, real):
    _, face = real
    vertices, model = face3d.morph(bfm, face, 0.0, keep_pose=False)
    np.testing.assert_allclose(vertices, face.vertices, atol=1e-3)  # pixels
    _, _, alpha_shp, alpha_exp = split_params(face.params)
    np.testing.assert_allclose(model, bfm.shape(alpha_shp, alpha_exp), atol=1e-2)


def test_alpha_zero_with_keep_pose_stays_within_one_percent(bfm, real, frontal):
    _, face = real
    vertices, _ = face3d.morph(bfm, face, 0.0, keep_pose=True)
    error = np.linalg.norm(vertices - face.vertices, axis=1)
    # The regressed pose is not an exact similarity (rows of s*R not orthonormal): ~1 %.
    assert error.mean() <= 0.01 * face_size(face) and error.max() <= 0.03 * face_size(face)
    # An exact similarity (synthetic pose, square ROI) is reproduced exactly.
    vertices, _ = face3d.morph(bfm, frontal, 0.0, keep_pose=True)
    np.testing.assert_allclose(vertices, frontal.vertices, atol=1e-2)


def test_alpha_one_is_the_mean_face(bfm, real):
    _, face = real
    for keep_pose in (False, True):
        vertices, model = face3d.morph(bfm, face, 1.0, keep_pose=keep_pose)
        np.testing.assert_allclose(model, bfm.mean_vertices(), atol=1e-2)
        assert vertices.shape == face.vertices.shape
    vertices, _ = face3d.morph(bfm, face, 1.0, keep_pose=False)
    np.testing.assert_allclose(vertices, to_image(bfm.posed(bfm.mean_vertices(), face.params), face.roi_box), atol=1e-3)
    # keep_pose: the mean face sits where the face is (centred on it, same size to 10 %).
    vertices, _ = face3d.morph(bfm, face, 1.0, keep_pose=True)
    centre_shift = np.linalg.norm(vertices[:, :2].mean(0) - face.vertices[:, :2].mean(0))
    assert centre_shift < 0.02 * face_size(face)
    extent = np.ptp(vertices[:, :2], axis=0) / np.ptp(face.vertices[:, :2], axis=0)
    assert np.all(np.abs(extent - 1) < 0.1), extent


def test_alpha_half_is_between(bfm, real):
    _, face = real
    _, own = face3d.morph(bfm, face, 0.0, keep_pose=False)
    _, half = face3d.morph(bfm, face, 0.5, keep_pose=False)
    np.testing.assert_allclose(half, (own + bfm.mean_vertices()) / 2, atol=1e-1)


# ---- cut-out ----------------------------------------------------------------------------


def region_centre(face, region) -> tuple[int, int]:
    x, y = face.landmarks.points[list(region), :2].mean(0)
    return int(round(y)), int(round(x))


def test_cutout_is_zero_inside_the_eyes_and_one_far_away(real):
    image, face = real
    shape = image.shape[:2]
    alpha = face3d.cutout_alpha(shape, [face], remove_mouth=True, margin_px=0, feather_px=0)
    assert alpha.dtype == np.float32 and alpha.shape == shape
    for region in (face3d.RIGHT_EYE, face3d.LEFT_EYE, face3d.MOUTH):
        assert alpha[region_centre(face, region)] == 0.0
    assert alpha[0, 0] == 1.0 and alpha[-1, -1] == 1.0
    nose = face.landmarks.points[30, :2].round().astype(int)
    assert alpha[nose[1], nose[0]] == 1.0
    # The holes are about the size of the polygons (anti-aliased edges).
    polygons = face3d.region_polygons(face.landmarks.points, remove_mouth=True)
    area = sum(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))) for p in polygons)
    assert 0.8 * area <= (1 - alpha).sum() <= 1.3 * area


def test_cutout_keeps_the_mouth_when_asked(real):
    image, face = real
    alpha = face3d.cutout_alpha(image.shape[:2], [face], remove_mouth=False, margin_px=6, feather_px=1.5)
    assert alpha[region_centre(face, face3d.MOUTH)] == 1.0
    assert alpha[region_centre(face, face3d.RIGHT_EYE)] == 0.0


def test_cutout_grows_by_margin_and_feathers(real):
    image, face = real
    shape = image.shape[:2]
    tight = face3d.cutout_alpha(shape, [face], True, margin_px=0, feather_px=0)
    grown = face3d.cutout_alpha(shape, [face], True, margin_px=6, feather_px=0)
    assert np.all(grown <= tight)  # only grows
    # A pixel 4 px beyond the outer corner of the right eye: kept tight, removed grown.
    corner, inner = face.landmarks.points[36, :2], face.landmarks.points[39, :2]
    outward = (corner - inner) / np.linalg.norm(corner - inner)
    x, y = np.round(corner + 4 * outward).astype(int)
    assert tight[y, x] == 1.0 and grown[y, x] == 0.0
    # Every removed pixel of the grown cut-out lies within margin_px (+1) of a tight hole.
    import cv2

    dist = cv2.distanceTransform((tight > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[grown < 0.5].max() <= 6 + 1.5
    assert (grown < 0.5).sum() > 1.5 * (tight < 0.5).sum()
    soft = face3d.cutout_alpha(shape, [face], True, margin_px=6, feather_px=2)
    edge = (soft > 0.05) & (soft < 0.95)
    assert edge.sum() > 0 and np.all((soft >= 0) & (soft <= 1))


def test_cutout_of_several_faces_and_none(real):
    image, face = real
    shape = image.shape[:2]
    assert np.all(face3d.cutout_alpha(shape, [], True, 6, 1.5) == 1.0)
    shifted = face3d.Face3D(
        face.params,
        face.roi_box,
        face.vertices,
        FaceLandmarks(
            box=face.landmarks.box,
            score=face.landmarks.score,
            points=face.landmarks.points - (60, 0, 0),
            scheme=face.landmarks.scheme,
        ),
        face.visible,
    )
    both = face3d.cutout_alpha(shape, [face, shifted], True, 0, 0)
    assert both[region_centre(face, face3d.LEFT_EYE)] == 0 and both[region_centre(shifted, face3d.LEFT_EYE)] == 0


def test_segment_inpaints_only_what_was_cut_out(real):
    image, face = real
    alpha = face3d.cutout_alpha(image.shape[:2], [face], True, margin_px=6, feather_px=1.5)
    rgba, inpainted = face3d.segment(image, alpha)
    assert rgba.shape == image.shape[:2] + (4,) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], inpainted)
    np.testing.assert_array_equal(rgba[..., 3], np.round(alpha * 255).astype(np.uint8))
    opaque = rgba[..., 3] == 255
    # Every fully opaque pixel is the photo's own, feathered edge included.
    np.testing.assert_array_equal(inpainted[opaque], image[opaque])
    # Under the eyes the photo's dark pupils are gone: filled from the skin around them.
    y, x = region_centre(face, face3d.RIGHT_EYE)
    assert not np.array_equal(inpainted[y, x], image[y, x])
    rgba, inpainted = face3d.segment(image, np.ones(image.shape[:2], np.float32))
    np.testing.assert_array_equal(inpainted, image)
    assert np.all(rgba[..., 3] == 255)


# ---- visibility -------------------------------------------------------------------------


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit normals, oriented so the frontal face's nose tip points at the camera."""
    v = vertices.astype(np.float64)
    n = np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, triangles[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_a_frontal_face_shows_its_front_and_hides_what_faces_away(bfm, frontal):
    normals = vertex_normals(frontal.vertices, bfm.tri)
    nose = bfm.keypoint_vertices[30]
    normals *= np.sign(normals[nose, 2])  # larger z is nearer: the nose tip's normal points +z
    front, back = normals[:, 2] > 0.5, normals[:, 2] < 0.0
    assert front.sum() > 0.4 * len(front) and back.sum() > 1000  # nostrils, under the nose and the jaw
    # Measured: 97 % of the front seen, 0.4 % of what faces away (the z-buffer's pixel rounding).
    assert frontal.visible[front].mean() > 0.9
    assert frontal.visible[back].mean() < 0.05
    assert frontal.visible[nose]


def test_a_turned_face_hides_its_far_cheek(bfm):
    turned = synthetic_face(bfm, yaw=60)  # nose towards the image's right: that side turns away
    lm = bfm.keypoint_vertices
    assert turned.vertices[lm[30], 0] > turned.vertices[lm[16], 0]  # the nose passed the far jaw end
    assert turned.visible[lm[0]] and not turned.visible[lm[16]]  # near jaw end seen, far one hidden
    assert 0.3 < turned.visible.mean() < synthetic_face(bfm).visible.mean()


def test_occluded_and_outside_vertices_are_hidden():
    # Two squares, one in front of the other, one vertex off the image.
    front = [[10, 10, 5], [30, 10, 5], [30, 30, 5], [10, 30, 5]]
    back = [[15, 15, 0], [25, 15, 0], [25, 25, 0], [15, 25, 0]]
    aside = [[50, 10, 0], [60, 10, 0], [60, 20, 0]]
    off = [[70, 70, 0], [80, 70, 0], [200, 80, 0]]  # the last one is off the 100x100 image
    vertices = np.array(front + back + aside + off, np.float32)
    tri = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [8, 9, 10], [11, 12, 13]], np.int32)
    visible = face3d.visible_vertices(vertices, tri, (100, 100))
    assert visible.tolist() == [True] * 4 + [False] * 4 + [True] * 3 + [True, True, False]
    assert not face3d.visible_vertices(vertices + (500, 0, 0), tri, (100, 100)).any()


# ---- bake -------------------------------------------------------------------------------


def position_image(shape) -> np.ndarray:
    """Colour = position (R from x, G from y, B constant): never black."""
    h, w = shape
    x = np.linspace(20, 235, w)[None, :].repeat(h, 0)
    y = np.linspace(20, 235, h)[:, None].repeat(w, 1)
    return np.dstack([x, y, np.full((h, w), 128.0)]).round().astype(np.uint8)


@pytest.mark.parametrize("yaw", [0, 60])
def test_bake_has_no_black_texels_and_samples_the_image(bfm, yaw):
    face = synthetic_face(bfm, yaw=yaw)
    image = position_image(SHAPE)
    alpha = np.ones(SHAPE, np.float32)
    alpha[:, :120] = 0.0
    texture = face3d.bake_texture(image, face, bfm.uv, 256, alpha)
    assert texture.shape == (256, 256, 4) and texture.dtype == np.uint8
    # Inside and outside the UV footprint, back-facing and occluded texels included.
    assert not np.any(np.all(texture[..., :3] == 0, axis=2))
    assert texture[..., 2].min() >= 120  # the constant blue channel, interpolated: no holes
    # A visible vertex's texel holds the image colour under it; the alpha channel follows.
    texel = face3d.uv_pixels(bfm.uv, 256).round().astype(int)
    vis = np.flatnonzero(face.visible)
    rng = np.random.default_rng(0)
    for i in rng.choice(vis, 50, replace=False):
        x, y = face.vertices[i, :2]
        want = image[int(round(y)), int(round(x)), :2].astype(int)
        got = texture[texel[i, 1], texel[i, 0], :2].astype(int)
        assert np.abs(got - want).max() <= 4, (i, got, want)
        if abs(x - 120) > 4:
            assert texture[texel[i, 1], texel[i, 0], 3] == (0 if x < 120 else 255), (i, x)


def test_bake_without_alpha_and_at_a_large_size(bfm, frontal):
    image = position_image(SHAPE)
    texture = face3d.bake_texture(image, frontal, bfm.uv, 1024)
    assert texture.shape == (1024, 1024, 3)
    assert not np.any(np.all(texture == 0, axis=2))


def test_bake_of_a_black_photo_region_stays_the_photo_colour(bfm, frontal):
    # A photo that is dark but not black everywhere: the texture is that colour, not zeros.
    image = np.full(SHAPE + (3,), 7, np.uint8)
    texture = face3d.bake_texture(image, frontal, bfm.uv, 256)
    assert texture.min() == texture.max() == 7


# ---- blend ------------------------------------------------------------------------------


def test_blend_leaves_everything_outside_its_region_byte_identical():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (120, 160, 3), np.uint8)
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., :3] = (255, 0, 0)
    rgba[5:35, 5:45, 3] = 255
    out = face3d.blend(image, rgba, (70, 30), feather=2.0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    region = np.zeros(image.shape[:2], bool)
    region[30:70, 70:120] = True
    np.testing.assert_array_equal(out[~region], image[~region])
    # Inside: opaque where the rgba is opaque well away from its (feathered) edge.
    assert np.all(out[45:55, 85:105] == (255, 0, 0))
    assert not np.array_equal(out, image)
    # No feather: exactly the rgba where opaque, the image elsewhere.
    hard = face3d.blend(image, rgba, (70, 30), feather=0)
    opaque = np.zeros_like(region)
    opaque[35:65, 75:115] = True
    assert np.all(hard[opaque] == (255, 0, 0))
    np.testing.assert_array_equal(hard[~opaque], image[~opaque])
