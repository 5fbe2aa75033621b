"""3D face geometry for the anonymisation pipeline: from TDDFA's parameters to an
image-space mesh, the eyes/mouth cut-out, the morph toward the mean face and the
texture re-baked into UV space, and the render requests for each face. Pure
numpy/OpenCV (RenderRequest is only the renderer's request type): no models, no Ray.

Image space (3DDFA_V2's): x right and y down in pixels, z depth with larger z nearer
the camera. Model space (the morphable model's): x right, y up, z towards the camera.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from deployments.mesh_renderer.scene import RenderRequest
from deployments.tddfa.bfm import MorphableModel, split_params, to_image
from deployments.types import IBUG_68, FaceLandmarks, Pose

# iBUG-68 regions cut out of the face: the eyes, and the lips' outer contour.
RIGHT_EYE, LEFT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
MOUTH = tuple(range(48, 60))
VISIBILITY_TOLERANCE = 0.02  # of the face's depth range: a vertex this far behind the z-buffer still counts
RENDER_PAD = 4  # pixels around a face's projected mesh in its composite render
WORK_TEXTURE = 512  # texels per side the bake interpolates at, before resizing to tex_size
# One bake's triangulation at a time per process: scipy's Delaunay makes a LAPACK call per
# simplex, and OpenBLAS calls from several threads at once contend on its buffer lock
# (measured on 2 cores: 4 faces baked in parallel threads took 34 s each, one at a time 0.3 s).
_BAKE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Face3D:
    """One reconstructed face in image pixels."""

    params: np.ndarray  # [62] TDDFA parameters
    roi_box: np.ndarray  # [4] the crop the parameters live in
    vertices: np.ndarray  # [N, 3] dense mesh, image space
    landmarks: FaceLandmarks  # the 68 landmarks (scheme 68-point), the detector's box, score and 5 points
    visible: np.ndarray  # [N] bool: vertex on the camera's side and not hidden (z-buffer)

    @property
    def pose(self) -> Pose:
        return self.landmarks.pose


def reconstruct(
    bfm: MorphableModel, params: np.ndarray, roi_box: np.ndarray, detection: FaceLandmarks, shape: tuple[int, int]
) -> Face3D:
    """Parameters -> dense vertices, 68 landmarks, pose and per-vertex visibility."""
    vertices = to_image(bfm.dense(params), roi_box)
    points = to_image(bfm.landmarks(params), roi_box)
    landmarks = FaceLandmarks(
        box=detection.box,
        score=detection.score,
        points=points,
        scheme=IBUG_68,
        pose=bfm.pose(params),
        five=detection.points[:, :2],
    )
    return Face3D(
        np.asarray(params, np.float32),
        np.asarray(roi_box, np.float64),
        vertices,
        landmarks,
        visible_vertices(vertices, bfm.tri, shape),
    )


def visible_vertices(vertices: np.ndarray, triangles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[N] bool: vertices inside the image whose depth is within tolerance of the nearest
    surface at their pixel (a z-buffer of the mesh's triangles, drawn nearest last)."""
    height, width = shape
    x, y, z = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    if not inside.any():
        return inside
    x0, y0 = int(max(0, np.floor(x[inside].min()))), int(max(0, np.floor(y[inside].min())))
    x1, y1 = int(min(width, np.ceil(x[inside].max()) + 1)), int(min(height, np.ceil(y[inside].max()) + 1))
    zbuf = np.full((y1 - y0, x1 - x0), -np.inf, np.float32)
    depth = triangles_depth(vertices, triangles)
    # Painter's order: nearer triangles drawn last overwrite farther ones.
    for t in np.argsort(depth):
        pts = np.round(vertices[triangles[t], :2] - (x0, y0)).astype(np.int32)
        cv2.fillConvexPoly(zbuf, pts, float(depth[t]))
    span = float(z.max() - z.min()) or 1.0
    col = np.clip(np.round(x - x0).astype(int), 0, x1 - x0 - 1)
    row = np.clip(np.round(y - y0).astype(int), 0, y1 - y0 - 1)
    return inside & (z >= zbuf[row, col] - VISIBILITY_TOLERANCE * span)


