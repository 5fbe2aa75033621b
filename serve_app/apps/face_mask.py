"""Application `face_mask`: POST /v1/face-mask (cartoon/anime face mask).

Graph: FaceMaskIngress -> LBPDetector, SegFormerParser (each its own autoscaled
deployment; resources and batch sizes live in serve_config.yaml).
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into FaceMaskArgs.

import asyncio

from fastapi import File, Form, Request, UploadFile
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.lbp_detector import LBPDetector, LBPDetectorConfig
from deployments.segformer_parser import SegFormerParser, SegFormerParserConfig
from deployments.serving import model_deployment
from serve_app import __version__
from serve_app.apps.ingress import decoded_upload, model_call, within_request_timeout
from serve_app.assets import resolve_for_serving
from serve_app.http import create_app, request_id
from serve_app.mask_outputs import encode_outputs, parse_outputs
from serve_app.pipelines.face_mask import FaceMaskParams, face_mask
from serve_app.schemas import FaceMaskResponse, HealthResponse

app, endpoint_metrics = create_app("face_mask", "FaceGraph: cartoon face mask")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceMaskIngress:
    def __init__(self, detector: DeploymentHandle, parser: DeploymentHandle, models: dict[str, str]):
        self.detect = model_call(detector)
        self.parse = model_call(parser)
        self.models = models

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> HealthResponse:
        return HealthResponse(status="ok", version=__version__, models=self.models)

    @app.post("/", response_model=FaceMaskResponse, responses={400: {}, 413: {}, 415: {}, 422: {}, 503: {}, 504: {}})
    async def face_mask(
        self,
        request: Request,
        image: UploadFile = File(..., description="PNG, JPEG, WebP, BMP, TIFF or GIF (first frame)"),
        include_hair: bool = Form(False),
        use_crf: bool = Form(False),
        max_size: int = Form(448, ge=32, le=2048, description="longest side of each face ROI fed to the parser"),
        expand: float = Form(0.15, ge=0.0, le=2.0, description="ROI growth around each detected box"),
        threshold: float = Form(0.5, ge=0.0, le=1.0),
        outputs: str = Form("mask,rgba,overlay", description="which images to return: mask, rgba, overlay"),
    ) -> FaceMaskResponse:
        wanted = parse_outputs(outputs)
        rgb = await decoded_upload(request, image)
        params = FaceMaskParams(include_hair, use_crf, max_size, expand, threshold)
        result = await within_request_timeout(face_mask(rgb, params, self.detect, self.parse), "the face mask")
        encoded = await asyncio.to_thread(encode_outputs, rgb, result.mask, wanted)
        endpoint_metrics.faces(len(result.boxes))
        return FaceMaskResponse(request_id=request_id(request), width=result.width, height=result.height,
                                boxes=result.boxes, **encoded)


class FaceMaskArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`). Asset names resolve through
    assets/manifest.yaml (stand-ins only with FACEGRAPH_ALLOW_STAND_INS=1)."""

    detector_asset: str = "lbp-detector-cascade"
    parser_asset: str = "segformer-parser-face-parsing"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24


def build(args: FaceMaskArgs) -> serve.Application:
    detector_asset, detector_path = resolve_for_serving(args.detector_asset)
    parser_asset, parser_path = resolve_for_serving(args.parser_asset)
    detector_cfg = LBPDetectorConfig(str(detector_path), args.scale_factor, args.min_neighbors, args.min_size)
    return FaceMaskIngress.bind(
        model_deployment(LBPDetector, detector_cfg),
        model_deployment(SegFormerParser, SegFormerParserConfig(str(parser_path))),
        {"LBPDetector": detector_asset, "SegFormerParser": parser_asset},
    )
