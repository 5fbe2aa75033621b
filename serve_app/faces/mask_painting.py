"""Mask augmentation: paint a MaskTheFace mask template onto a meshed face.

The MaskTheFace set (asset `maskthe-face-masks`) holds, per mask type, an RGBA template
and six anchor points in `masks.cfg`. Looking at the templates, the anchors are:

    a ------- b ------- c      a, c: top corners, where the mask meets the cheeks
    |                   |      b:    top middle, on the nose bridge
    d                   f      d, f: lower corners, on the jaw
     \\        e        /       e:    bottom middle, under the chin

MaskTheFace finds the matching face points on dlib's 68 landmarks: b half way down the
nose bridge, a/c where the jaw line crosses the nose tip's height, d/f where it crosses
the lower lip's height, e the chin. Here they come from the 478-point MediaPipe mesh:
mesh points at those heights (picked on MediaPipe's canonical face model), the side
ones carried out to the face's outline (mask_anchor_points). The template is warped by
the least-squares homography of the six pairs (MaskTheFace's choice; an affine map when
the homography would blow the template up) plus a thin-plate spline that puts every
anchor exactly on its face point and, where needed, pulls the cloth over the nose tip
and the chin. Plain masks take a colour, cloth a texture; the mask's brightness follows
the light on the face, and it is blended with the template's alpha.

`_left` / `_right` templates show the mask on a head turned so that the nose points to
the image's left / right (the nose-bridge anchor b sits near that side); the variant is
picked from the head yaw.
"""

from __future__ import annotations

import configparser
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deployments.facemesh.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, face_oval, mesh_pose
from deployments.types import MESH_478, FaceLandmarks

ASSET = "maskthe-face-masks"
# The mask types of the set; each has `_left` and `_right` variants in masks.cfg.
MASK_TYPES = ("surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth", "gas")
TINTABLE = ("surgical", "N95", "KN95")  # white / grey masks: drawn with a colour
TEXTURED = ("cloth",)  # drawn with a texture
# Colours of plain masks, as sold: white, black, grey, navy, sky blue, pink, beige, olive,
# burgundy, lavender, teal, mustard.
MASK_COLORS = (
    "#f4f4f2", "#1c1c1e", "#8a8d91", "#1f2a44", "#8fbfe0", "#f2b5c4",
    "#d9c7a7", "#6b7045", "#6d1f2f", "#b7a6d9", "#2a7f7f", "#d4a528",
)  # fmt: skip
ANCHORS = "abcdef"
# Mesh ids per anchor a..f (averaged when several), chosen on the canonical face model
# (canonical_face_model.obj, y up, cm): 93/323 are the oval at the nose tip's height
# (y -1.05 vs nose tip 1 at -1.13); 195 is half way down the nose bridge (y 1.06,
# between 168 at 3.27 and the tip); 58+172 / 288+397 straddle the lower lip's outer
# edge (17 at -5.37) on the jaw; 152 is the chin. Negative canonical x is the image's
# left on a frontal face (the subject's right), where template anchors a and d sit.
ANCHOR_MESH_IDS = ((93,), (195,), (323,), (58, 172), (152,), (288, 397))
# The mask's lower edge ends this fraction of the nose-bridge-to-chin distance below the
# chin, whatever the template: it covers the chin rather than ending on it.
CHIN_MARGIN = 0.06
# Mesh points the mask must cover (nose tip, chin) and how deep inside its cloth they
# must lie, in template b-to-e lengths.
COVERED_POINTS = (1, 152)
COVER_DEPTH = 0.03
YAW_THRESHOLD = 25.0  # degrees: above it a turned-head template is used
WELL_LIT = 235.0  # face_light of a well-lit face: the mask keeps the template's brightness
BRIGHTNESS_RANGE = (0.5, 1.1)  # the ratio never blacks a mask out nor washes it white
MAX_TEMPLATE_SCALE = 2.0  # a template is pre-shrunk to at most this many times the face size
TEXTURE_TILE = 0.5  # a texture tile is this fraction of the template's width
MAX_PERSPECTIVE_STRETCH = 3.0  # most area scale one end of a template may get over the other
RESIDUAL_STEP = 4  # pixels between the points where the warp's spline is evaluated


