"""Application `face_mask`: POST /v1/face-mask (cartoon/anime face mask), GET
/v1/face-mask/health and /ready.

Graph: FaceMaskIngress -> LBPDetector, SegFormerParser (model-tier deployments, shared
with every other endpoint that uses them; see serve_app/apps/models.py).
"""

# No `from __future__ import annotations` here: FastAPI and Serve read the real
# annotations (the form model, the builder's args).

import numpy as np
from fastapi import Request
from pydantic import BaseModel
from ray import serve

from serve_app import display
from serve_app.apps import ingress
from serve_app.imaging import OUTPUT_FIELDS
from serve_app.pipelines.face_mask import SPEC, FaceMaskParams, face_mask
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import FaceMaskResponse

MaskForm = ingress.upload_form(FaceMaskParams, tuple(OUTPUT_FIELDS), "mask,rgba,overlay")
app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: cartoon face mask")
calls = ingress.ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
ingress.add_health_routes(app, lambda: calls)


async def handle(
    rgb: np.ndarray, params: FaceMaskParams, wanted: frozenset[str], models: dict, rid: str
) -> FaceMaskResponse:
    """POST /v1/face-mask's work without HTTP (the ingress, the tests and the benchmark
    call it): a decoded image in, the response out."""
    result, encoded = await ingress.masked(rgb, face_mask(rgb, params, **models), wanted)
    endpoint_metrics.faces(len(result.boxes))
    return FaceMaskResponse(
        request_id=rid, width=result.width, height=result.height, boxes=display.boxes(result.boxes), **encoded
    )


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceMaskIngress:
    @app.post("/", response_model=FaceMaskResponse, responses=ingress.MASK_ERRORS)
    async def face_mask(self, request: Request, form: MaskForm, image: ingress.ImageUpload) -> FaceMaskResponse:
        rid = request_id(request)
        return await ingress.mask_request(
            image, form, FaceMaskParams, lambda rgb, params, wanted: handle(rgb, params, wanted, models, rid)
        )


class FaceMaskArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`): none yet. Models and their weights
    are configured in the `models` application."""


def build(args: FaceMaskArgs) -> serve.Application:
    return FaceMaskIngress.bind()
