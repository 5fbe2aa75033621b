"""The anonymize job's folders under OUT, the seed's layout: one writer per step, and a
reader for each folder a later step starts from (`--steps`, serve_app/jobs/anonymize_steps.py).

  face3d/<rel>/faces.json            the image's size and how many faces step 1 found
  face3d/<rel>/face<i>.json          TDDFA parameters, ROI, detector box/score/5 points, 68 landmarks, pose
  face3d/<rel>/face<i>_vertices.npy  the reconstructed dense mesh, image pixels
  seg/<rel>_masked.png               RGBA: the photo inpainted under the cut-out, the cut-out as alpha
  anon/<rel>/<name>.obj              + .mtl and _texture.png (RGBA, the cut-out transparent): the
                                     anonymised mesh in model space
  anon/<rel>/<name>_vertices.npy     the same mesh placed in the photo, image pixels
  render/<rel>_front.png             frontal render, RGBA
  anonymized/<rel>.png               the photo with every face anonymised

<rel> keeps the source extension (a.jpg and a.png never collide); face 0 keeps the seed's
names, further faces add _face<i>. Every writer returns {key: path under OUT} for the
result row's `outputs`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deployments.mesh_renderer.mesh_io import obj_files, read_obj
from deployments.types import FIVE_POINT, FaceLandmarks
from serve_app import display
from serve_app.errors import bad_input
from serve_app.faces import face3d
from serve_app.imaging import encode_png
from serve_app.jobs.runner import write_atomic

INDEX = "faces.json"


@dataclass(frozen=True)
class AnonMesh:
    """One anonymised face as the renderer takes it."""

    vertices: np.ndarray  # [N, 3] image pixels: where the face goes in the photo
    model_vertices: np.ndarray  # [N, 3] model space: the OBJ, and the frontal render
    texture: np.ndarray  # uint8 RGBA: colours, the cut-out as alpha
    triangles: np.ndarray  # [M, 3]
    uvs: np.ndarray  # [N, 2], v up


def face_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}_face{index}"


def missing(path: str, step: str) -> Exception:
    """An input whose earlier step's output is not under OUT: an error row naming it."""
    return bad_input(f"no {path} under --output: run the {step} step first (--steps {step},...)", code="missing_step")


class Writer:
    """Writes files under OUT for one input and records them for the row's `outputs`."""

    def __init__(self, output: Path, rel: str):
        self.output, self.rel, self.outputs = output, rel, {}

    def put(self, key: str, target: str, data: bytes) -> None:
        write_atomic(self.output / target, data)
        self.outputs[key] = target

    def face3d(self, shape: tuple[int, int], faces: list[face3d.Face3D]) -> None:
        for i, face in enumerate(faces):
            record = {
                "params": face.params.tolist(),
                "roi_box": face.roi_box.tolist(),
                # The detector's face, kept whole: a later step rebuilds the Face3D from
                # these and the parameters, exactly as step 1 built it.
                "box": np.asarray(face.landmarks.box, np.float64).tolist(),
                "score": float(face.landmarks.score),
                "five": np.asarray(face.landmarks.five, np.float64).tolist(),
                "landmarks": display.points(face.landmarks.points),
                "pose": {k: getattr(face.pose, k) for k in ("yaw", "pitch", "roll")},
            }
            self.put(f"face3d{i}", f"face3d/{self.rel}/face{i}.json", json.dumps(record).encode())
            self.put(f"vertices{i}", f"face3d/{self.rel}/face{i}_vertices.npy", npy(face.vertices))
        index = {"width": shape[1], "height": shape[0], "faces": len(faces)}
        self.put("face3d", f"face3d/{self.rel}/{INDEX}", json.dumps(index).encode())

    def seg(self, segmented: np.ndarray) -> None:
        self.put("seg", f"seg/{self.rel}_masked.png", encode_png(segmented))

    def anon(self, meshes: list[AnonMesh]) -> None:
        name = Path(self.rel).name
        for i, mesh in enumerate(meshes):
            stem = face_name(name, i)
            files = obj_files(stem, mesh.model_vertices, mesh.triangles, mesh.uvs, mesh.texture)
            files[f"{stem}_texture.png"] = encode_png(mesh.texture)  # RGBA: obj_files keeps RGB only
            files[f"{stem}_vertices.npy"] = npy(mesh.vertices)
            for file_name, data in files.items():
                self.put(file_name, f"anon/{self.rel}/{file_name}", data)

    def render(self, fronts: list[np.ndarray | None], anonymized: np.ndarray) -> None:
        name = Path(self.rel).name
        for i, front in enumerate(fronts):
            if front is not None:
                self.put(
                    f"render{i}", f"render/{Path(self.rel).parent / face_name(name, i)}_front.png", encode_png(front)
                )
        self.put("anonymized", f"anonymized/{self.rel}.png", encode_png(anonymized))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ---- readers: where a later step starts