@dataclass(frozen=True)
class MaskTemplate:
    name: str  # masks.cfg section: "surgical", "surgical_left", ...
    rgba: np.ndarray  # uint8 [H, W, 4], RGB + alpha
    anchors: np.ndarray  # float32 [6, 2] a..f in template pixels
    # How far the template's opaque part reaches below anchor e, in b-to-e lengths
    # (templates differ: some end at e, some well below it).
    below_chin: float


@dataclass(frozen=True)
class MaskLibrary:
    root: Path
    templates: dict[str, MaskTemplate]  # by masks.cfg section
    textures: dict[str, dict[str, np.ndarray]]  # category -> {"category/stem": uint8 RGB}

    @property
    def mask_types(self) -> tuple[str, ...]:
        """The base types (no `_left`/`_right`) with a template, in MASK_TYPES order."""
        return tuple(t for t in MASK_TYPES if t in self.templates)

    @property
    def texture_names(self) -> tuple[str, ...]:
        return tuple(sorted(name for by_name in self.textures.values() for name in by_name))

    def texture(self, name: str) -> np.ndarray:
        category = name.split("/", 1)[0]
        try:
            return self.textures[category][name]
        except KeyError:
            raise ValueError(f"unknown texture {name!r}; known: {', '.join(self.texture_names)}") from None


def _template_file(root: Path, value: str) -> Path:
    # masks.cfg names files from MaskTheFace's repository root ("masks/templates/x.png").
    parts = Path(value.strip()).parts
    return root.joinpath(*(parts[1:] if parts and parts[0] == "masks" else parts))


def _reach_below(alpha: np.ndarray, anchors: np.ndarray) -> float:
    """Lowest opaque pixel in anchor e's column, below e, as a fraction of the b-to-e height."""
    (_, by), (ex, ey) = anchors[1], anchors[4]
    column = alpha[:, int(np.clip(round(ex), 0, alpha.shape[1] - 1))]
    rows = np.nonzero(column > 127)[0]
    return float((rows.max() - ey) / max(ey - by, 1.0)) if rows.size else 0.0


def _read_rgb(path: Path) -> np.ndarray:
    """A texture as uint8 RGB: grey ones in colour, transparent parts on white cloth."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = np.rint(image[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=4)
def _load(root: str) -> MaskLibrary:
    base = Path(root)
    cfg = configparser.ConfigParser()  # ';' lines (a disabled section) are comments
    cfg.optionxform = str
    if not cfg.read(base / "masks.cfg"):
        raise FileNotFoundError(f"no masks.cfg in {base}")
    templates = {}
    for section in cfg.sections():
        if "template" not in cfg[section]:  # "empty" / "inpaint" modes: no template
            continue
        path = _template_file(base, cfg[section]["template"])
        bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
            raise ValueError(f"{path}: expected an RGBA template")
        rgba = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
        anchors = np.array([[float(v) for v in cfg[section][f"mask_{k}"].split(",")] for k in ANCHORS], np.float32)
        templates[section] = MaskTemplate(section, rgba, anchors, _reach_below(rgba[..., 3], anchors))
    textures: dict[str, dict[str, np.ndarray]] = {}
    texture_dir = base / "textures"
    if texture_dir.is_dir():
        for path in sorted(p for p in texture_dir.glob("*/*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
            category = path.parent.name
            textures.setdefault(category, {})[f"{category}/{path.stem}"] = _read_rgb(path)
    return MaskLibrary(base, templates, textures)


def load_templates(masks_dir: str | Path | None = None) -> MaskLibrary:
    """The mask set in `masks_dir` (default: the `maskthe-face-masks` asset), parsed and
    decoded once per path."""
    if masks_dir is None:
        from serve_app.config.assets import resolve

        masks_dir = resolve(ASSET)
    return _load(str(Path(masks_dir).resolve()))


def mask_anchor_points(face: FaceLandmarks) -> np.ndarray:
    """float32 [6, 2]: the face points template anchors a..f are mapped to, in image pixels.

    The side anchors (a, c, d, f) are where the face's outline crosses their height:
    from the mesh point, outwards along the eye line to the edge of the mesh's convex
    hull. On a frontal face that is the oval point itself; on a turned face the far
    cheek hides behind the nose, and the outline there is the nose / lips / chin
    profile, which the mask spans as a real one does."""
    if face.scheme != MESH_478:
        raise ValueError(f"mask placement needs the 478-point mesh, got a {face.scheme!r} face")
    points = face.points[:, :2].astype(np.float64)
    anchors = np.stack([points[list(ids)].mean(axis=0) for ids in ANCHOR_MESH_IDS])
    across = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]  # image-left eye -> image-right eye
    norm = float(np.linalg.norm(across))
    across = across / norm if norm > 1e-6 else np.array([1.0, 0.0])
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    for i, outward in ((0, -across), (3, -across), (2, across), (5, across)):
        anchors[i] = _ray_exit(anchors[i], outward, hull)
    return anchors.astype(np.float32)


def _ray_exit(origin: np.ndarray, direction: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Where the ray origin + t * direction (t >= 0) leaves a convex polygon that holds
    `origin`: the farthest crossing with its edges (origin itself when none)."""
    best = 0.0
    for q0, q1 in zip(polygon, np.roll(polygon, -1, axis=0)):
        edge = q1 - q0
        denom = direction[0] * edge[1] - direction[1] * edge[0]
        if abs(denom) < 1e-12:  # parallel to this edge
            continue
        rel = q0 - origin
        t = (rel[0] * edge[1] - rel[1] * edge[0]) / denom
        s = (rel[0] * direction[1] - rel[1] * direction[0]) / denom
        if -1e-9 <= s <= 1 + 1e-9 and t > best:
            best = t
    return origin + best * direction


