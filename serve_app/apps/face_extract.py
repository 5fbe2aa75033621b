"""Application `face_extract` (route prefix "/"): POST /extract-faces, GET /health,
GET /ready.

Graph: FaceExtractIngress -> RetinaFace, ArcFace (each its own autoscaled deployment;
resources and batch sizes live in serve_config.yaml). The ingress loads images (base64
or a safely fetched URL), decodes them with the foundation's limits, and runs the
pipeline glue with the two model handles.
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into FaceExtractArgs.

import asyncio
import contextlib
import dataclasses
import time
from typing import Optional

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.arcface import ArcFace, ArcFaceConfig
from deployments.retinaface import RetinaFace, RetinaFaceConfig
from deployments.serving import model_deployment
from serve_app import __version__, errors
from serve_app.apps.ingress import guarded, model_call
from serve_app.assets import resolve_for_serving
from serve_app.http import create_app, request_id
from serve_app.imaging import data_uri, decode_base64, decode_image
from serve_app.pipelines.face_extract import Extraction, ExtractParams, extract_faces
from serve_app.schemas import (DuplicateFace, ExtractedFace, ExtractFacesRequest, ExtractFacesResponse,
                               HealthResponse, ImageError, ImageInput)
from serve_app.settings import settings
from serve_app.url_fetch import UrlFetcher

READY_TIMEOUT_S = 5.0

app, endpoint_metrics = create_app("face_extract", "FaceGraph: face extraction")
# Read in each replica when it imports this module; no origins = no CORS headers at all.
app.add_middleware(
    CORSMiddleware, allow_origins=list(settings().allowed_origins), allow_methods=["GET", "POST"],
    allow_headers=["Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID"],
)


def max_body_bytes() -> int:
    """The largest body a valid request can have: every image at the byte limit, in
    base64, plus room for the JSON around them."""
    s = settings()
    return s.max_images_per_request * (s.max_image_bytes * 4 // 3 + 64) + 1024 * 1024


def check_images(images: list[ImageInput]) -> None:
    limit = settings().max_images_per_request
    if not images:
        raise errors.bad_input("images: give at least one image", code="no_images")
    if len(images) > limit:
        raise errors.bad_input(f"images: {len(images)} given; at most {limit} per request", code="too_many_images")
    for i, entry in enumerate(images):
        if (entry.image_url is None) == (entry.image_base64 is None):
            raise errors.bad_input(f"images[{i}]: give exactly one of image_url or image_base64",
                                   code="invalid_image_source")


def base64_loader(text: str):
    async def load():
        # A base64 string this long cannot decode to an image under the byte limit.
        limit = settings().max_image_bytes
        if len(text) > limit * 4 // 3 + 1024:
            raise errors.too_large(f"the image is over the limit of {limit} bytes")
        return await asyncio.to_thread(lambda: decode_image(decode_base64(text)))
    return load


def url_loader(url: str, fetcher: UrlFetcher):
    async def load():
        data = await fetcher.fetch(url)
        return await asyncio.to_thread(decode_image, data)
    return load


def build_response(result: Extraction, rid: str, start: float) -> ExtractFacesResponse:
    faces, dedup = result.faces, result.dedup
    merged: dict[int, list[int]] = {}
    for i, lead in enumerate(dedup.leader.tolist()):
        if lead != i:
            merged.setdefault(lead, []).append(i)
    out = []
    for k in dedup.kept.tolist():
        f = faces[k]
        dups = [faces[j] for j in merged.get(k, [])]
        out.append(ExtractedFace(
            face_id=f.face_id, image_index=f.image_index, bbox=[round(float(v), 2) for v in f.bbox],
            landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in f.landmarks],
            confidence=round(f.score, 4), embedding=f.embedding.tolist(),
            headshot_base64=data_uri(f.headshot_jpeg, "image/jpeg"),
            duplicate_ids=[d.face_id for d in dups],
            duplicates=[DuplicateFace(face_id=d.face_id, image_index=d.image_index,
                                      bbox=[round(float(v), 2) for v in d.bbox], confidence=round(d.score, 4),
                                      similarity=round(float(dedup.similarity[j]), 4))
                        for j, d in zip(merged.get(k, []), dups)],
        ))
    return ExtractFacesResponse(
        request_id=rid, faces=out, total_faces_detected=len(faces), unique_faces=len(out),
        images_processed=result.images_processed,
        image_errors=[ImageError(image_index=e.image_index, error=e.code, message=e.message) for e in result.failures],
        processing_time_ms=round((time.perf_counter() - start) * 1000, 1),
    )


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceExtractIngress:
    def __init__(self, detector: DeploymentHandle, recogniser: DeploymentHandle, models: dict[str, str],
                 params: ExtractParams, request_timeout_s: Optional[float] = None):
        self.handles = {"RetinaFace": detector, "ArcFace": recogniser}
        self.detect = model_call(detector)
        self.embed = model_call(recogniser)
        self.models = models
        self.params = params
        self.request_timeout_s = request_timeout_s or settings().request_timeout_s

    @app.get("/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        return HealthResponse(status="ok", version=__version__, models=self.models)

    @app.get("/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def ready(self):
        async def check(handle: DeploymentHandle) -> str:
            try:
                await asyncio.wait_for(handle.batch_stats.remote(), READY_TIMEOUT_S)
                return "ok"
            except asyncio.TimeoutError:
                return f"no answer within {READY_TIMEOUT_S:g} s"
            except Exception as exc:  # not deployed yet, replica dead, ...
                return f"unavailable: {type(exc).__name__}"

        results = await asyncio.gather(*(check(h) for h in self.handles.values()))
        checks = dict(zip(self.handles, results))
        ok = all(r == "ok" for r in results)
        body = HealthResponse(status="ok" if ok else "not_ready", version=__version__, models=self.models,
                              checks=checks)
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    @app.post("/extract-faces", response_model=ExtractFacesResponse,
              responses={400: {}, 408: {}, 413: {}, 422: {}, 500: {}, 503: {}},
              # Counted while the body streams in, before FastAPI parses the JSON.
              max_body_size=max_body_bytes())
    async def extract_faces(self, request: Request, body: ExtractFacesRequest) -> ExtractFacesResponse:
        start = time.perf_counter()
        check_images(body.images)
        params = dataclasses.replace(self.params, similarity_threshold=body.similarity_threshold,
                                     min_face_size=body.min_face_size)
        needs_fetch = any(entry.image_url is not None for entry in body.images)

        async def run() -> Extraction:
            async with (UrlFetcher() if needs_fetch else contextlib.nullcontext()) as fetcher:
                loaders = [base64_loader(e.image_base64) if e.image_base64 is not None
                           else url_loader(e.image_url, fetcher) for e in body.images]
                return await extract_faces(loaders, params, self.detect, self.embed)

        # The deadline covers fetching, decoding and every model call; over it the work
        # is cancelled (fetches closed, queued model calls withdrawn) and the client gets 408.
        result = await guarded(
            run(), self.request_timeout_s,
            errors.ApiError(408, "request_timeout", f"the request took longer than {self.request_timeout_s:g} s"),
        )
        response = await asyncio.to_thread(build_response, result, request_id(request), start)
        endpoint_metrics.faces(response.unique_faces)
        return response


class FaceExtractArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`). Asset names resolve through
    assets/manifest.yaml (stand-ins only with FACEGRAPH_ALLOW_STAND_INS=1)."""

    detector_asset: str = "retinaface-det-10g"
    recogniser_asset: str = "arcface-w600k-r50"
    det_size: int = Field(640, ge=32, le=2048, description="detector letterbox side, a multiple of 32")
    det_thresh: float = Field(0.5, ge=0.0, le=1.0)
    nms_thresh: float = Field(0.4, ge=0.0, le=1.0)
    max_concurrent_images: int = Field(8, ge=1, description="images of one request decoded and detected at once")
    request_timeout_s: Optional[float] = Field(None, gt=0, description="default: REQUEST_TIMEOUT")

    @field_validator("det_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError("det_size must be a multiple of 32")
        return v


def build(args: FaceExtractArgs) -> serve.Application:
    detector_asset, detector_path = resolve_for_serving(args.detector_asset)
    recogniser_asset, recogniser_path = resolve_for_serving(args.recogniser_asset)
    detector_cfg = RetinaFaceConfig(str(detector_path), args.det_size, args.det_thresh, args.nms_thresh)
    params = ExtractParams(det_size=args.det_size, max_concurrent_images=args.max_concurrent_images)
    return FaceExtractIngress.bind(
        model_deployment(RetinaFace, detector_cfg),
        model_deployment(ArcFace, ArcFaceConfig(str(recogniser_path))),
        {"RetinaFace": detector_asset, "ArcFace": recogniser_asset},
        params,
        args.request_timeout_s,
    )
