"""MeshRenderer: exact pixels on a textured quad (coverage, UV orientation, colours, alpha,
background), depth order, both cameras, batching, and agreement of the PyTorch3D and
plain-torch backends on a real mesh (MediaPipe's canonical face with its UV picture and
with a photo as texture)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import deployments.mesh_renderer.raster as mesh_raster
from deployments.mesh_renderer.mesh_io import read_obj
from deployments.mesh_renderer.model import MeshRenderer, MeshRendererConfig, pytorch3d_available
from deployments.mesh_renderer.scene import RenderRequest, to_scene

HAVE_P3D = pytorch3d_available()
NO_P3D = "pytorch3d is not importable: scripts/setup.sh installs it only from a wheelhouse (FACEGRAPH_WHEELHOUSE)"
BACKENDS = ["torch", pytest.param("pytorch3d", marks=pytest.mark.skipif(not HAVE_P3D, reason=NO_P3D))]

# Checkerboard texture: 8 x 8 cells of 16 texels; cell (row, col) has its own colour so the
# orientation is checked too (texture row 0 = v 1, the top).
CELL, CELLS = 16, 8


def cell_colour(r: int, c: int) -> tuple[int, int, int]:
    return (255 if (r + c) % 2 else 0, 20 + 25 * r, 20 + 25 * c)


def checkerboard() -> np.ndarray:
    tex = np.zeros((CELL * CELLS, CELL * CELLS, 3), np.uint8)
    for r in range(CELLS):
        for c in range(CELLS):
            tex[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = cell_colour(r, c)
    return tex


def quad(x0, y0, x1, y1, z=0.0, uv=((0, 1), (1, 1), (1, 0), (0, 0))):
    """Axis-aligned quad in image pixels (top-left, top-right, bottom-right, bottom-left)."""
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], np.int32), np.array(uv, np.float32)


# Pixels 10..49 x 20..58 exactly (pixel centres are integers, the edges on half pixels).
QUAD = (9.5, 19.5, 49.5, 58.5)
H, W = 64, 80


def quad_request(**kw) -> RenderRequest:
    v, f, uv = quad(*QUAD)
    return RenderRequest(
        vertices=v, triangles=f, uvs=uv, texture=checkerboard(), camera="image", height=H, width=W, **kw
    )


@pytest.fixture(scope="module", params=BACKENDS)
def renderer(request) -> MeshRenderer:
    r = MeshRenderer(MeshRendererConfig(backend=request.param))
    assert r.backend == request.param
    return r


@pytest.fixture(scope="module")
def face(asset):
    folder = asset("mediapipe-canonical-face")
    mesh = read_obj(folder / "canonical_face_model.obj")
    uv_picture = cv2.cvtColor(cv2.imread(str(folder / "canonical_face_model_uv_visualization.png")), cv2.COLOR_BGR2RGB)
    # 4096^2 -> 512^2 keeps the tests quick; the lines of the UV layout stay visible.
    uv_picture = cv2.resize(uv_picture, (512, 512), interpolation=cv2.INTER_AREA)
    return mesh, uv_picture


@pytest.fixture(scope="module")
def photo_texture(photos_dir) -> np.ndarray:
    """A colourful real texture: a portrait squeezed to 512 x 512."""
    bgr = cv2.imread(str(photos_dir / "3ddfa_JianzhuGuo.jpg"))
    return cv2.cvtColor(cv2.resize(bgr, (512, 512), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def posed(vertices: np.ndarray, yaw: float, pitch: float, roll: float, h: int, w: int) -> np.ndarray:
    """Canonical-face vertices (cm, y up, z to the viewer) rotated and placed in an h x w
    image (pixels, y down, larger z nearer): 80 % of the canvas height."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    p = vertices.astype(np.float64) @ (rz @ rx @ ry).T
    p -= (p.min(0) + p.max(0)) / 2
    s = 0.8 * h / (p[:, 1].max() - p[:, 1].min())
    return np.stack([w / 2 + s * p[:, 0], h / 2 - s * p[:, 1], s * p[:, 2]], 1).astype(np.float32)