def choose_variant(mask_type: str, yaw: float | None, threshold: float = YAW_THRESHOLD) -> str:
    """`mask_type`, or its `_left`/`_right` variant for a head turned past `threshold`
    degrees (yaw < 0: the nose points to the image's left, as in the `_left` templates)."""
    if yaw is None or abs(yaw) <= threshold:
        return mask_type
    return f"{mask_type}_left" if yaw < 0 else f"{mask_type}_right"


def parse_color(color) -> tuple[int, int, int]:
    """'#rrggbb' or (r, g, b) -> (r, g, b) ints."""
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) != 6:
            raise ValueError(f"colour {color!r} is not #rrggbb")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    r, g, b = (int(v) for v in color)
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour {color!r} is out of 0..255")
    return r, g, b


def draw_augmentation(
    rng: np.random.Generator,
    mask_types: Sequence[str] = MASK_TYPES,
    textures: Sequence[str] = (),
    colors: Sequence[str] = MASK_COLORS,
) -> tuple[str, str | None, str | None]:
    """(mask type, colour or None, texture or None) drawn from `rng`. Always three
    uniform draws, whatever is picked (bounded integer draws would consume a varying
    amount of the stream), so one augmentation's choices never shift the next one's."""
    if not mask_types:
        raise ValueError("no mask types to choose from")
    u_type, u_color, u_texture = rng.random(3)
    mask_type = mask_types[_index(u_type, len(mask_types))]
    color = colors[_index(u_color, len(colors))] if mask_type in TINTABLE and colors else None
    texture = textures[_index(u_texture, len(textures))] if mask_type in TEXTURED and textures else None
    return mask_type, color, texture


def _index(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _tint(rgb: np.ndarray, alpha: np.ndarray, color) -> np.ndarray:
    """A white/grey template in `color`: in CIELAB the colour's a*, b* and its lightness
    plus the template's own lightness variation around its median (folds, shadows,
    seams), so a black or navy mask keeps its shading as a white one does."""
    lab = cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2Lab)
    target = cv2.cvtColor(np.asarray(parse_color(color), np.float32).reshape(1, 1, 3) / 255.0, cv2.COLOR_RGB2Lab)
    opaque = alpha > 0.5
    median = float(np.median(lab[..., 0][opaque])) if opaque.any() else 50.0
    lab[..., 0] = np.clip(target[0, 0, 0] + (lab[..., 0] - median), 0.0, 100.0)
    lab[..., 1:] = target[0, 0, 1:]
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255.0, 0.0, 255.0)


