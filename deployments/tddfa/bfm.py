"""The 3D morphable model behind TDDFA (3DDFA_V2's `bfm_noneck_v3`): plain numpy, not a
deployment. Turns the 62 TDDFA parameters into dense vertices, the 68 landmarks and a
head pose, and maps them from the 120x120 crop back to image pixels.

Parameters (3DDFA_V2's layout): 12 pose values = a 3x4 matrix [s*R | offset] row-major,
then 40 identity (shape) and 10 expression coefficients. Vertices are
`P @ (u + w_shp @ alpha_shp + w_exp @ alpha_exp)` with the 3N vectors interleaved
x0, y0, z0, x1, ...; model space is micrometres, x to the image's right, y up, z
towards the camera. After the pose the points are in the crop's frame with y still up
(3DDFA_V2 flips y only in `to_image`).

Model file formats, one class:
- `.npz` (ours, one self-contained file): u [3N], w_shp [3N,40], w_exp [3N,10],
  tri [M,3] int32, keypoints [204] (rows of the 3N vector, 3DDFA_V2's own format:
  x, y, z rows of the 68 landmarks in the iBUG order), uv [N,2] (BFM_UV.mat: in [0,1],
  v up), the landmark-only model u_base [204], w_shp_base [204,40], w_exp_base [204,10],
  and `description` (which model this is; shown by health routes).
- `bfm_noneck_v3.pkl` (3DDFA_V2's real file: u, w_shp, w_exp, keypoints; its own `tri`
  is not the noneck mesh, so like 3DDFA_V2 we take triangles from tri.pkl), plus
  BFM_UV.mat + indices.npy for the UVs. The landmark bases are its keypoint rows.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from deployments.types import Pose

NUM_PARAMS = 62
SHAPE_DIM = 40
EXP_DIM = 10
NUM_LANDMARKS = 68
CROP_SIZE = 120  # TDDFA's input side: the crop space the parameters live in
MODEL_FILENAME = "morphable_model.npz"  # the file inside a generated model folder

_ARRAYS = ("u", "w_shp", "w_exp", "tri", "keypoints", "uv", "u_base", "w_shp_base", "w_exp_base")


def split_params(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[62] -> (P [3,3] scaled rotation, offset [3], alpha_shp [40], alpha_exp [10])."""
    params = np.asarray(params, np.float32).reshape(NUM_PARAMS)
    pose = params[:12].reshape(3, 4)
    return pose[:, :3], pose[:, 3], params[12 : 12 + SHAPE_DIM], params[12 + SHAPE_DIM :]


def rotation(params: np.ndarray) -> np.ndarray:
    """The rotation [3,3] in the pose (scale removed, nearest proper rotation)."""
    p, _, _, _ = split_params(params)
    r1 = p[0] / np.linalg.norm(p[0])
    r2 = p[1] / np.linalg.norm(p[1])
    u, _, vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)]).astype(np.float64))
    return (u @ vt).astype(np.float32)


def pose_from_params(params: np.ndarray) -> Pose:
    """Yaw, pitch, roll in degrees with deployments.types.Pose's signs.

    The rotation is factored as Rz(c) @ Ry(b) @ Rx(a) in the crop frame (x right, y up,
    z to the camera), 3DDFA_V2's own order. +b swings the nose to the image's right
    (yaw = b), +a swings it down (chin down: pitch = a), +c is counter-clockwise seen
    from the camera (roll = -c). 3DDFA_V2 prints yaw and roll with the opposite signs.
    """
    q = rotation(params).astype(np.float64)
    b = math.asin(float(np.clip(-q[2, 0], -1.0, 1.0)))
    if abs(math.cos(b)) > 1e-6:
        a = math.atan2(q[2, 1], q[2, 2])
        c = math.atan2(q[1, 0], q[0, 0])
    else:  # looking straight sideways: roll and pitch are one axis; call it pitch
        a, c = math.atan2(-q[1, 2], q[1, 1]), 0.0
    return Pose(yaw=math.degrees(b), pitch=math.degrees(a), roll=-math.degrees(c))


