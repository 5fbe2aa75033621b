"""The morphable model (deployments/tddfa/bfm.py) on the assembled asset: dense and landmark
models agree, the mean shape is a face, 3DDFA_V2's image mapping and pose signs, the
3DDFA_V2 .pkl format, and the generated asset itself (built from other assets)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from deployments.tddfa.bfm import (
    MODEL_FILENAME,
    MorphableModel,
    load_numpy_pickle,
    pose_from_params,
    split_params,
    to_image,
)
from serve_app.config import assets
from serve_app.config.settings import settings


@pytest.fixture(scope="module")
def bfm(asset) -> MorphableModel:
    return MorphableModel.load(asset("tddfa-bfm-assembled"))


@pytest.fixture(scope="module")
def stats(asset):
    s = load_numpy_pickle(asset("tddfa-param-mean-std"))
    return s["mean"], s["std"]


def params_with(rotation: np.ndarray, scale=5e-4, offset=(60.0, 60.0, 0.0), alpha_shp=None, alpha_exp=None):
    p = np.zeros(62, np.float32)
    p[:12] = np.hstack([scale * rotation, np.reshape(offset, (3, 1))]).ravel()
    if alpha_shp is not None:
        p[12:52] = alpha_shp
    if alpha_exp is not None:
        p[52:] = alpha_exp
    return p


def rot(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """Rz(-roll) @ Ry(yaw) @ Rx(pitch), degrees, in the crop frame (x right, y up)."""
    a, b, c = (math.radians(v) for v in (pitch, yaw, -roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_assembled_model_shapes_and_description(bfm):
    assert bfm.num_vertices == 38365 and bfm.tri.shape == (76073, 3)
    assert bfm.w_shp.shape == (3 * 38365, 40) and bfm.w_exp.shape == (3 * 38365, 10)
    assert not bfm.w_exp.any()  # no dense expression basis exists here
    assert bfm.keypoints.shape == (204,) and bfm.uv.shape == (38365, 2)
    assert "assembled" in bfm.description
    assert len(np.unique(bfm.keypoint_vertices)) == 68


def test_dense_keypoint_rows_are_the_landmarks(bfm, stats):
    mean, std = stats
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = (mean + rng.normal(size=62) * std).astype(np.float32)
        p[52:] = 0  # dense expression is zero here; the landmark model has it
        np.testing.assert_allclose(bfm.dense(p)[bfm.keypoint_vertices], bfm.landmarks(p), atol=1e-3)
        p[52:] = (mean + rng.normal(size=62) * std)[52:]
        # With expression the landmarks move by exactly the landmark expression basis.
        r, _, _, alpha_exp = split_params(p)
        expected = bfm.dense(p)[bfm.keypoint_vertices] + (bfm.w_exp_base @ alpha_exp).reshape(68, 3) @ r.T
        np.testing.assert_allclose(bfm.landmarks(p), expected, atol=1e-2)


def test_zero_coefficients_give_the_mean_face(bfm):
    p = params_with(np.eye(3), scale=1.0, offset=(0, 0, 0))
    np.testing.assert_allclose(bfm.dense(p), bfm.mean_vertices(), atol=1e-3)
    np.testing.assert_allclose(bfm.landmarks(p), bfm.mean_vertices()[bfm.keypoint_vertices], atol=1e-2)


def test_mean_shape_is_a_face(bfm):
    v = bfm.mean_vertices()
    width, height = np.ptp(v[:, 0]), np.ptp(v[:, 1])
    assert 140_000 < width < 180_000 and 1.0 < height / width < 1.3  # micrometres: a ~16 cm face
    lm = v[bfm.keypoint_vertices]
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y > lm[30, 1] > lm[48:60, 1].mean() > lm[8, 1]  # eyes above nose above mouth above chin
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # x to the image's right
    assert lm[48, 0] < lm[54, 0] and lm[0, 0] < lm[16, 0]
    assert lm[30, 2] == lm[:, 2].max()  # the nose tip is nearest the camera (+z)
    assert abs(lm[30, 0]) < 1000  # on the symmetry plane
    # UVs follow the face: u with x, v with y (v up).
    assert np.corrcoef(bfm.uv[:, 0], v[:, 0])[0, 1] > 0.95 and np.corrcoef(bfm.uv[:, 1], v[:, 1])[0, 1] > 0.95
    assert bfm.uv.min() >= 0 and bfm.uv.max() <= 1


def test_triangle_winding(bfm):
    # tri.pkl winds clockwise seen from the camera (+z) in model space (y up), i.e.
    # counter-clockwise in image pixels after to_image's y flip: renderers need to know.
    # The few others are the sides of the frontal mean face, turned away.
    v = bfm.mean_vertices()
    a, b, c = (v[bfm.tri[:, i]] for i in range(3))
    nz = np.cross(b - a, c - a)[:, 2]
    assert (nz < 0).mean() > 0.9


def test_to_image_is_3ddfa_similar_transform():
    pts = np.array([[1.0, 120.0, 1.0], [61.0, 60.0, 11.0], [121.0, 0.0, 21.0]], np.float32)
    out = to_image(pts, [100.0, 50.0, 340.0, 290.0])  # a 240 px ROI: scale 2
    np.testing.assert_allclose(out, [[100, 50, 0], [220, 170, 20], [340, 290, 40]])
    assert to_image(np.zeros((0, 3)), [0, 0, 120, 120]).shape == (0, 3)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-40, 10, 5), (10, -20, -15), (0, 0, 30)])
def test_pose_round_trips(yaw, pitch, roll):
    pose = pose_from_params(params_with(rot(yaw, pitch, roll)))
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=1e-3)


def test_pose_signs_in_the_image(bfm):
    """Pose's convention, checked on the mapped landmarks: yaw > 0 puts the nose to the
    right of the eyes' midpoint, pitch > 0 moves it down, roll > 0 turns the eye line
    clockwise (the image-right eye lower)."""

    def image_landmarks(**angles):
        return to_image(bfm.landmarks(params_with(rot(**angles))), [0, 0, 240, 240])

    def nose_from_eyes(lm):
        return lm[30, :2] - (lm[36:42, :2].mean(0) + lm[42:48, :2].mean(0)) / 2

    frontal = nose_from_eyes(image_landmarks())
    assert nose_from_eyes(image_landmarks(yaw=20))[0] > frontal[0] + 5
    assert nose_from_eyes(image_landmarks(pitch=20))[1] > frontal[1] + 5
    lm = image_landmarks(roll=20)
    right_lower = lm[42:48, 1].mean() - lm[36:42, 1].mean()
    assert right_lower > 5


def test_3ddfa_pkl_format_loads_the_same_model(bfm, asset, tmp_path):
    # bfm_noneck_v3.pkl's layout: a dict of arrays, u [3N,1], its own (unused) tri.
    pkl = tmp_path / "bfm_noneck_v3.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(
            {
                "u": bfm.u.reshape(-1, 1),
                "w_shp": bfm.w_shp,
                "w_exp": bfm.w_exp,
                "tri": np.zeros((3, 1), np.int32),
                "keypoints": bfm.keypoints,
            },
            fh,
            protocol=2,
        )
    real = MorphableModel.load(
        pkl, tri_path=asset("tddfa-tri"), uv_mat_path=asset("tddfa-bfm-uv"), indices_path=asset("tddfa-bfm-indices")
    )
    assert "bfm_noneck_v3.pkl" in real.description
    np.testing.assert_array_equal(real.tri, bfm.tri)
    np.testing.assert_array_equal(real.uv, bfm.uv)
    p = params_with(rot(yaw=15), alpha_shp=np.linspace(-2e5, 2e5, 40))
    np.testing.assert_allclose(real.dense(p), bfm.dense(p), atol=1e-3)
    with pytest.raises(ValueError, match="tri_path"):
        MorphableModel.load(pkl)


def test_model_pickles_may_hold_only_arrays(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return os.getcwd, ()

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"u": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(bad)


def test_generated_asset_is_built_from_its_inputs_and_cached(bfm, tmp_path, capsys):
    # The repo cache has the same layout as the mirror: use it as one.
    cache = Path(settings().assets_cache)
    dest = tmp_path / "assets"
    assets.fetch(["tddfa-bfm-assembled"], mirror=cache, dest_root=dest)
    out = capsys.readouterr().out
    assert "tddfa-bfm-pieces: mirror" in out and "tddfa-bfm-assembled: generated" in out
    entry = assets.load_manifest()["tddfa-bfm-assembled"]
    again = MorphableModel.load(dest / entry.path / MODEL_FILENAME)
    np.testing.assert_array_equal(again.w_shp, bfm.w_shp)  # deterministic: no random numbers
    assets.fetch(["tddfa-bfm-assembled"], mirror=cache, dest_root=dest)
    assert "tddfa-bfm-assembled: cached" in capsys.readouterr().out
    marker = dest / entry.path / ".complete"
    marker.write_text("bfm-assembled\nan older input\n")  # inputs changed since: rebuilt
    assets.fetch(["tddfa-bfm-assembled"], mirror=cache, dest_root=dest)
    assert "tddfa-bfm-assembled: generated" in capsys.readouterr().out


def test_production_names_fall_back_to_the_assembled_model(monkeypatch, asset):
    """How a builder loads it: the real bfm_noneck_v3.pkl in production; here its stand-in
    (FACEGRAPH_ALLOW_STAND_INS=1), through the same call."""
    monkeypatch.setenv("FACEGRAPH_ALLOW_STAND_INS", "1")
    settings.cache_clear()
    try:
        used, path = assets.resolve_for_serving("tddfa-bfm-noneck-v3")
        weights, _ = assets.resolve_for_serving("tddfa-mb1-120")
    finally:
        monkeypatch.delenv("FACEGRAPH_ALLOW_STAND_INS")
        settings.cache_clear()
    assert used == "tddfa-bfm-assembled" and weights == "tddfa-mb05-120"
    model = MorphableModel.load(
        path, tri_path=asset("tddfa-tri"), uv_mat_path=asset("tddfa-bfm-uv"), indices_path=asset("tddfa-bfm-indices")
    )
    assert "assembled" in model.description
