"""Assemble a morphable model in `bfm_noneck_v3`'s layout from the pieces that could be
recovered without the real file (see shared/assets/SOURCES.md, "Basel Face Model pieces"):

- u: the exact noneck mean shape (3DDFA v1's u_shp + u_exp at 3DDFA_V2's indices.npy);
- keypoints and the landmark-only model (u_base, w_shp_base, w_exp_base): exact, so the
  68 landmarks from the 62 parameters are 3DDFA_V2's own;
- w_shp: an approximate dense identity basis (interpolated from samples of the same
  basis), corrected below to agree with the exact landmark rows;
- w_exp: zeros (no dense expression basis exists here; landmarks keep theirs);
- tri, uv: 3DDFA_V2's tri.pkl and BFM_UV.mat at indices.npy.

The asset generator (`generate: {model: TDDFA, variant: bfm-assembled, from: ...}` in
assets/manifest.yaml) calls `write_assembled_model`. No random numbers anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployments.tddfa.bfm import MODEL_FILENAME, NUM_LANDMARKS, MorphableModel, load_triangles, load_uv

# Inside the `bfm/` pieces folder (shared/assets/bfm).
LANDMARK_MODEL = "dense_head_pose/bfm_68_landmarks.npz"
MEAN_SHAPE = "derived/u_noneck.npy"
KEYPOINTS = "derived/keypoints_noneck.npy"
DENSE_SHAPE_BASIS = "derived/w_shp_noneck_interp_from_paf.npy"

# How far (micrometres of the mean face, ~4 mm) a correction at a landmark vertex is
# spread over its neighbours, so the surface gets a smooth bump, not a one-vertex spike.
CORRECTION_RADIUS_UM = 4000.0

DESCRIPTION = (
    "bfm_noneck_v3 assembled from recovered pieces (not the real file): exact mean shape, "
    "keypoints and 68-landmark model; approximate dense identity basis (interpolated, matched to the "
    "exact landmark rows); dense expression basis zero (landmarks keep expression)"
)


def spread_landmark_correction(
    vertices: np.ndarray, landmark_ids: np.ndarray, deltas: np.ndarray, radius: float = CORRECTION_RADIUS_UM
) -> np.ndarray:
    """A field over all vertices [N, C] equal to `deltas` [68, C] at the landmark vertices
    and fading to zero away from them: inverse-distance (Shepard) blend of the deltas,
    exact at the data points, times a Gaussian of the distance to the nearest landmark."""
    pos = vertices[landmark_ids].astype(np.float64)
    dist = np.sqrt(((vertices[:, None, :].astype(np.float64) - pos[None]) ** 2).sum(-1))  # [N, 68]
    weights = 1.0 / np.maximum(dist, 1e-9) ** 2
    field = (weights @ deltas.astype(np.float64)) / weights.sum(1, keepdims=True)
    field *= np.exp(-0.5 * (dist.min(1, keepdims=True) / radius) ** 2)
    field[landmark_ids] = deltas  # exact where it must be
    return field.astype(np.float32)


def assemble(pieces_dir, tri_path, uv_mat_path, indices_path) -> MorphableModel:
    pieces = Path(pieces_dir)
    with np.load(pieces / LANDMARK_MODEL, allow_pickle=False) as lm:
        u_base, w_shp_base, w_exp_base = (lm[k].astype(np.float32) for k in ("u_base", "w_shp_base", "w_exp_base"))
    u = np.load(pieces / MEAN_SHAPE).astype(np.float32).reshape(-1)
    keypoints = np.load(pieces / KEYPOINTS).astype(np.int64).reshape(-1)
    w_shp = np.load(pieces / DENSE_SHAPE_BASIS).astype(np.float32)
    if keypoints.shape != (3 * NUM_LANDMARKS,) or np.any(
        keypoints.reshape(-1, 3) - keypoints[0::3, None] != np.arange(3)
    ):
        raise ValueError("keypoints must be the x, y, z rows of 68 vertices")
    landmark_ids = keypoints[0::3] // 3
    n = u.size // 3
    # The mean shape at the keypoints already equals u_base to float rounding: make it exact.
    u[keypoints] = u_base
    # The interpolated identity basis misses a few landmark rows: move them (and their
    # neighbourhood, smoothly) onto the exact ones, so dense keypoint rows == landmarks.
    deltas = (w_shp_base - w_shp[keypoints]).reshape(NUM_LANDMARKS, -1)
    vertices = u.reshape(n, 3)
    correction = spread_landmark_correction(vertices, landmark_ids, deltas)
    w_shp = (w_shp.reshape(n, -1) + correction).reshape(3 * n, -1)
    w_shp[keypoints] = w_shp_base
    return MorphableModel(
        u=u,
        w_shp=w_shp,
        w_exp=np.zeros((3 * n, w_exp_base.shape[1]), np.float32),
        tri=load_triangles(tri_path),
        keypoints=keypoints,
        uv=load_uv(uv_mat_path, indices_path),
        u_base=u_base,
        w_shp_base=w_shp_base,
        w_exp_base=w_exp_base,
        description=DESCRIPTION,
    )


def write_assembled_model(out_dir: Path, variant: str, inputs: dict[str, Path]) -> None:
    """Asset generator: writes out_dir/morphable_model.npz. `inputs` maps the roles
    named in the manifest's `generate.from` to resolved asset paths: pieces (the bfm/
    folder), tri (tri.pkl), uv (BFM_UV.mat), indices (indices.npy)."""
    if variant != "bfm-assembled":
        raise ValueError(f"unknown TDDFA generated variant {variant!r}")
    model = assemble(inputs["pieces"], inputs["tri"], inputs["uv"], inputs["indices"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_npz(out_dir / MODEL_FILENAME)
