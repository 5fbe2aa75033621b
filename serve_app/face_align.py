"""5-point face alignment to the standard ArcFace template (insightface's `norm_crop`),
written here so the ingress and batch jobs need no model package for it.

One similarity transform per face (least squares, Umeyama) serves every output size:
the 112x112 crop for the recogniser and the larger headshot are the same alignment.
"""

from __future__ import annotations

import cv2
import numpy as np

# Eyes, nose tip, mouth corners in a 112x112 ArcFace crop (insightface face_align).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,  # float32 as in insightface, so the scaled template matches it bit for bit
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation + uniform scale + translation that maps src points
    onto dst points with least squared error (Umeyama 1991, as skimage's
    SimilarityTransform.estimate that norm_crop uses)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = src_c.var(axis=0).sum()
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The transform from image pixels to a size x size ArcFace-aligned crop."""
    return similarity_transform(landmarks, ARCFACE_TEMPLATE_112 * (size / 112.0))


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    # Bilinear, black outside the image: what norm_crop does.
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)


def aligned_crops(image: np.ndarray, landmarks: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """One face, aligned once, warped to each of `sizes` (a scaled template is the
    same alignment scaled, so the matrix is scaled rather than estimated again)."""
    base = alignment_matrix(landmarks, 112)
    return [warp(image, base * (s / 112.0), s) for s in sizes]