def triangles_depth(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    return vertices[triangles, 2].mean(axis=1)


def region_polygons(landmarks: np.ndarray, remove_mouth: bool) -> list[np.ndarray]:
    regions = [RIGHT_EYE, LEFT_EYE] + ([MOUTH] if remove_mouth else [])
    return [landmarks[list(r), :2] for r in regions]


def cutout_alpha(
    shape: tuple[int, int], faces: list[Face3D], remove_mouth: bool, margin_px: float, feather_px: float
) -> np.ndarray:
    """float32 HxW alpha, 0 over every face's eyes (and mouth), grown by `margin_px` and
    softened by a Gaussian of sigma `feather_px`; 1 elsewhere."""
    holes = np.zeros(shape, np.uint8)
    for face in faces:
        for poly in region_polygons(face.landmarks.points, remove_mouth):
            cv2.fillPoly(holes, [np.round(poly * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    if margin_px > 0:
        k = int(np.ceil(margin_px)) * 2 + 1
        holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    alpha = 1.0 - holes.astype(np.float32) / 255.0
    if feather_px > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather_px)
    return np.clip(alpha, 0.0, 1.0)


def segment(image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RGBA of the image with `alpha`, RGB with the removed regions inpainted)."""
    alpha8 = np.round(alpha * 255).astype(np.uint8)
    # Removed = not fully opaque in the RGBA itself: an opaque pixel keeps the photo's colour.
    removed = (alpha8 < 255).astype(np.uint8) * 255
    inpainted = cv2.inpaint(image, removed, 3, cv2.INPAINT_TELEA) if removed.any() else image.copy()
    rgba = np.dstack([inpainted, alpha8])
    return rgba, inpainted


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation [3,3], translation [3]) minimising |scale * R @ src + t - dst|
    over point pairs (Umeyama 1991), a proper rotation (no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / (s**2).sum(1).mean())
    return scale, rot, mu_d - scale * rot @ mu_s


def morph(bfm: MorphableModel, face: Face3D, alpha: float, keep_pose: bool) -> tuple[np.ndarray, np.ndarray]:
    """(image-space vertices, model-space vertices) of the face morphed toward the mean
    face by `alpha` (0: the face itself, 1: the mean face).

    keep_pose: the morphed shape is aligned to the face's own vertices by a similarity
    transform (Umeyama), so it sits where the face is whatever the morph changed;
    otherwise it goes through the regressed camera, as the face did."""
    _, _, alpha_shp, alpha_exp = split_params(face.params)
    own = bfm.shape(alpha_shp, alpha_exp)
    shape = ((1.0 - alpha) * own + alpha * bfm.mean_vertices()).astype(np.float32)
    if not keep_pose:
        return to_image(bfm.posed(shape, face.params), face.roi_box), shape
    flipped = shape * np.array([1.0, -1.0, 1.0], np.float32)  # model y up -> image y down, same handedness
    scale, rot, shift = umeyama(flipped.astype(np.float64), face.vertices.astype(np.float64))
    return (scale * flipped @ rot.T + shift).astype(np.float32), shape


def uv_pixels(uv: np.ndarray, size: int) -> np.ndarray:
    """[N, 2] texel coordinates (col, row) of UVs in a size x size texture (v up)."""
    return np.stack([uv[:, 0] * (size - 1), (1.0 - uv[:, 1]) * (size - 1)], axis=1)


def bake_texture(
    image: np.ndarray,
    face: Face3D,
    uv: np.ndarray,
    tex_size: int,
    alpha: np.ndarray | None = None,
    blur: float = 0.0,
) -> np.ndarray:
    """uint8 tex_size x tex_size x C texture of the face: the image's colours (and, when
    given, `alpha` as a 4th channel) at its visible vertices, interpolated over the UV
    plane; texels no visible vertex covers (back-facing, occluded) take their nearest
    visible neighbour's colour, never black. `blur` > 0: the colours (not the alpha)
    Gaussian-blurred with a sigma of that fraction of the texture's side."""
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    channels = [image.astype(np.float32)] + ([alpha[..., None].astype(np.float32) * 255] if alpha is not None else [])
    source = np.concatenate(channels, axis=2)
    vis = face.visible if face.visible.sum() >= 3 else np.ones(len(uv), bool)
    xy = face.vertices[vis, :2].astype(np.float32)
    colours = cv2.remap(
        source, xy[:, 0].reshape(-1, 1), xy[:, 1].reshape(-1, 1), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).reshape(len(xy), -1)
    work = min(tex_size, WORK_TEXTURE)
    points = uv_pixels(uv[vis], work)
    cols, rows = np.meshgrid(np.arange(work, dtype=np.float32), np.arange(work, dtype=np.float32))
    grid = np.stack([cols.ravel(), rows.ravel()], axis=1)
    with _BAKE_LOCK:
        baked = LinearNDInterpolator(points, colours)(grid)
        missing = np.isnan(baked[:, 0])
        if missing.any():
            baked[missing] = NearestNDInterpolator(points, colours)(grid[missing])
    texture = baked.reshape(work, work, -1)
    if blur > 0:
        texture[..., :3] = cv2.GaussianBlur(np.ascontiguousarray(texture[..., :3]), (0, 0), blur * work)
    if work != tex_size:
        texture = cv2.resize(texture, (tex_size, tex_size), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.round(texture), 0, 255).astype(np.uint8).reshape(tex_size, tex_size, -1)


def blend(image: np.ndarray, rgba: np.ndarray, origin: tuple[int, int], feather: float) -> np.ndarray:
    """`rgba` composited over `image` at `origin` (x, y), its alpha eased in over
    `feather` pixels at the border so no seam shows."""
    x0, y0 = origin
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    if feather > 0:
        k = max(1, int(round(feather)))
        alpha = cv2.erode(alpha, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather)
    out = image.copy()
    region = out[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    a = alpha[..., None]
    out[y0 : y0 + h, x0 : x0 + w] = np.round(region * (1 - a) + rgba[..., :3].astype(np.float32) * a).astype(np.uint8)
    return out


# ---- the pipeline's per-face steps (serve_app/pipelines/anonymize.py, bench/perf/anonymize.py)


def anonymised_mesh(
    face: Face3D, bfm: MorphableModel, inpainted: np.ndarray, cut: np.ndarray, params
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image-space vertices, model-space vertices, RGBA texture) of one face morphed
    toward the mean and re-baked from the segmented photo; `params`: the pipeline's
    AnonymizeParams (alpha, keep_pose, tex_size, texture_blur)."""
    vertices, model_vertices = morph(bfm, face, params.alpha, params.keep_pose)
    texture = bake_texture(inpainted, face, bfm.uv, params.tex_size, cut, params.texture_blur)
    return vertices, model_vertices, texture


def render_requests(
    bfm: MorphableModel,
    vertices: np.ndarray,
    model_vertices: np.ndarray,
    texture: np.ndarray,
    params,
    frontal: bool,
    image_shape: tuple[int, int],
) -> tuple[list[RenderRequest], tuple[int, int]]:
    """(MeshRenderer requests, origin x, y of the first): the face with the photo's camera
    over its region of the photo; with `frontal`, its frontal render and the same of the
    texture's alpha (the cut-out) rendered like a colour, where the seed's RGBA render is
    transparent."""
    height, width = image_shape
    x0, y0, x1, y1 = region_of(vertices, width, height)
    rgb_texture = np.ascontiguousarray(texture[..., :3])
    common = dict(triangles=bfm.tri, uvs=bfm.uv, alpha_thresh=params.alpha_thresh)
    shift = np.array([x0, y0, 0], np.float32)
    requests = [
        RenderRequest(
            vertices=vertices - shift, texture=rgb_texture, camera="image", height=y1 - y0, width=x1 - x0, **common
        )
    ]
    if frontal:
        front = dict(vertices=model_vertices, camera="frontal", img_size=params.img_size, margin=params.margin)
        front.update(bg_white=params.bg_white, **common)
        requests += [
            RenderRequest(texture=rgb_texture, **front),
            RenderRequest(texture=np.repeat(texture[..., 3:], 3, axis=2), **front),
        ]
    return requests, (x0, y0)


def region_of(vertices: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The projected mesh's box, padded, clipped to the image (never empty)."""
    x0 = int(np.clip(np.floor(vertices[:, 0].min()) - RENDER_PAD, 0, width - 1))
    y0 = int(np.clip(np.floor(vertices[:, 1].min()) - RENDER_PAD, 0, height - 1))
    x1 = int(np.clip(np.ceil(vertices[:, 0].max()) + RENDER_PAD, x0 + 1, width))
    y1 = int(np.clip(np.ceil(vertices[:, 1].max()) + RENDER_PAD, y0 + 1, height))
    return x0, y0, x1, y1
