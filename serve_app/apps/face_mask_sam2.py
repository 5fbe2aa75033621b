"""Application `face_mask_sam2`: POST /v1/face-mask-sam2 (real and western-cartoon
faces), GET /v1/face-mask-sam2/health and /ready.

Graph: FaceMaskSam2Ingress -> FaceMesh (a model-tier deployment), and from the ingress
straight to the operator's SAM2 service over HTTP (serve_app/clients/sam2.py). SAM2
unset, down, slow or wrong: that face gets the filled FaceMesh oval instead, and the
response says so; SAM2 trouble never fails the request.
"""

# No `from __future__ import annotations` here: FastAPI and Serve read the real
# annotations (the form model, the builder's args).

from typing import Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel, Field
from ray import serve

from serve_app.apps import ingress
from serve_app.clients.sam2 import Sam2Client
from serve_app.config.settings import Sam2Config
from serve_app.imaging import OUTPUT_FIELDS
from serve_app.pipelines.face_mask_sam2 import SPEC, FaceMaskSam2Params, face_mask_sam2
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import FaceMaskSam2Response, FaceMaskSource

MaskForm = ingress.upload_form(FaceMaskSam2Params, tuple(OUTPUT_FIELDS), "mask,rgba,overlay")
app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: face mask with FaceMesh + SAM2")
calls = ingress.ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
sam2_state = {"SAM2": "not started"}
ingress.add_health_routes(app, lambda: calls, lambda: sam2_state)


async def handle(
    rgb: np.ndarray, params: FaceMaskSam2Params, wanted: frozenset[str], models: dict, sam2: Sam2Client, rid: str
) -> FaceMaskSam2Response:
    """POST /v1/face-mask-sam2's work without HTTP (the ingress, the tests and the
    benchmark call it): a decoded image in, the response out."""
    result, encoded = await ingress.masked(rgb, face_mask_sam2(rgb, params, sam2=sam2, **models), wanted)
    endpoint_metrics.faces(len(result.faces))
    faces = [FaceMaskSource.of(f) for f in result.faces]
    return FaceMaskSam2Response(
        request_id=rid, width=result.width, height=result.height, boxes=[f.box for f in faces], faces=faces, **encoded
    )


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceMaskSam2Ingress:
    def __init__(self, sam2_overrides: dict):
        # Built here, in the replica: SAM2_* come from this worker's environment, with
        # the builder's explicit args on top. The API key only ever comes from the env.
        self.sam2 = Sam2Client(Sam2Config.from_env(**sam2_overrides))
        sam2_state["SAM2"] = "configured" if self.sam2.configured else "not configured (polygon fallback)"

    @app.post("/", response_model=FaceMaskSam2Response, responses=ingress.MASK_ERRORS)
    async def face_mask_sam2(
        self, request: Request, form: MaskForm, image: ingress.ImageUpload
    ) -> FaceMaskSam2Response:
        # SAM2 is bounded by its own timeout inside; the request deadline covers the mesh.
        rid = request_id(request)
        return await ingress.mask_request(
            image,
            form,
            FaceMaskSam2Params,
            lambda rgb, params, wanted: handle(rgb, params, wanted, models, self.sam2, rid),
        )


class FaceMaskSam2Args(BaseModel):
    """Builder arguments (serve_config.yaml `args`)."""

    sam2: dict[str, Any] = Field(
        default_factory=dict,
        description="SAM2 settings (serve_app/config/settings.py field names) on top of the SAM2_* environment of "
        "the ingress replica; never the API key",
    )


def build(args: FaceMaskSam2Args) -> serve.Application:
    Sam2Config.from_env(**args.sam2)  # a bad value (send: "foo", timeout 0) fails at deploy, not per request
    return FaceMaskSam2Ingress.bind(args.sam2)
