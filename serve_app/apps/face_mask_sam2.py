"""Application `face_mask_sam2`: POST /v1/face-mask-sam2 (real and western-cartoon faces).

Graph: FaceMaskSam2Ingress -> FaceMesh (its own autoscaled deployment), and from the
ingress straight to the operator's SAM2 service over HTTP (serve_app/sam2_client.py).
SAM2 unset, down, slow or wrong: that face gets the filled FaceMesh oval instead, and
the response says so; SAM2 trouble never fails the request.
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into FaceMaskSam2Args.

import asyncio
from importlib import metadata
from typing import Optional

from fastapi import File, Form, Request, UploadFile
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.facemesh import FaceMesh, FaceMeshConfig
from deployments.serving import model_deployment
from serve_app import __version__
from serve_app.apps.ingress import decoded_upload, model_call, within_request_timeout
from serve_app.http import create_app, request_id
from serve_app.mask_outputs import encode_outputs, parse_outputs
from serve_app.pipelines.face_mask_sam2 import FaceMaskSam2Params, face_mask_sam2
from serve_app.sam2_client import Sam2Client, Sam2Config
from serve_app.schemas import FaceMaskSam2Response, FaceMaskSource, HealthResponse

app, endpoint_metrics = create_app("face_mask_sam2", "FaceGraph: face mask with FaceMesh + SAM2")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceMaskSam2Ingress:
    def __init__(self, mesh: DeploymentHandle, sam2_overrides: dict, models: dict[str, str]):
        self.mesh = model_call(mesh)
        # Built here, in the replica: SAM2_* come from this worker's environment, with
        # the builder's explicit args on top. The API key only ever comes from the env.
        self.sam2 = Sam2Client(Sam2Config.from_settings(**sam2_overrides))
        self.models = dict(models, SAM2="configured" if self.sam2.configured else "not configured (polygon fallback)")

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> HealthResponse:
        return HealthResponse(status="ok", version=__version__, models=self.models)

    @app.post("/", response_model=FaceMaskSam2Response, responses={400: {}, 413: {}, 415: {}, 422: {}, 503: {}, 504: {}})
    async def face_mask_sam2(
        self,
        request: Request,
        image: UploadFile = File(..., description="PNG, JPEG, WebP, BMP, TIFF or GIF (first frame)"),
        multimask: bool = Form(True, description="ask SAM2 for several candidate masks and keep the best"),
        expand: float = Form(0.15, ge=0.0, le=2.0, description="growth of the SAM2 box prompt around each face oval"),
        pos_points: int = Form(16, ge=0, le=64, description="positive SAM2 point prompts inside each face oval"),
        outputs: str = Form("mask,rgba,overlay", description="which images to return: mask, rgba, overlay"),
    ) -> FaceMaskSam2Response:
        wanted = parse_outputs(outputs)
        rgb = await decoded_upload(request, image)
        params = FaceMaskSam2Params(multimask, expand, pos_points)
        # SAM2 is bounded by its own timeout inside; this deadline covers the mesh.
        result = await within_request_timeout(face_mask_sam2(rgb, params, self.mesh, self.sam2), "the face mask")
        encoded = await asyncio.to_thread(encode_outputs, rgb, result.mask, wanted)
        endpoint_metrics.faces(len(result.boxes))
        return FaceMaskSam2Response(
            request_id=request_id(request), width=result.width, height=result.height, boxes=result.boxes,
            faces=[FaceMaskSource(box=f.box, prompt_box=f.prompt_box, mask_source=f.mask_source,
                                  fallback_reason=f.fallback_reason) for f in result.faces],
            **encoded)


class FaceMaskSam2Args(BaseModel):
    """Builder arguments (serve_config.yaml `args`). Every sam2_* left unset (null)
    comes from the SAM2_* environment variable of the ingress replica; the API key
    comes from SAM2_API_KEY only, never from a config file."""

    max_num_faces: int = 5
    min_detection_confidence: float = 0.5
    find_small_faces: bool = True
    sam2_url: Optional[str] = None
    sam2_image_field: Optional[str] = None
    sam2_points_field: Optional[str] = None
    sam2_box_field: Optional[str] = None
    sam2_multimask_field: Optional[str] = None
    sam2_return_prob_field: Optional[str] = None
    sam2_timeout_s: Optional[float] = None
    sam2_retries: Optional[int] = None
    sam2_concurrency: Optional[int] = None
    sam2_send: Optional[str] = None
    # No SAM2_* variable for these: after `failures` unavailable answers in a row
    # (0: never), SAM2 is not called for `cooldown_s` and faces fall back at once.
    sam2_breaker_failures: Optional[int] = None
    sam2_breaker_cooldown_s: Optional[float] = None

    def sam2_overrides(self) -> dict:
        return {
            name[len("sam2_"):]: value
            for name, value in self.model_dump().items()
            if name.startswith("sam2_") and value is not None
        }


def build(args: FaceMaskSam2Args) -> serve.Application:
    overrides = args.sam2_overrides()
    Sam2Config(**overrides)  # a bad value (send: "foo", timeout 0) fails at deploy, not per request
    mesh_cfg = FaceMeshConfig(max_num_faces=args.max_num_faces,
                              min_detection_confidence=args.min_detection_confidence,
                              find_small_faces=args.find_small_faces)
    mediapipe = f"mediapipe {metadata.version('mediapipe')} face_mesh (bundled, refined 478 points)"
    return FaceMaskSam2Ingress.bind(model_deployment(FaceMesh, mesh_cfg), overrides, {"FaceMesh": mediapipe})