def face_request(mesh, texture, **kw) -> RenderRequest:
    return RenderRequest(
        vertices=kw.pop("vertices", mesh.vertices), triangles=mesh.triangles, uvs=mesh.uvs, texture=texture, **kw
    )


# ----------------------------------------------------------------------------- exact pixels


def test_quad_coverage_orientation_and_colours(renderer):
    out = renderer.predict([quad_request()])[0]
    assert out.shape == (H, W, 4) and out.dtype == np.uint8
    inside = np.zeros((H, W), bool)
    inside[20:59, 10:50] = True
    assert set(np.unique(out[..., 3])) == {0, 255}
    np.testing.assert_array_equal(out[..., 3] == 255, inside)
    assert (out[~inside, :3] == 0).all()  # black background
    # The top-left pixel shows the texture's top-left cell, the bottom-right its last one.
    assert tuple(out[20, 10, :3]) == cell_colour(0, 0)
    assert tuple(out[58, 49, :3]) == cell_colour(7, 7)
    # Every pixel whose samples all fall inside one cell (bilinear between that cell's
    # texels only) has exactly the cell's colour. Samples: +-0.25 px around the centre.
    t = CELL * CELLS - 1
    checked = 0
    for r in range(20, 59):
        for c in range(10, 50):
            tx = (np.array([c - 0.25, c + 0.25]) - QUAD[0]) / (QUAD[2] - QUAD[0]) * t
            ty = (np.array([r - 0.25, r + 0.25]) - QUAD[1]) / (QUAD[3] - QUAD[1]) * t
            cx, cy = np.floor(tx) // CELL, np.floor(ty) // CELL
            if cx[0] == cx[1] == np.ceil(tx[1]) // CELL and cy[0] == cy[1] == np.ceil(ty[1]) // CELL:
                assert tuple(out[r, c, :3]) == cell_colour(int(cy[0]), int(cx[0])), (r, c)
                checked += 1
    assert checked > 0.6 * inside.sum()


def test_bg_white_and_soft_alpha(renderer):
    black, white = renderer.predict([quad_request(), quad_request(bg_white=True)])
    np.testing.assert_array_equal(white[..., 3], black[..., 3])
    outside = black[..., 3] == 0
    assert (white[outside, :3] == 255).all()
    np.testing.assert_array_equal(white[~outside], black[~outside])

    # Right edge through the middle of column 49: half of its samples are covered.
    v, f, uv = quad(9.5, 19.5, 49.0, 58.5)
    base = dict(vertices=v, triangles=f, uvs=uv, texture=checkerboard(), camera="image", height=H, width=W)
    soft, half, lower = renderer.predict([RenderRequest(**base, alpha_thresh=t) for t in (None, 0.5, 0.4)])
    assert (soft[21:58, 49, 3] == 128).all() and (soft[20:59, 10:49, 3] == 255).all()
    assert (half[20:59, 49, 3] == 0).all() and (half[20:59, 49, :3] == 0).all()  # 0.5 is not > 0.5
    assert (lower[20:59, 49, 3] == 255).all()
    np.testing.assert_array_equal(lower[20:59, 49, :3], soft[20:59, 49, :3])


def test_nearest_surface_wins(renderer):
    """Larger z is nearer: of two overlapping quads the one with larger z shows, whatever
    the triangle order."""
    tex = np.zeros((16, 16, 3), np.uint8)
    tex[:, :8] = (255, 0, 0)
    tex[:, 8:] = (0, 0, 255)
    # Square quads: their diagonals run through sample centres (see NUDGE).
    red = quad(9.5, 9.5, 40.5, 40.5, z=10.0, uv=((0.1, 0.9), (0.2, 0.9), (0.2, 0.8), (0.1, 0.8)))
    blue = quad(24.5, 24.5, 55.5, 55.5, z=2.0, uv=((0.8, 0.9), (0.9, 0.9), (0.9, 0.8), (0.8, 0.8)))

    def scene(first, second):
        v = np.concatenate([first[0], second[0]])
        f = np.concatenate([first[1], second[1] + 4])
        return RenderRequest(
            vertices=v,
            triangles=f,
            uvs=np.concatenate([first[2], second[2]]),
            texture=tex,
            camera="image",
            height=64,
            width=64,
        )

    for out in renderer.predict([scene(red, blue), scene(blue, red)]):
        assert (out[25:41, 25:41, :3] == (255, 0, 0)).all()  # the overlap: red is nearer
        assert (out[45:56, 45:56, :3] == (0, 0, 255)).all()
        assert (out[10:24, 10:24, :3] == (255, 0, 0)).all()


