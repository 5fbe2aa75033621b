"""3D face anonymisation: the seed's four scripts as one pipeline, in memory, for every
face of a photograph.

1. Reconstruct: RetinaFace finds the faces; TDDFA regresses 62 parameters per face on
   120x120 crops (one item per image); the morphable model turns them into a dense
   mesh, 68 landmarks, the head pose and per-vertex visibility (serve_app/faces/face3d.py).
2. Segment: the photo as RGBA with the eyes (and mouth) cut out, grown and feathered;
   the RGB under them inpainted.
3. Anonymise: each mesh morphed toward the mean face; its texture re-baked in UV space
   from the visible vertices' colours of the segmented photo, then blurred
   (`texture_blur`): shape alone does not anonymise, the skin's detail identifies too.
4. Render: MeshRenderer draws each anonymised face with the original camera over the
   face's region, composited into the photo, blended at the border (the eyes and mouth
   stay removed: inpainted skin); and, when asked, a frontal render per face (the seed's
   output, with the cut-out transparent).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from deployments.geometry import shorter_side
from deployments.tddfa.bfm import MorphableModel
from deployments.tddfa.crops import crops_for_boxes
from serve_app.config.spec import Params, PipelineSpec
from serve_app.faces import face3d
from serve_app.pipelines.common import Model, gather_or_cancel
from serve_app.pipelines.locate import detect_faces

MIN_FACE_SIDE = 8.0  # pixels: smaller detector boxes give no usable 120x120 crop


class AnonymizeParams(Params):
    remove_mouth: bool = Field(True, description="cut the mouth out with the eyes")
    margin_px: float = Field(6.0, ge=0.0, le=64.0, description="growth of the eye/mouth cut-out, pixels")
    feather_px: float = Field(1.5, ge=0.0, le=32.0, description="Gaussian softening of the cut-out edge, pixels")
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="morph toward the mean face: 0 = the face, 1 = the mean")
    keep_pose: bool = Field(True, description="align the morphed face to the original by a similarity transform")
    # The texture carries identity as much as the shape: measured in tests/pipelines/test_anonymize.py.
    texture_blur: float = Field(
        0.02, ge=0.0, le=0.1, description="blur of the re-baked texture (Gaussian sigma, fraction of its side); 0: none"
    )
    tex_size: int = Field(1024, ge=256, le=4096, description="side of the re-baked UV texture, texels")
    img_size: int = Field(512, ge=64, le=2048, description="side of each frontal render, pixels")
    margin: float = Field(0.95, gt=0.0, le=1.0, description="fraction of the frontal render the face spans")
    bg_white: bool = Field(False, description="white background in the frontal renders (else black)")
    alpha_thresh: float = Field(0.5, ge=0.0, lt=1.0, description="render coverage above which a pixel is opaque")
    max_num_faces: int = Field(20, ge=1, le=100, description="faces anonymised per image, best detector score first")


SPEC = PipelineSpec(
    "anonymize", AnonymizeParams, {"detect": "RetinaFace", "reconstruct": "TDDFA", "render": "MeshRenderer"}
)


@dataclass(frozen=True)
class AnonymizedFace:
    face: face3d.Face3D
    vertices: np.ndarray  # [N, 3] the morphed mesh in image space
    model_vertices: np.ndarray  # [N, 3] the morphed mesh in model space (the OBJ export)
    texture: np.ndarray  # uint8 RGBA tex_size^2: colours and the cut-out's alpha
    frontal: np.ndarray | None  # uint8 RGBA img_size^2 frontal render, when asked for


@dataclass(frozen=True)
class AnonymizeResult:
    width: int
    height: int
    faces: list[AnonymizedFace]
    segmented: np.ndarray  # uint8 RGBA: the photo with eyes (and mouth) cut out, RGB inpainted
    anonymized: np.ndarray  # uint8 RGB: the photo with every face replaced


async def anonymize(
    image: np.ndarray,
    params: AnonymizeParams,
    bfm: MorphableModel,
    detect: Model,
    reconstruct: Model,
    render: Model,
    frontal: bool = True,
) -> AnonymizeResult:
    height, width = image.shape[:2]
    detections = [f for f in await detect_faces(image, detect) if shorter_side(f.box) >= MIN_FACE_SIDE][
        : params.max_num_faces
    ]
    if not detections:
        return AnonymizeResult(width, height, [], face3d.segment(image, np.ones((height, width), np.float32))[0], image)
    crops, rois = await asyncio.to_thread(crops_for_boxes, image, [f.box for f in detections])
    all_params = await reconstruct(crops)  # one item: every face of the image, one batched forward
    faces = await asyncio.to_thread(
        lambda: [face3d.reconstruct(bfm, p, r, d, (height, width)) for p, r, d in zip(all_params, rois, detections)]
    )
    cut = await asyncio.to_thread(
        face3d.cutout_alpha, (height, width), faces, params.remove_mouth, params.margin_px, params.feather_px
    )
    segmented, inpainted = await asyncio.to_thread(face3d.segment, image, cut)
    anonymised = await gather_or_cancel(
        anonymise_face(face, bfm, inpainted, cut, params, render, frontal) for face in faces
    )
    composite = image
    for _, (rgba, origin) in anonymised:
        composite = await asyncio.to_thread(face3d.blend, composite, rgba, origin, max(1.0, params.feather_px))
    return AnonymizeResult(width, height, [a[0] for a in anonymised], segmented, composite)


async def anonymise_face(
    face: face3d.Face3D,
    bfm: MorphableModel,
    inpainted: np.ndarray,
    cut: np.ndarray,
    params: AnonymizeParams,
    render: Model,
    frontal: bool,
):
    """-> (AnonymizedFace, (composite RGBA over the face's region, its origin x, y))."""
    vertices, model_vertices, texture = await asyncio.to_thread(
        face3d.anonymised_mesh, face, bfm, inpainted, cut, params
    )
    height, width = inpainted.shape[:2]
    requests, origin = face3d.render_requests(bfm, vertices, model_vertices, texture, params, frontal, (height, width))
    rendered = await gather_or_cancel(render(r) for r in requests)
    # The composite keeps the render whole: the texture under the cut-out is the inpainted
    # skin, so the photo's own eyes and mouth are gone from the picture. Letting them show
    # through the cut-out kept the face recognisable (ArcFace cosine 0.92 to the original).
    placed = rendered[0]
    front_rgba = None
    if frontal:
        front_rgba = rendered[1].copy()
        front_rgba[..., 3] = np.minimum(front_rgba[..., 3], rendered[2][..., 0])
    return AnonymizedFace(face, vertices, model_vertices, texture, front_rgba), (placed, origin)
