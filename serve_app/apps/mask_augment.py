"""Application `mask_augment`: POST /v1/mask-augment (masks painted on every face,
aligned crops), GET /v1/mask-augment/health and /ready.

Graph: MaskAugmentIngress -> RetinaFace, FaceMesh (model-tier deployments, shared with
every other endpoint); painting and cropping run in the ingress, off its event loop.
"""

# No `from __future__ import annotations` here: FastAPI and Serve read the real
# annotations (the form model, the builder's args).

import asyncio

import numpy as np
from fastapi import Request
from pydantic import BaseModel
from ray import serve

from serve_app import display
from serve_app.apps import ingress
from serve_app.config.spec import from_form
from serve_app.imaging import b64, data_uri, encode_jpeg, encode_png
from serve_app.pipelines.mask_augment import SPEC, MaskAugmentParams, MaskAugmentResult, mask_augment, seeded
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import AugmentedImage, FaceAugmentationOut, MaskAugmentFace, MaskAugmentResponse

OUTPUTS = ("masked", "crops")
CROP_QUALITY = 95

MaskAugmentForm = ingress.upload_form(MaskAugmentParams, OUTPUTS, "masked,crops")
app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: mask augmentation and aligned face crops")
calls = ingress.ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
ingress.add_health_routes(app, lambda: calls)


def face_augmentation(index: int, fa, wanted: frozenset[str]) -> FaceAugmentationOut:
    # Encoded only when asked for: the form promises that what is not wanted is not encoded.
    crops = (
        {style: data_uri(encode_jpeg(crop, CROP_QUALITY), "image/jpeg") for style, crop in fa.crops.items()}
        if "crops" in wanted
        else {}
    )
    return FaceAugmentationOut(
        augmentation=index,
        mask_type=fa.mask_type,
        mask_color=fa.mask_color,
        texture=fa.texture,
        error=fa.error,
        crops=crops,
    )


def build_response(result: MaskAugmentResult, wanted: frozenset[str], rid: str) -> MaskAugmentResponse:
    faces = []
    for i, face in enumerate(result.faces):
        augmentations = [face_augmentation(a, aug.faces[i], wanted) for a, aug in enumerate(result.augmentations)]
        faces.append(
            MaskAugmentFace(
                face_index=i,
                box=display.box(face.box),
                score=display.score(face.score),
                landmarks=display.points(face.five_points()),
                yaw=None if face.pose is None else round(face.pose.yaw, 1),
                meshed=face.meshed,
                augmentations=augmentations,
            )
        )
    images = [
        AugmentedImage(augmentation=a, masked_png_base64=b64(encode_png(aug.image)) if "masked" in wanted else None)
        for a, aug in enumerate(result.augmentations)
    ]
    return MaskAugmentResponse(
        request_id=rid, width=result.width, height=result.height, seed=result.seed, faces=faces, augmentations=images
    )


async def handle(
    rgb: np.ndarray, params: MaskAugmentParams, wanted: frozenset[str], models: dict, rid: str
) -> MaskAugmentResponse:
    """POST /v1/mask-augment's work without HTTP (the ingress, the tests and the
    benchmark call it): a decoded image in, the response out; the seed from the request
    id unless the client gave one."""
    result = await mask_augment(rgb, seeded(params, rid), **models)
    endpoint_metrics.faces(len(result.faces))
    return await asyncio.to_thread(build_response, result, wanted, rid)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
@serve.ingress(app)
class MaskAugmentIngress:
    @app.post("/", response_model=MaskAugmentResponse, responses=ingress.MASK_ERRORS)
    async def mask_augment(
        self, request: Request, form: MaskAugmentForm, image: ingress.ImageUpload
    ) -> MaskAugmentResponse:
        wanted = ingress.parse_outputs(form.outputs, OUTPUTS)
        params = from_form(MaskAugmentParams, form)
        rgb = await ingress.decoded_upload(image)
        return await ingress.within_request_timeout(
            handle(rgb, params, wanted, models, request_id(request)), "the mask augmentation"
        )


class MaskAugmentArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`): none yet. Models and their weights
    are configured in the `models` application."""


def build(args: MaskAugmentArgs) -> serve.Application:
    return MaskAugmentIngress.bind()