def test_nothing_to_draw_and_bad_requests(renderer):
    v, f, uv = quad(*QUAD)
    tex = checkerboard()
    empty = RenderRequest(vertices=v, triangles=f[:0], uvs=uv, texture=tex, camera="image", height=H, width=W)
    off = RenderRequest(vertices=v - 200, triangles=f, uvs=uv, texture=tex, camera="image", height=H, width=W)
    for out in renderer.predict([empty]) + renderer.predict([empty, off]):
        assert out.shape == (H, W, 4) and not out.any()
    with pytest.raises(ValueError, match="uvs"):
        RenderRequest(vertices=v, triangles=f, uvs=uv[:3], texture=tex)
    with pytest.raises(ValueError, match="height and width"):
        RenderRequest(vertices=v, triangles=f, uvs=uv, texture=tex, camera="image")
    with pytest.raises(ValueError, match="out of range"):
        RenderRequest(vertices=v, triangles=f + 2, uvs=uv, texture=tex)


# ----------------------------------------------------------------------------- cameras


@pytest.mark.parametrize("margin", [0.95, 0.5])
def test_frontal_centres_and_fits_the_mesh(renderer, face, margin):
    mesh, tex = face
    size = 256
    out = renderer.predict([face_request(mesh, tex, camera="frontal", img_size=size, margin=margin)])[0]
    assert out.shape == (size, size, 4)
    ys, xs = np.nonzero(out[..., 3])
    spans = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    # The canonical face is taller than wide: its height spans `margin` of the frame.
    assert abs(max(spans) - margin * size) <= 2, spans
    assert abs((ys.min() + ys.max()) / 2 - (size - 1) / 2) <= 1.5
    assert abs((xs.min() + xs.max()) / 2 - (size - 1) / 2) <= 1.5
    # Upright (model +y is up): the face is wide at the forehead, narrow at the chin.
    alpha = out[..., 3] > 0
    top, bottom = ys.min() + spans[0] // 8, ys.max() - spans[0] // 8
    assert alpha[top].sum() > 1.3 * alpha[bottom].sum()


def test_image_camera_draws_where_the_vertices_are(renderer, face):
    mesh, tex = face
    h, w = 240, 320
    v = posed(mesh.vertices, yaw=30, pitch=-10, roll=8, h=h, w=w)
    out = renderer.predict([face_request(mesh, tex, vertices=v, camera="image", height=h, width=w)])[0]
    assert out.shape == (h, w, 4)
    ys, xs = np.nonzero(out[..., 3])
    assert abs(xs.min() - v[:, 0].min()) <= 1.5 and abs(xs.max() - v[:, 0].max()) <= 1.5
    assert abs(ys.min() - v[:, 1].min()) <= 1.5 and abs(ys.max() - v[:, 1].max()) <= 1.5


# ----------------------------------------------------------------------------- batching


def test_batch_of_three_equals_one_by_one(renderer, face, photo_texture):
    mesh, tex = face
    items = [
        face_request(mesh, tex, camera="frontal", img_size=256),
        face_request(
            mesh,
            photo_texture,
            vertices=posed(mesh.vertices, -25, 5, 0, 256, 256),
            camera="image",
            height=256,
            width=256,
            bg_white=True,
        ),
        quad_request(alpha_thresh=None),
    ]
    batched = renderer.predict(items)
    assert len(batched) == 3
    for item, out in zip(items, batched):
        np.testing.assert_array_equal(out, renderer.predict([item])[0])
    assert renderer.predict([]) == []
    assert MeshRenderer.item_size(items[0]) == 1


