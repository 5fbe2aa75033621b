"""The anonymize job's `--steps`: the seed's four scripts as four steps, any contiguous
range of them run over the seed's folders under OUT (serve_app/jobs/anonymize_files.py).
The first step of the range reads what the step before it wrote, so a user can, e.g.,
render again with other render options without reconstructing:

  face3d         RetinaFace + TDDFA -> face3d/           (the seed's face_3d.py)
  segmentation   face3d/ + the photo -> seg/             (segmentation.py)
  anonymization  face3d/ + seg/ -> anon/                 (anonymization.py)
  renderer       anon/ + the photo -> render/, anonymized/  (renderer.py)

Each step is the same code as the pipeline's part (serve_app/pipelines/anonymize.py,
serve_app/faces/face3d.py), split where the seed splits it; all four in memory are what
`--steps all` runs through the pipeline itself. Options take effect in the step that
uses them: segmentation remove_mouth, margin_px, feather_px; anonymization alpha,
keep_pose, texture_blur, tex_size; renderer img_size, margin, bg_white, alpha_thresh
(and feather_px, which also softens the composite's border); face3d max_num_faces.
"""

from __future__ import annotations

import argparse
import asyncio
import types
from pathlib import Path

import numpy as np

from deployments.geometry import shorter_side
from deployments.tddfa.crops import crops_for_boxes
from serve_app.faces import face3d
from serve_app.jobs import anonymize_files as files
from serve_app.jobs.anonymize_files import AnonMesh
from serve_app.pipelines.anonymize import MIN_FACE_SIDE, AnonymizeParams
from serve_app.pipelines.common import Model, gather_or_cancel
from serve_app.pipelines.locate import detect_faces

STEPS = ("face3d", "segmentation", "anonymization", "renderer")
SEED_NAMES = {"face_3d": "face3d"}  # the seed's script face_3d.py


def parse_steps(text: str) -> tuple[str, ...]:
    """`all`, or a comma-separated run of contiguous steps in order (`anonymization,renderer`)."""
    if text.strip().lower() == "all":
        return STEPS
    names = [SEED_NAMES.get(n, n) for n in (w.strip().lower().removesuffix(".py") for w in text.split(",")) if n]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: the steps are all or some of {', '.join(STEPS)}")
    first = STEPS.index(names[0])
    if tuple(names) != STEPS[first : first + len(names)]:
        raise argparse.ArgumentTypeError(
            f"{text!r}: steps run in order, with none left out between the first and the last ({', '.join(STEPS)})"
        )
    return tuple(names)


# ---- the four steps, in memory


async def reconstruct_faces(
    image: np.ndarray, params: AnonymizeParams, bfm, detect: Model, reconstruct: Model
) -> list[face3d.Face3D]:
    """Step 1, as the pipeline does it: every face big enough for a crop, best first, one
    TDDFA item for all of them."""
    height, width = image.shape[:2]
    detections = [f for f in await detect_faces(image, detect) if shorter_side(f.box) >= MIN_FACE_SIDE][
        : params.max_num_faces
    ]
    if not detections:
        return []
    crops, rois = await asyncio.to_thread(crops_for_boxes, image, [f.box for f in detections])
    all_params = await reconstruct(crops)
    return await asyncio.to_thread(
        lambda: [face3d.reconstruct(bfm, p, r, d, (height, width)) for p, r, d in zip(all_params, rois, detections)]
    )


def segment(image: np.ndarray, faces: list[face3d.Face3D], params: AnonymizeParams):
    """Step 2 -> (RGBA for seg/, the inpainted RGB, the cut-out alpha)."""
    cut = face3d.cutout_alpha(image.shape[:2], faces, params.remove_mouth, params.margin_px, params.feather_px)
    segmented, inpainted = face3d.segment(image, cut)
    return segmented, inpainted, cut


