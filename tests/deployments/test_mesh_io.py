"""OBJ reading and writing: MediaPipe's canonical face (separate position and UV indices,
one UV per position), a round trip through OBJ + MTL + PNG, and seams, polygons and
negative indices on a small hand-written file."""

from __future__ import annotations

import numpy as np

from deployments.mesh_renderer.mesh_io import obj_files, read_obj, write_obj


def test_reads_the_canonical_face(asset):
    mesh = read_obj(asset("mediapipe-canonical-face") / "canonical_face_model.obj")
    assert mesh.vertices.shape == (468, 3) and mesh.vertices.dtype == np.float32
    assert mesh.triangles.shape == (898, 3) and mesh.triangles.dtype == np.int32
    assert mesh.uvs.shape == (468, 2) and mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
    assert mesh.texture is None  # the file names no material
    # First face line: "f 174/43 156/119 134/220"; vertex 174 is paired with vt 43.
    np.testing.assert_array_equal(mesh.triangles[0], [173, 155, 133])
    # z points to the viewer: the frontmost vertex is the nose (index 4 in FaceMesh's
    # order), on the face's midline.
    front = mesh.vertices[:, 2].argmax()
    assert front == 4 and mesh.vertices[front, 0] == 0


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(30, 3)).astype(np.float32)
    triangles = rng.integers(0, 30, size=(40, 3)).astype(np.int32)
    uvs = rng.uniform(size=(30, 2)).astype(np.float32)
    texture = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    written = write_obj(tmp_path / "anon" / "face.obj", vertices, triangles, uvs, texture)
    assert sorted(p.name for p in written) == ["face.mtl", "face.obj", "face_texture.png"]
    assert set(obj_files("face", vertices, triangles, uvs, texture)) == {p.name for p in written}
    back = read_obj(tmp_path / "anon" / "face.obj")
    np.testing.assert_allclose(back.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(back.triangles, triangles)
    np.testing.assert_allclose(back.uvs, uvs, atol=1e-6)
    np.testing.assert_array_equal(back.texture, texture)  # PNG is lossless, RGB order kept


def test_seams_polygons_and_negative_indices(tmp_path):
    # A square of two triangles written as one quad, whose corner 1 has a different UV in
    # a second triangle (a seam): that corner becomes two vertices.
    (tmp_path / "m.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt 0.5 0.5\n"
        "f 1/1 2/2 3/3 4/4\n"
        "f -4/-1 3/3 2/2\n"
    )
    mesh = read_obj(tmp_path / "m.obj")
    assert mesh.triangles.shape == (3, 3)
    assert len(mesh.vertices) == 5  # four corners + corner 1 again with its second UV
    corners = mesh.vertices[mesh.triangles]  # every corner keeps its position...
    np.testing.assert_array_equal(corners[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(corners[1], [[0, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(corners[2], [[0, 0, 0], [1, 1, 0], [1, 0, 0]])
    uv = mesh.uvs[mesh.triangles]  # ...and its own UV
    np.testing.assert_array_equal(uv[0], [[0, 0], [1, 0], [1, 1]])
    np.testing.assert_array_equal(uv[2], [[0.5, 0.5], [1, 1], [1, 0]])
