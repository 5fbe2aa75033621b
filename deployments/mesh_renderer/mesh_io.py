"""Wavefront OBJ with one texture: read (with its MTL's map_Kd) and write (OBJ + MTL + PNG).

Meshes here carry one UV per vertex (what MeshRenderer and TexturesUV take). An OBJ may
index positions and UVs separately; `read_obj` keeps the vertex order when every
position is always paired with the same UV (MediaPipe's canonical face), and otherwise
splits vertices so that each (position, UV) pair becomes one vertex.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class TexturedMesh:
    """vertices [N, 3] float32, triangles [M, 3] int32 (0-based), uvs [N, 2] float32
    (v up) or None when the file has none, texture uint8 RGB [Th, Tw, 3] or None."""

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray | None
    texture: np.ndarray | None


def _index(token: str, count: int) -> int:
    """OBJ index (1-based, negative = from the end) -> 0-based."""
    i = int(token)
    return i - 1 if i > 0 else count + i


def _texture_from_mtl(mtl: Path) -> np.ndarray | None:
    if not mtl.is_file():
        return None
    for line in mtl.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "map_Kd" and len(parts) > 1:
            png = mtl.parent / parts[-1]  # options (-s, -o ...) come before the file name
            bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{mtl}: cannot read texture {png}")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return None


def read_obj(path: str | Path) -> TexturedMesh:
    """Positions, UVs, faces (polygons fanned into triangles) and the texture named by
    the first `mtllib`'s `map_Kd`, if any."""
    path = Path(path)
    pos, tex, corners, mtllib = [], [], [], None
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            pos.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            tex.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            face = []
            for token in parts[1:]:
                fields = token.split("/")
                vt = _index(fields[1], len(tex)) if len(fields) > 1 and fields[1] else -1
                face.append((_index(fields[0], len(pos)), vt))
            corners.extend((face[0], face[i], face[i + 1]) for i in range(1, len(face) - 1))
        elif parts[0] == "mtllib" and mtllib is None and len(parts) > 1:
            mtllib = path.parent / " ".join(parts[1:])
    vertices = np.asarray(pos, np.float32).reshape(-1, 3)
    pairs = np.asarray(corners, np.int64).reshape(-1, 3, 2)
    texture = _texture_from_mtl(mtllib) if mtllib else None
    if not tex or (pairs[..., 1] < 0).all():
        return TexturedMesh(vertices, pairs[..., 0].astype(np.int32), None, texture)
    uv_table = np.asarray(tex, np.float32).reshape(-1, 2)
    flat = pairs.reshape(-1, 2)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    if len(np.unique(unique[:, 0])) == len(unique):
        # One UV per position: keep the file's vertex order (unused vertices get UV 0, 0).
        uvs = np.zeros((len(vertices), 2), np.float32)
        uvs[unique[:, 0]] = uv_table[unique[:, 1]]
        return TexturedMesh(vertices, pairs[..., 0].astype(np.int32), uvs, texture)
    # Seams: one vertex per (position, UV) pair.
    triangles = inverse.reshape(-1, 3).astype(np.int32)
    return TexturedMesh(vertices[unique[:, 0]], triangles, uv_table[unique[:, 1]], texture)


def obj_files(
    name: str, vertices: np.ndarray, triangles: np.ndarray, uvs: np.ndarray, texture: np.ndarray
) -> dict[str, bytes]:
    """The three files of a textured mesh, by file name: `<name>.obj`, `<name>.mtl` and
    `<name>_texture.png` (texture uint8 RGB). For writing to disk or into a zip."""
    vertices = np.asarray(vertices, np.float32)
    triangles = np.asarray(triangles, np.int64)
    uvs = np.asarray(uvs, np.float32)
    if len(uvs) != len(vertices):
        raise ValueError("one UV per vertex expected")
    png_name, mtl_name = f"{name}_texture.png", f"{name}.mtl"
    lines = [f"mtllib {mtl_name}", "usemtl material_0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices.tolist()]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs.tolist()]
    # Same index for position and UV: they are per vertex.
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (triangles + 1).tolist()]
    mtl = [
        "newmtl material_0",
        "Ka 1.000000 1.000000 1.000000",
        "Kd 1.000000 1.000000 1.000000",
        "Ks 0.000000 0.000000 0.000000",
        "illum 1",
        f"map_Kd {png_name}",
    ]
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.asarray(texture, np.uint8), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("texture could not be encoded as PNG")
    return {
        f"{name}.obj": ("\n".join(lines) + "\n").encode(),
        mtl_name: ("\n".join(mtl) + "\n").encode(),
        png_name: png.tobytes(),
    }


def write_obj(
    path: str | Path, vertices: np.ndarray, triangles: np.ndarray, uvs: np.ndarray, texture: np.ndarray
) -> list[Path]:
    """Write `path` (…/<name>.obj) with `<name>.mtl` and `<name>_texture.png` beside it;
    returns the three paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, data in obj_files(path.stem, vertices, triangles, uvs, texture).items():
        out = path.parent / file_name
        out.write_bytes(data)
        written.append(out)
    return written