async def anonymise_meshes(
    faces: list[face3d.Face3D], bfm, inpainted: np.ndarray, cut: np.ndarray, params: AnonymizeParams
) -> list[AnonMesh]:
    """Step 3: each face morphed toward the mean face, its texture re-baked."""
    baked = await gather_or_cancel(
        asyncio.to_thread(face3d.anonymised_mesh, face, bfm, inpainted, cut, params) for face in faces
    )
    return [AnonMesh(v, mv, tex, bfm.tri, bfm.uv) for v, mv, tex in baked]


async def render_faces(
    image: np.ndarray, meshes: list[AnonMesh], params: AnonymizeParams, render: Model
) -> tuple[list[np.ndarray], np.ndarray]:
    """Step 4 -> (each face's frontal RGBA, the photo with every face replaced), as the
    pipeline renders and composites them."""
    shape = image.shape[:2]

    async def one(mesh: AnonMesh):
        # render_requests reads only the mesh's topology from the morphable model: here
        # it is the OBJ's (the same triangles and UVs when step 3 wrote it).
        topology = types.SimpleNamespace(tri=mesh.triangles, uv=mesh.uvs)
        requests, origin = face3d.render_requests(
            topology, mesh.vertices, mesh.model_vertices, mesh.texture, params, True, shape
        )
        rendered = await gather_or_cancel(render(r) for r in requests)
        front = rendered[1].copy()
        front[..., 3] = np.minimum(front[..., 3], rendered[2][..., 0])
        return front, (rendered[0], origin)

    done = await gather_or_cancel(one(m) for m in meshes)
    fronts, placed = [f for f, _ in done], [p for _, p in done]
    composite = image
    for rgba, origin in placed:
        composite = await asyncio.to_thread(face3d.blend, composite, rgba, origin, max(1.0, params.feather_px))
    return fronts, composite


# ---- a range of steps over the folders


async def run_steps(
    steps: tuple[str, ...],
    image: np.ndarray,
    params: AnonymizeParams,
    bfm,
    models: dict[str, Model],
    output: Path,
    rel: str,
) -> tuple[list[dict], dict[str, str]]:
    """Run `steps` on one input: the first reads its predecessor's folder, the rest take
    what the one before computed; each writes its own folder. -> (the faces' records, the
    files written)."""
    shape = image.shape[:2]
    out = files.Writer(output, rel)
    faces = records = None
    if steps[0] == "face3d":
        faces = await reconstruct_faces(image, params, bfm, models["detect"], models["reconstruct"])
        await asyncio.to_thread(out.face3d, shape, faces)
        records = [face_record(f) for f in faces]
    else:
        records = await asyncio.to_thread(files.read_face3d, output, rel, shape)
    if steps[-1] == "face3d":
        return records, out.outputs

    if "segmentation" in steps or "anonymization" in steps:
        if faces is None:
            faces = await asyncio.to_thread(files.faces_from_records, records, bfm, shape)
    inpainted = cut = meshes = None
    if "segmentation" in steps:
        segmented, inpainted, cut = await asyncio.to_thread(segment, image, faces, params)
        await asyncio.to_thread(out.seg, segmented)
    if "anonymization" in steps:
        if inpainted is None:
            inpainted, cut = await asyncio.to_thread(files.read_seg, output, rel, shape)
        meshes = await anonymise_meshes(faces, bfm, inpainted, cut, params)
        await asyncio.to_thread(out.anon, meshes)
    if "renderer" in steps:
        if meshes is None:
            meshes = await asyncio.to_thread(files.read_anon, output, rel, len(records))
        fronts, composite = await render_faces(image, meshes, params, models["render"])
        await asyncio.to_thread(out.render, fronts, composite)
    return records, out.outputs


def face_record(face: face3d.Face3D) -> dict:
    """What a result row says about a face, the same whether step 1 ran now or earlier."""
    return {
        "box": np.asarray(face.landmarks.box, np.float64).tolist(),
        "score": float(face.landmarks.score),
        "pose": {k: getattr(face.pose, k) for k in ("yaw", "pitch", "roll")},
    }