# ----------------------------------------------------------------------------- backends


def test_auto_backend_reports_what_it_uses():
    """auto: PyTorch3D on a GPU (when installed), plain torch on a CPU, where PyTorch3D's
    rasteriser is several times slower."""
    from deployments.mesh_renderer.model import BACKENDS
    from deployments.runtime import resolve_runtime
    from deployments.types import Placement

    r = MeshRenderer(MeshRendererConfig())
    assert r.backend == "torch" and r.device.type == "cpu"
    assert r.describe() == {"runtime": "cpu", "backend": "torch"}  # what the health entry reports
    # A GPU replica's choice, decided without a GPU: the rule, not the device.
    assert resolve_runtime("auto", Placement(device="cuda"), BACKENDS) == ("pytorch3d" if HAVE_P3D else "torch")
    with pytest.raises(ValueError, match="expected one of pytorch3d, torch, auto"):
        MeshRenderer(MeshRendererConfig(backend="opengl"))
    if not HAVE_P3D:
        with pytest.raises(RuntimeError, match="pytorch3d"):
            MeshRenderer(MeshRendererConfig(backend="pytorch3d"))


@pytest.mark.skipif(not HAVE_P3D, reason=NO_P3D)
def test_pytorch3d_and_torch_backends_agree(face, photo_texture):
    mesh, uv_picture = face
    h, w = 360, 480
    items = [
        face_request(mesh, uv_picture, camera="frontal", img_size=512),
        face_request(mesh, photo_texture, camera="frontal", img_size=512, bg_white=True, alpha_thresh=None),
        # Turned: the nose hides part of a cheek, so the depth order must agree too.
        face_request(
            mesh, photo_texture, vertices=posed(mesh.vertices, 40, -12, 6, h, w), camera="image", height=h, width=w
        ),
    ]
    p3d = MeshRenderer(MeshRendererConfig(backend="pytorch3d")).predict(items)
    plain = MeshRenderer(MeshRendererConfig(backend="torch")).predict(items)
    for i, (a, b) in enumerate(zip(p3d, plain)):
        ma, mb = a[..., 3] > 0, b[..., 3] > 0
        iou = (ma & mb).sum() / (ma | mb).sum()
        both = ma & mb
        diff = np.abs(a[..., :3].astype(np.int16) - b[..., :3].astype(np.int16))[both].mean()
        assert iou >= 0.98 and diff <= 3, (i, iou, diff)
        assert ma.mean() > 0.2  # a real render, not an empty frame


@pytest.mark.skipif(not HAVE_P3D, reason=NO_P3D)
def test_pytorch3d_tiles_equal_whole_images(face, photo_texture):
    """On CPU PyTorch3D rasterises tile by tile; GPUs take whole (non-square) images
    through MeshRasterizer. Both ways give the same pixels (whole images run here with
    PyTorch3D's naive CPU kernel, on small canvases)."""
    mesh, _ = face
    items = [
        quad_request(),
        face_request(
            mesh, photo_texture, vertices=posed(mesh.vertices, 35, 10, -5, 70, 96), camera="image", height=70, width=96
        ),
        face_request(
            mesh, photo_texture, vertices=posed(mesh.vertices, -20, 0, 0, 90, 60), camera="image", height=90, width=60
        ),
    ]
    scenes = [to_scene(item, 2) for item in items]
    device = torch.device("cpu")
    tiles = mesh_raster.render_pytorch3d(scenes, device, 2, tiled=True)
    whole = mesh_raster.render_pytorch3d(scenes, device, 2, tiled=False)
    for (rgb_t, cov_t), (rgb_w, cov_w) in zip(tiles, whole):
        np.testing.assert_array_equal(cov_t, cov_w)
        # Tile-local NDC rounds differently in the last bits: under half a grey level.
        np.testing.assert_allclose(rgb_t, rgb_w, atol=0.5 / 255)