def read_face3d(output: Path, rel: str, shape: tuple[int, int]) -> list[dict]:
    """The face records step 1 wrote for this input (none: it found no face)."""
    index_path = f"face3d/{rel}/{INDEX}"
    if not (output / index_path).is_file():
        raise missing(index_path, "face3d")
    index = json.loads((output / index_path).read_text())
    if (index["height"], index["width"]) != tuple(shape):
        raise bad_input(
            f"{index_path} is for a {index['width']}x{index['height']} image, this one is "
            f"{shape[1]}x{shape[0]}: run the face3d step again",
            code="missing_step",
        )
    records = []
    for i in range(index["faces"]):
        path = output / f"face3d/{rel}/face{i}.json"
        if not path.is_file():
            raise missing(f"face3d/{rel}/face{i}.json", "face3d")
        records.append(json.loads(path.read_text()))
    return records


def faces_from_records(records: list[dict], bfm, shape: tuple[int, int]) -> list[face3d.Face3D]:
    """Each face as step 1 built it: the same parameters give the same mesh, landmarks,
    pose and visibility."""
    faces = []
    for r in records:
        detection = FaceLandmarks(
            box=np.asarray(r["box"], np.float32),
            score=r["score"],
            points=np.asarray(r["five"], np.float32),
            scheme=FIVE_POINT,
        )
        params, roi = np.asarray(r["params"], np.float32), np.asarray(r["roi_box"], np.float64)
        faces.append(face3d.reconstruct(bfm, params, roi, detection, shape))
    return faces


def read_seg(output: Path, rel: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(the photo inpainted under the cut-out, RGB; the cut-out alpha, float 0..1)."""
    path = f"seg/{rel}_masked.png"
    rgba = read_rgba(output / path)
    if rgba is None:
        raise missing(path, "segmentation")
    if rgba.shape[:2] != tuple(shape):
        raise bad_input(f"{path} is not this image's size: run the segmentation step again", code="missing_step")
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0


def read_anon(output: Path, rel: str, count: int) -> list[AnonMesh]:
    name, meshes = Path(rel).name, []
    for i in range(count):
        stem = f"anon/{rel}/{face_name(name, i)}"
        if not (output / f"{stem}.obj").is_file() or not (output / f"{stem}_vertices.npy").is_file():
            raise missing(f"{stem}.obj", "anonymization")
        mesh = read_obj(output / f"{stem}.obj")
        texture = read_rgba(output / f"{stem}_texture.png")
        if texture is None or mesh.uvs is None:
            raise missing(f"{stem}_texture.png", "anonymization")
        vertices = np.load(output / f"{stem}_vertices.npy")
        if len(vertices) != len(mesh.vertices):
            raise bad_input(f"{stem}.obj and {stem}_vertices.npy disagree: run the anonymization step again")
        meshes.append(AnonMesh(vertices, mesh.vertices, texture, mesh.triangles, mesh.uvs))
    return meshes


def read_rgba(path: Path) -> np.ndarray | None:
    """uint8 RGBA of a PNG (an RGB one opaque), None when there is none."""
    if not path.is_file():
        return None
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3:
        return None
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