def to_image(points: np.ndarray, roi_box, size: int = CROP_SIZE) -> np.ndarray:
    """Crop-space points [K,3] (y up) -> image pixels [K,3], as 3DDFA_V2's
    similar_transform: 1-based to 0-based x and z, y flipped, x/y scaled from the
    size x size crop to the ROI box, z scaled by the mean of both scales and shifted so
    its minimum is 0 (so z is relative to the face's farthest point)."""
    pts = np.array(points, np.float32, copy=True).reshape(-1, 3)
    sx, sy, ex, ey = (float(v) for v in roi_box)
    scale_x, scale_y = (ex - sx) / size, (ey - sy) / size
    pts[:, 0] = (pts[:, 0] - 1) * scale_x + sx
    pts[:, 1] = (size - pts[:, 1]) * scale_y + sy
    pts[:, 2] = (pts[:, 2] - 1) * (scale_x + scale_y) / 2
    if len(pts):
        pts[:, 2] -= pts[:, 2].min()
    return pts


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """3DDFA_V2's pickles hold only numpy arrays in dicts: refuse anything else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "dict"),
        ("_codecs", "encode"),
    }  # how protocol-2 pickles written by Python 3 store bytes

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model pickle")
        return super().find_class(module, name)


def load_numpy_pickle(path) -> object:
    """A pickle of numpy arrays (3DDFA_V2's .pkl files, Python 2 ones too)."""
    with open(path, "rb") as fh:
        return _NumpyOnlyUnpickler(fh, encoding="latin1").load()


def load_uv(uv_mat_path, indices_path) -> np.ndarray:
    """[N,2] float32 UVs of the noneck vertices: BFM_UV.mat's full-BFM table at indices.npy."""
    from scipy.io import loadmat

    uv = loadmat(str(uv_mat_path))["UV"]
    return np.ascontiguousarray(uv[np.load(indices_path)], np.float32)


def load_triangles(tri_path) -> np.ndarray:
    """tri.pkl ([3,M] int) -> [M,3] int32."""
    tri = np.asarray(load_numpy_pickle(tri_path))
    return np.ascontiguousarray(tri.T if tri.shape[0] == 3 else tri, np.int32)


class MorphableModel:
    """u + w_shp @ alpha_shp + w_exp @ alpha_exp, posed by the TDDFA parameters."""

    def __init__(self, *, u, w_shp, w_exp, tri, keypoints, uv, u_base, w_shp_base, w_exp_base, description: str):
        self.u = np.ascontiguousarray(np.asarray(u, np.float32).reshape(-1))
        n3 = self.u.shape[0]
        if n3 % 3:
            raise ValueError(f"u has {n3} values, not a multiple of 3")
        self.num_vertices = n3 // 3
        self.w_shp = np.ascontiguousarray(w_shp, np.float32)[:, :SHAPE_DIM]
        self.w_exp = np.ascontiguousarray(w_exp, np.float32)[:, :EXP_DIM]
        self.tri = np.ascontiguousarray(tri, np.int32)
        self.keypoints = np.asarray(keypoints, np.int64).reshape(-1)
        self.uv = np.ascontiguousarray(uv, np.float32)
        self.u_base = np.asarray(u_base, np.float32).reshape(-1)
        self.w_shp_base = np.asarray(w_shp_base, np.float32)[:, :SHAPE_DIM]
        self.w_exp_base = np.asarray(w_exp_base, np.float32)[:, :EXP_DIM]
        self.description = str(description)
        self._check()
        # An all-zero expression basis (the assembled model) costs nothing to skip.
        self._has_dense_exp = bool(np.any(self.w_exp))

    def _check(self) -> None:
        n3, n = self.u.shape[0], self.num_vertices
        want = {
            "w_shp": (self.w_shp, (n3, SHAPE_DIM)),
            "w_exp": (self.w_exp, (n3, EXP_DIM)),
            "keypoints": (self.keypoints, (3 * NUM_LANDMARKS,)),
            "uv": (self.uv, (n, 2)),
            "u_base": (self.u_base, (3 * NUM_LANDMARKS,)),
            "w_shp_base": (self.w_shp_base, (3 * NUM_LANDMARKS, SHAPE_DIM)),
            "w_exp_base": (self.w_exp_base, (3 * NUM_LANDMARKS, EXP_DIM)),
        }
        for name, (arr, shape) in want.items():
            if arr.shape != shape:
                raise ValueError(f"morphable model: {name} has shape {arr.shape}, expected {shape}")
        if self.tri.ndim != 2 or self.tri.shape[1] != 3 or self.tri.min() < 0 or self.tri.max() >= n:
            raise ValueError(f"morphable model: tri must be [M,3] vertex ids below {n}")
        if self.keypoints.min() < 0 or self.keypoints.max() >= n3:
            raise ValueError("morphable model: keypoints must index the 3N vector")

    # ---- loading and saving -------------------------------------------------------

    @classmethod
    def load(cls, path, *, tri_path=None, uv_mat_path=None, indices_path=None) -> MorphableModel:
        """An assembled .npz (or a folder holding morphable_model.npz), or 3DDFA_V2's
        bfm_noneck_v3.pkl together with tri.pkl, BFM_UV.mat and indices.npy."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILENAME
        if path.suffix == ".npz":
            return cls.from_npz(path)
        if path.suffix == ".pkl":
            if None in (tri_path, uv_mat_path, indices_path):
                raise ValueError(f"{path.name} needs tri_path, uv_mat_path and indices_path (3DDFA_V2 configs)")
            return cls.from_3ddfa_pkl(path, tri_path=tri_path, uv_mat_path=uv_mat_path, indices_path=indices_path)
        raise ValueError(f"unknown morphable model format: {path}")

    @classmethod
    def from_npz(cls, path) -> MorphableModel:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (*_ARRAYS, "description") if k not in data]
            if missing:
                raise ValueError(f"{path}: missing {', '.join(missing)}")
            arrays = {k: data[k] for k in _ARRAYS}
            description = str(data["description"])
        return cls(**arrays, description=description)

    @classmethod
    def from_3ddfa_pkl(cls, path, *, tri_path, uv_mat_path, indices_path) -> MorphableModel:
        bfm = load_numpy_pickle(path)
        u = np.asarray(bfm["u"], np.float32).reshape(-1)
        w_shp = np.asarray(bfm["w_shp"], np.float32)
        w_exp = np.asarray(bfm["w_exp"], np.float32)
        keypoints = np.asarray(bfm["keypoints"], np.int64).reshape(-1)
        return cls(
            u=u,
            w_shp=w_shp,
            w_exp=w_exp,
            tri=load_triangles(tri_path),
            keypoints=keypoints,
            uv=load_uv(uv_mat_path, indices_path),
            u_base=u[keypoints],
            w_shp_base=w_shp[keypoints],
            w_exp_base=w_exp[keypoints],
            description=f"3DDFA_V2 {Path(path).name} (real BFM bases)",
        )

    def save_npz(self, path) -> None:
        np.savez(path, **{k: getattr(self, k) for k in _ARRAYS}, description=np.array(self.description))

    # ---- geometry -----------------------------------------------------------------

    @property
    def keypoint_vertices(self) -> np.ndarray:
        """[68] vertex ids of the landmarks (the x rows of `keypoints` / 3)."""
        return self.keypoints[0::3] // 3

    def mean_vertices(self) -> np.ndarray:
        """[N,3] the mean face in model space (micrometres)."""
        return self.u.reshape(-1, 3).copy()

    def shape(self, alpha_shp, alpha_exp) -> np.ndarray:
        """[N,3] unposed vertices in model space for the given coefficients."""
        v = self.u + self.w_shp @ np.asarray(alpha_shp, np.float32).reshape(SHAPE_DIM)
        if self._has_dense_exp:
            v = v + self.w_exp @ np.asarray(alpha_exp, np.float32).reshape(EXP_DIM)
        return v.reshape(-1, 3)

    @staticmethod
    def posed(vertices: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Model-space vertices [K,3] through the parameters' pose -> crop space (y up)."""
        p, offset, _, _ = split_params(params)
        return (np.asarray(vertices, np.float32) @ p.T + offset).astype(np.float32)

    def dense(self, params: np.ndarray) -> np.ndarray:
        """[N,3] dense vertices in crop space (3DDFA_V2's recon_vers with dense_flag)."""
        _, _, alpha_shp, alpha_exp = split_params(params)
        return self.posed(self.shape(alpha_shp, alpha_exp), params)

    def landmarks(self, params: np.ndarray) -> np.ndarray:
        """[68,3] landmarks in crop space from the landmark-only model (exact even when
        the dense bases are approximate)."""
        _, _, alpha_shp, alpha_exp = split_params(params)
        v = self.u_base + self.w_shp_base @ alpha_shp + self.w_exp_base @ alpha_exp
        return self.posed(v.reshape(-1, 3), params)

    @staticmethod
    def pose(params: np.ndarray) -> Pose:
        return pose_from_params(params)

    to_image = staticmethod(to_image)