def _texture(rgb: np.ndarray, alpha: np.ndarray, texture: np.ndarray, rng) -> np.ndarray:
    """The template covered with `texture`, tiled at a fixed size relative to the
    template (a pattern as dense on every mask, whatever the texture file's size), cut
    at a random offset when `rng` is given, and shaded by the template's lightness."""
    h, w = rgb.shape[:2]
    th, tw = texture.shape[:2]
    tile_w = max(4, round(w * TEXTURE_TILE))
    tile_h = max(4, round(th * tile_w / tw))
    tile = cv2.resize(texture, (tile_w, tile_h), interpolation=cv2.INTER_AREA if tile_w < tw else cv2.INTER_LINEAR)
    y0, x0 = (int(rng.integers(tile_h)), int(rng.integers(tile_w))) if rng is not None else (0, 0)
    reps = (math.ceil((h + y0) / tile_h), math.ceil((w + x0) / tile_w), 1)
    tex = np.tile(tile, reps)[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    lum = _luminance(rgb)
    opaque = alpha > 0.5
    median = float(np.median(lum[opaque])) if opaque.any() else 128.0
    shade = np.clip(lum / max(median, 1.0), 0.6, 1.3)[..., None]
    return np.clip(tex * shade, 0, 255)


def face_light(image: np.ndarray, face: FaceLandmarks) -> float | None:
    """How brightly the face is lit: the 98th percentile of HSV value (max of R, G, B)
    inside the face oval, None when the oval holds no pixel. The brightest skin, not
    its median: a dark-skinned face in good light should not get a grey mask."""
    oval = face_oval(face)
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(v)) for v in np.floor(oval.min(axis=0)))
    x1, y1 = int(min(width, np.ceil(oval[:, 0].max()) + 1)), int(min(height, np.ceil(oval[:, 1].max()) + 1))
    if x1 <= x0 or y1 <= y0:
        return None
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [np.round(oval - (x0, y0)).astype(np.int32)], 1)
    values = image[y0:y1, x0:x1].max(axis=2)[inside > 0]
    return float(np.percentile(values, 98)) if values.size else None


def _fit_homography(src: np.ndarray, dst: np.ndarray, extent: tuple[int, int]) -> np.ndarray:
    """Template anchors -> face anchors: least-squares homography over all six pairs
    (MaskTheFace's choice), or a least-squares affine map when the homography is a poor
    model of the template as a whole: when it folds the template, sends part of it to
    infinity, or stretches one end of it far more than the other (a turned-head template
    on a face turned less than the template's head: six anchors fit, the margins beyond
    them blow up)."""
    matrix, _ = cv2.findHomography(src, dst, 0)
    if matrix is not None and _well_behaved(matrix, extent):
        return matrix
    affine = np.linalg.lstsq(np.hstack([src, np.ones((len(src), 1))]), dst, rcond=None)[0]
    return np.vstack([affine.T, [0.0, 0.0, 1.0]])


def _well_behaved(matrix: np.ndarray, extent: tuple[int, int]) -> bool:
    # The local area scale of a homography at (x, y) is det(H) / w^3 with w the third
    # row's value there; over the template's corners it must keep its sign (no fold, no
    # point at infinity) and vary by at most MAX_PERSPECTIVE_STRETCH.
    width, height = extent
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], np.float64)
    w = corners @ matrix[2]
    det = float(np.linalg.det(matrix))
    if det <= 0 or np.any(w <= 1e-6):
        return False
    area_scale = det / w**3
    return float(area_scale.max() / area_scale.min()) <= MAX_PERSPECTIVE_STRETCH


def _project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(-1, 2)


class _Residual:
    """Thin-plate spline over the image that is `values` at `centres`: the part of the
    anchor placement a homography cannot fit (six pairs, eight parameters). Adding it
    puts every anchor exactly on its face point, so the mask's top reaches the nose
    bridge and its bottom the chin, while away from the anchors the warp stays the
    homography's perspective."""

    def __init__(self, centres: np.ndarray, values: np.ndarray, scale: float):
        self.centres = centres / scale
        self.scale = scale
        n = len(centres)
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = self._kernel(self.centres, self.centres)
        affine = np.hstack([np.ones((n, 1)), self.centres])
        system[:n, n:] = affine
        system[n:, :n] = affine.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = values
        # Coincident anchors (a face seen exactly from the side) make the system singular:
        # least squares then spreads the residual instead of failing.
        self.coef = np.linalg.lstsq(system, rhs, rcond=None)[0]

    @staticmethod
    def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-300)), 0.0)  # r^2 log r

    def __call__(self, points: np.ndarray) -> np.ndarray:
        p = points / self.scale
        n = len(self.centres)
        return self._kernel(p, self.centres) @ self.coef[:n] + self.coef[n] + p @ self.coef[n + 1 :]


