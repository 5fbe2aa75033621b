"""Application `face_extract` (route prefix "/"): POST /extract-faces, GET /health,
GET /ready.

Graph: FaceExtractIngress -> RetinaFace, ArcFace (each its own autoscaled deployment;
resources and batch sizes live in serve_config.yaml). The ingress loads images (base64
or a safely fetched URL), decodes them with the foundation's limits, and runs the
pipeline glue with the two model handles.

The default similarity threshold belongs to the recogniser's weights: ArcFace's
describe() names the weights it serves (the manifest asset, stand-ins included) and the
manifest entry of those weights holds their calibrated threshold. The ingress looks it
up there rather than ArcFace carrying it in its config, so the one calibrated number
lives in one place, next to the weights it was measured on, for the server and the
batch job alike.
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into FaceExtractArgs.

import asyncio
import contextlib
import time

from fastapi import Request
from pydantic import BaseModel, Field
from ray import serve

from serve_app import display, errors
from serve_app.apps.demo import add_demo_routes
from serve_app.apps.ingress import ModelCalls, add_health_routes, guarded
from serve_app.config.model_tier import NoCalibratedThreshold, calibrated_threshold
from serve_app.config.settings import settings
from serve_app.imaging import OverBudget, PixelBudget, base64_length, data_uri, decode_base64, decode_image
from serve_app.pipelines.face_extract import SPEC, Extraction, FaceExtractParams, extract_faces
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import (
    DuplicateFace,
    ExtractedFace,
    ExtractFacesRequest,
    ExtractFacesResponse,
    ImageError,
    ImageInput,
)
from serve_app.web.url_fetch import UrlFetcher


def max_body_bytes() -> int:
    """The largest body a valid request can have: every image at the byte limit, in
    base64, plus room for the JSON around them; never over MAX_REQUEST_BYTES (counted
    while the body streams in, before FastAPI parses the JSON: serve_app/web/http.py)."""
    s = settings()
    return min(s.max_request_bytes, s.max_images_per_request * (s.max_image_bytes * 4 // 3 + 64) + 1024 * 1024)


app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: face extraction", body_limit=max_body_bytes)
calls = ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
add_health_routes(app, lambda: calls)
add_demo_routes(app)  # GET /: the demo page of every pipeline (serve_app/web/static)


def check_images(images: list[ImageInput]) -> None:
    limit = settings().max_images_per_request
    if not images:
        raise errors.bad_input("images: give at least one image", code="no_images")
    if len(images) > limit:
        raise errors.bad_input(f"images: {len(images)} given; at most {limit} per request", code="too_many_images")
    for i, entry in enumerate(images):
        if (entry.image_url is None) == (entry.image_base64 is None):
            raise errors.bad_input(
                f"images[{i}]: give exactly one of image_url or image_base64", code="invalid_image_source"
            )


def base64_loader(text: str, budget: PixelBudget):
    async def load():
        # A base64 string this long cannot decode to an image under the byte limit.
        limit = settings().max_image_bytes
        if len(text) > limit * 4 // 3 + 1024 and base64_length(text) > limit * 4 // 3 + 1024:
            raise errors.too_large(f"the image is over the limit of {limit} bytes")
        return await asyncio.to_thread(lambda: decode_image(decode_base64(text), budget=budget))

    return load


def url_loader(url: str, fetcher: UrlFetcher, budget: PixelBudget):
    async def load():
        data = await fetcher.fetch(url)
        return await asyncio.to_thread(decode_image, data, budget=budget)

    return load


# The model tier can be redeployed with other weights: their threshold is looked up again after this.
THRESHOLD_TTL_S = 60.0


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
        out.append(
            ExtractedFace(
                face_id=f.face_id,
                image_index=f.image_index,
                bbox=display.box(f.bbox),
                landmarks=display.points(f.landmarks),
                confidence=display.score(f.score),
                embedding=f.embedding.tolist(),
                headshot_base64=data_uri(f.headshot_jpeg, "image/jpeg"),
                low_quality=bool(result.low_quality[k]),
                duplicate_ids=[d.face_id for d in dups],
                duplicates=[
                    DuplicateFace(
                        face_id=d.face_id,
                        image_index=d.image_index,
                        bbox=display.box(d.bbox),
                        confidence=display.score(d.score),
                        similarity=display.score(dedup.similarity[j]),
                    )
                    for j, d in zip(merged.get(k, []), dups)
                ],
            )
        )
    return ExtractFacesResponse(
        request_id=rid,
        faces=out,
        total_faces_detected=len(faces),
        unique_faces=len(out),
        low_quality_faces=int(result.low_quality.sum()),
        similarity_threshold=result.threshold,
        images_processed=result.images_processed,
        image_errors=[ImageError(image_index=e.image_index, error=e.code, message=e.message) for e in result.failures],
        processing_time_ms=round((time.perf_counter() - start) * 1000, 1),
    )


async def handle(
    loaders: list,
    params: FaceExtractParams,
    models: dict,
    rid: str,
    max_concurrent_images: int = 8,
) -> ExtractFacesResponse:
    """/extract-faces' work without HTTP (the ingress, the tests and the benchmark call
    it): image loaders in, the response out. `params` resolved (`with_threshold`)."""
    start = time.perf_counter()
    result = await extract_faces(loaders, params, **models, max_concurrent_images=max_concurrent_images)
    return await asyncio.to_thread(build_response, result, rid, start)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceExtractIngress:
    def __init__(self, args: "FaceExtractArgs"):
        self.max_concurrent_images = args.max_concurrent_images
        self.request_timeout_s = args.request_timeout_s
        self._threshold: tuple[float, float] | None = None  # (when looked up, the recogniser's threshold)

    async def recogniser_threshold(self) -> float:
        """The calibrated threshold of the weights the ArcFace deployment serves."""
        now = time.monotonic()
        if self._threshold is None or now - self._threshold[0] > THRESHOLD_TTL_S:
            handle = await calls.handle(SPEC.models["embed"])
            weights = (await handle.describe.remote())["weights"]
            try:
                threshold = await asyncio.to_thread(calibrated_threshold, weights)
            except NoCalibratedThreshold as exc:
                raise errors.invalid_parameter("similarity_threshold", f"{exc}; give one") from None
            self._threshold = (now, threshold)
        return self._threshold[1]

    @app.post(
        "/extract-faces",
        response_model=ExtractFacesResponse,
        responses={400: {}, 408: {}, 413: {}, 415: {}, 422: {}, 500: {}, 503: {}},
    )
    async def extract_faces(self, request: Request, body: ExtractFacesRequest) -> ExtractFacesResponse:
        check_images(body.images)
        params = FaceExtractParams(**body.model_dump(include=set(FaceExtractParams.model_fields)))
        needs_fetch = any(entry.image_url is not None for entry in body.images)
        timeout_s = self.request_timeout_s or settings().request_timeout_s
        # The request's work budget: its images' decoded pixels together (each charged
        # from its header, before decoding); over it the whole request is refused.
        budget = PixelBudget(settings().max_request_pixels)

        async def run() -> ExtractFacesResponse:
            async with UrlFetcher() if needs_fetch else contextlib.nullcontext() as fetcher:
                loaders = [
                    base64_loader(e.image_base64, budget)
                    if e.image_base64 is not None
                    else url_loader(e.image_url, fetcher, budget)
                    for e in body.images
                ]
                # The served recogniser's calibrated value, asked for only when the client gave none.
                served = await self.recogniser_threshold() if params.similarity_threshold is None else None
                resolved = params.with_threshold(lambda: served)
                return await handle(loaders, resolved, models, request_id(request), self.max_concurrent_images)

        # The deadline covers fetching, decoding and every model call; over it the work
        # is cancelled (fetches closed, queued model calls withdrawn) and the client gets
        # 504 upstream_timeout, as every other endpoint does.
        try:
            response = await guarded(
                run(), timeout_s, errors.upstream_timeout(f"the request took longer than {timeout_s:g} s")
            )
        except OverBudget as over:  # the other images' work was cancelled with it
            raise over.error from None
        endpoint_metrics.faces(response.unique_faces)
        return response


class FaceExtractArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`). The detector's and recogniser's
    weights and thresholds are configured in the `models` application."""

    max_concurrent_images: int = Field(8, ge=1, le=64, description="images of one request decoded and detected at once")
    request_timeout_s: float | None = Field(None, gt=0, description="default: REQUEST_TIMEOUT")


def build(args: FaceExtractArgs) -> serve.Application:
    return FaceExtractIngress.bind(args)
