"""Batch job `anonymize`: 3D anonymisation of every face of every photo, in the seed's
layout under OUT (one pipeline instead of four scripts reading each other's files):

  face3d/<rel>/face<i>.json        parameters, ROI, 68 landmarks, pose     (step 1)
  face3d/<rel>/face<i>_vertices.npy  the reconstructed dense mesh, image pixels
  seg/<rel>_masked.png             RGBA, eyes (and mouth) cut out           (step 2)
  anon/<rel>/<name>.obj            + .mtl and _texture.png: the anonymised mesh (step 3)
  render/<rel>_front.png           frontal render                           (step 4)
  anonymized/<rel>.png             the photo with every face anonymised

<rel> keeps the source extension (a.jpg and a.png never collide); face 0 keeps the
seed's names, further faces add _face<i>. Resumable, one error row per failed input;
--stop-on-error stops at the first.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from deployments.mesh_renderer.mesh_io import obj_files
from serve_app import display
from serve_app.config.model_tier import morphable_model
from serve_app.imaging import decode_image, encode_png
from serve_app.jobs.runner import BatchJob, Models, write_atomic
from serve_app.pipelines.anonymize import SPEC, AnonymizeResult, anonymize

HELP = "3D face anonymisation (RetinaFace -> TDDFA -> morph to the mean face -> MeshRenderer)"

_bfm: dict[str, tuple] = {}  # per worker process: the morphable model, loaded once


def options(args) -> dict:
    from serve_app.config.assets import resolve_for_serving
    from serve_app.config.model_tier import MORPHABLE_MODEL, MORPHABLE_MODEL_FILES

    # Its files resolved here, in the driver: a missing one stops the job with one line
    # (serve_app/jobs/runner.py) instead of failing every input in the workers.
    for asset in MORPHABLE_MODEL_FILES.values():
        resolve_for_serving(asset)
    # The asset actually used goes to the workers: a stand-in allowed here (by
    # FACEGRAPH_ALLOW_STAND_INS in the driver's env) is the one they load, whatever theirs.
    used, _ = resolve_for_serving(MORPHABLE_MODEL)
    return {"morphable_model": used}


async def process(path: Path, models: Models, opts: dict) -> dict:
    if opts["morphable_model"] not in _bfm:
        _bfm[opts["morphable_model"]] = await asyncio.to_thread(morphable_model, opts["morphable_model"])
    bfm, description = _bfm[opts["morphable_model"]]
    rel = str(path.relative_to(opts["input"]))
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    result = await anonymize(image, opts["params"], bfm, **models)
    outputs = await asyncio.to_thread(write_files, result, bfm, Path(opts["output"]), rel)
    faces = [
        {
            "box": display.box(a.face.landmarks.box),
            "score": display.score(a.face.landmarks.score),
            "pose": {k: round(getattr(a.face.pose, k), 1) for k in ("yaw", "pitch", "roll")},
        }
        for a in result.faces
    ]
    return {"faces": faces, "morphable_model": description, "outputs": outputs}


def face_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}_face{index}"


def write_files(result: AnonymizeResult, bfm, output: Path, rel: str) -> dict[str, str]:
    outputs = {}

    def put(key: str, target: str, data: bytes) -> None:
        write_atomic(output / target, data)
        outputs[key] = target

    name = Path(rel).name
    put("seg", f"seg/{rel}_masked.png", encode_png(result.segmented))
    put("anonymized", f"anonymized/{rel}.png", encode_png(result.anonymized))
    for i, anon in enumerate(result.faces):
        face = anon.face
        record = {
            "params": face.params.tolist(),
            "roi_box": face.roi_box.tolist(),
            "landmarks": display.points(face.landmarks.points),
            "pose": {k: getattr(face.pose, k) for k in ("yaw", "pitch", "roll")},
        }
        put(f"face3d{i}", f"face3d/{rel}/face{i}.json", json.dumps(record).encode())
        buffer = _npy(face.vertices)
        put(f"vertices{i}", f"face3d/{rel}/face{i}_vertices.npy", buffer)
        stem = face_name(name, i)
        for file_name, data in obj_files(stem, anon.model_vertices, bfm.tri, bfm.uv, anon.texture).items():
            put(f"{file_name}", f"anon/{rel}/{file_name}", data)
        if anon.frontal is not None:
            put(f"render{i}", f"render/{Path(rel).parent / stem}_front.png", encode_png(anon.frontal))
    return outputs


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


JOB = BatchJob(SPEC, HELP, process, options=options)