def _to_template(matrix: np.ndarray, residual: _Residual, points: np.ndarray) -> np.ndarray:
    return _project(cv2.invert(matrix)[1], points + residual(points))


def _cover(
    face: FaceLandmarks, alpha: np.ndarray, anchors: np.ndarray, matrix: np.ndarray, residual: _Residual, scale: float
) -> _Residual:
    """The warp, bent where needed so the nose tip and the chin land on the mask's cloth.

    The six anchors put the mask's top on the nose bridge and its bottom under the chin,
    but a template's edge between its anchors is its own shape: on a head seen from the
    side the nose tip can end up just past it. A point that lands outside (or within
    COVER_DEPTH of the edge) is pinned to the nearest deep-enough template point on the
    way to the mask's centre, as one more point of the spline."""
    depth = cv2.distanceTransform((alpha > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    need = COVER_DEPTH * float(np.linalg.norm(anchors[4] - anchors[1]))
    centre = (anchors[1] + anchors[4]) / 2  # between nose bridge and chin: inside every template
    targets = face.points[list(COVERED_POINTS), :2].astype(np.float64)
    pinned = []
    for point, landed in zip(targets, _to_template(matrix, residual, targets)):
        path = landed + np.linspace(0.0, 1.0, 65)[:, None] * (centre - landed)
        cols = np.clip(np.round(path[:, 0]).astype(int), 0, alpha.shape[1] - 1)
        rows = np.clip(np.round(path[:, 1]).astype(int), 0, alpha.shape[0] - 1)
        inside = (
            (depth[rows, cols] >= need)
            & (path[:, 0] >= 0)
            & (path[:, 1] >= 0)
            & (path[:, 0] < alpha.shape[1])
            & (path[:, 1] < alpha.shape[0])
        )
        first = int(np.argmax(inside)) if inside.any() else len(path) - 1
        if first > 0:  # not deep enough where it landed
            pinned.append((point, path[first]))
    if not pinned:
        return residual
    centres = np.vstack([residual.centres * residual.scale] + [p for p, _ in pinned])
    goals = np.vstack([anchors] + [q for _, q in pinned])
    return _Residual(centres, _project(matrix, goals) - centres, scale)


def _warp(rgba: np.ndarray, matrix: np.ndarray, residual: _Residual, region) -> np.ndarray:
    """Template pixels seen at each pixel of `region` (x0, y0, x1, y1 of the image):
    image point p shows template point H^-1(p + residual(p)). The spline is smooth on
    the scale of the face, so it is evaluated every RESIDUAL_STEP pixels and
    interpolated in between."""
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    gw, gh = max(2, math.ceil(w / RESIDUAL_STEP) + 1), max(2, math.ceil(h / RESIDUAL_STEP) + 1)
    gx, gy = np.meshgrid(np.linspace(x0, x1 - 1, gw), np.linspace(y0, y1 - 1, gh))
    coarse = residual(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gh, gw, 2).astype(np.float32)
    # Bilinear between grid points: pixel x of the region is grid column x * (gw - 1) / (w - 1).
    fx = np.arange(w, dtype=np.float32) * ((gw - 1) / max(w - 1, 1))
    fy = np.arange(h, dtype=np.float32) * ((gh - 1) / max(h - 1, 1))
    shift = cv2.remap(coarse, *np.meshgrid(fx, fy), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    moved = np.dstack([xs + shift[..., 0], ys + shift[..., 1]])
    source = cv2.perspectiveTransform(moved, cv2.invert(matrix)[1])
    return cv2.remap(
        rgba, source[..., 0], source[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _outline_of(alpha: np.ndarray, offset) -> np.ndarray:
    """The outer contour of the drawn mask (its largest opaque part), image pixels."""
    contours, _ = cv2.findContours((alpha > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    return (max(contours, key=cv2.contourArea).reshape(-1, 2) + np.asarray(offset)).astype(np.float32)


def apply_mask(
    image_rgb: np.ndarray,
    face: FaceLandmarks,
    mask_type: str,
    color=None,
    texture: str | None = None,
    rng: np.random.Generator | None = None,
    *,
    library: MaskLibrary | None = None,
    yaw_threshold: float = YAW_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Paint a mask of `mask_type` onto one meshed face of `image_rgb` (uint8 RGB HxWx3).

    `mask_type` is a base type (its left/right variant is chosen from the head yaw) or an
    explicit masks.cfg section. `color` ('#rrggbb' or RGB) tints the template, `texture`
    (a library texture name, "category/stem") covers it; `rng` only places the texture.
    -> (new image, outline of the drawn mask [K, 2] float32 in image pixels, info: the
    variant, colour, texture, yaw, brightness ratio and the changed region `box`)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"apply_mask expects uint8 RGB HxWx3, got {image_rgb.dtype} {image_rgb.shape}")
    library = library or load_templates()
    if mask_type not in library.templates:
        raise ValueError(f"unknown mask type {mask_type!r}; known: {', '.join(library.mask_types)}")
    face_anchors = mask_anchor_points(face).astype(np.float64)  # checks the scheme first
    pose = face.pose or (mesh_pose(face.points) if face.points.shape[1] == 3 else None)
    yaw = pose.yaw if pose is not None else None
    base = mask_type.removesuffix("_left").removesuffix("_right")
    variant = mask_type if mask_type != base else choose_variant(base, yaw, yaw_threshold)
    template = library.templates.get(variant) or library.templates[base]
    texture_rgb = library.texture(texture) if texture is not None else None
    bridge_to_chin = face_anchors[4] - face_anchors[1]
    face_anchors[4] += bridge_to_chin * (CHIN_MARGIN - template.below_chin)

    # Shrink a large template first when the face is small: sampling a 1000-pixel
    # template straight down to a 40-pixel face aliases.
    rgba, anchors = template.rgba, template.anchors.astype(np.float64)
    face_span = max(float(np.ptp(face_anchors, axis=0).max()), 1.0)
    shrink = min(1.0, MAX_TEMPLATE_SCALE * face_span / float(np.ptp(anchors, axis=0).max()))
    if shrink < 1.0:
        h, w = rgba.shape[:2]
        size = (max(2, round(w * shrink)), max(2, round(h * shrink)))
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
        scale = np.array([size[0] / w, size[1] / h])
        anchors = (anchors + 0.5) * scale - 0.5  # pixel centres map to pixel centres

    alpha = rgba[..., 3].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    if texture_rgb is not None:
        rgb = _texture(rgb, alpha, texture_rgb, rng)
    elif color is not None:
        rgb = _tint(rgb, alpha, color)
    light = face_light(image_rgb, face)
    ratio = float(np.clip(light / WELL_LIT, *BRIGHTNESS_RANGE)) if light is not None else 1.0
    # Premultiplied colour: bilinear sampling at the template's edge must not pull in
    # the colour of its transparent pixels.
    premultiplied = np.dstack([np.clip(rgb * ratio, 0, 255) * alpha[..., None], alpha])

    matrix = _fit_homography(anchors, face_anchors, (rgba.shape[1], rgba.shape[0]))
    residual = _Residual(face_anchors, _project(matrix, anchors) - face_anchors, face_span)
    residual = _cover(face, alpha, anchors, matrix, residual, face_span)
    height, width = image_rgb.shape[:2]
    th, tw = rgba.shape[:2]
    corners = _project(matrix, np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float64))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    # The residual moves the outline a little: widen the region by its largest shift.
    probe = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 9), np.linspace(lo[1], hi[1], 9)), axis=-1).reshape(-1, 2)
    slack = float(np.abs(residual(probe)).max()) + 2.0
    x0, y0 = np.floor(lo - slack).astype(int)
    x1, y1 = np.ceil(hi + slack).astype(int)
    x0, y0 = int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height))
    x1, y1 = int(np.clip(x1, x0, width)), int(np.clip(y1, y0, height))
    info = {
        "mask_type": base,
        "variant": template.name,
        "color": None if color is None else _hex(color),
        "texture": texture,
        "yaw": yaw,
        "brightness": ratio,
        "box": (x0, y0, x1, y1),
    }
    out = image_rgb.copy()
    if x1 <= x0 or y1 <= y0:
        return out, np.zeros((0, 2), np.float32), info
    warped = _warp(premultiplied, matrix, residual, (x0, y0, x1, y1))
    a = np.clip(warped[..., 3:4], 0.0, 1.0)
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(region * (1.0 - a) + warped[..., :3]), 0, 255).astype(np.uint8)
    return out, _outline_of(a[..., 0], (x0, y0)), info


def _hex(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*parse_color(color))
