"""Application `face_extract` (route prefix "/"): POST /extract-faces, GET /health,
GET /ready.

Graph: FaceExtractIngress -> RetinaFace, ArcFace (each its own autoscaled deployment;
resources and batch sizes live in serve_config.yaml). The ingress loads images (base64
or a safely fetched URL), decodes them with the foundation's limits, and runs the
pipeline glue with the two model handles. With `"match_people": true` (the Bearer key
of /v1/people required: serve_app/web/auth.py) each unique face is also looked up in
FaceGallery, the people gallery, and carries its best match as `person`.

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
import time
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import Request
from pydantic import BaseModel, Field
from ray import serve

from serve_app import display, errors
from serve_app.apps.demo import add_demo_routes
from serve_app.apps.images_json import image_loaders, max_body_bytes
from serve_app.apps.ingress import ModelCalls, add_health_routes, guarded
from serve_app.config.model_tier import NoCalibratedThreshold, calibrated_threshold
from serve_app.config.settings import settings
from serve_app.imaging import OverBudget, data_uri
from serve_app.pipelines.face_extract import SPEC, Extraction, FaceExtractParams, extract_faces
from serve_app.pipelines.people import match_faces
from serve_app.web import auth
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import (
    DuplicateFace,
    ExtractedFace,
    ExtractFacesRequest,
    ExtractFacesResponse,
    ImageError,
    PersonMatch,
)

app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: face extraction", body_limit=max_body_bytes)
calls = ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
add_health_routes(app, lambda: calls)
add_demo_routes(app)  # GET /: the demo page of every pipeline (serve_app/web/static)
# The people gallery, called only for `match_people`: not in /ready, since extraction works without it.
gallery = ModelCalls({"gallery": "FaceGallery"}).call("gallery")
# (unique faces' embeddings [U, D], eligible [U] bool) -> each one's best match or None
PeopleMatcher = Callable[[np.ndarray, np.ndarray], Awaitable[list]]


# The model tier can be redeployed with other weights: their threshold is looked up again after this.
THRESHOLD_TTL_S = 60.0


def build_response(result: Extraction, rid: str, start: float, people: list | None = None) -> ExtractFacesResponse:
    """`people`: the gallery's best match (or None) of each unique face, in `dedup.kept` order."""
    faces, dedup = result.faces, result.dedup
    merged: dict[int, list[int]] = {}
    for i, lead in enumerate(dedup.leader.tolist()):
        if lead != i:
            merged.setdefault(lead, []).append(i)
    out = []
    for u, k in enumerate(dedup.kept.tolist()):
        f = faces[k]
        best = people[u] if people else None
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
                person=None
                if best is None
                else PersonMatch(person_id=best.person_id, name=best.name, similarity=display.score(best.similarity)),
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
    match_people: PeopleMatcher | None = None,
) -> ExtractFacesResponse:
    """/extract-faces' work without HTTP (the ingress, the tests and the benchmark call
    it): image loaders in, the response out. `params` resolved (`with_threshold`);
    `match_people` given: each unique face looked up in the people gallery."""
    start = time.perf_counter()
    result = await extract_faces(loaders, params, **models, max_concurrent_images=max_concurrent_images)
    people = None
    kept = result.dedup.kept
    if match_people is not None and len(kept):
        embeddings = np.stack([result.faces[k].embedding for k in kept.tolist()])
        people = await match_people(embeddings, ~np.asarray(result.low_quality, bool)[kept])
    return await asyncio.to_thread(build_response, result, rid, start, people)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class FaceExtractIngress:
    def __init__(self, args: "FaceExtractArgs"):
        self.max_concurrent_images = args.max_concurrent_images
        self.request_timeout_s = args.request_timeout_s
        self._recogniser: tuple[float, str, float | None] | None = None  # (when looked up, weights, threshold)

    async def recogniser(self) -> tuple[str, float | None]:
        """(the weights the ArcFace deployment serves, their calibrated threshold or None)."""
        now = time.monotonic()
        if self._recogniser is None or now - self._recogniser[0] > THRESHOLD_TTL_S:
            handle = await calls.handle(SPEC.models["embed"])
            weights = (await handle.describe.remote())["weights"]
            try:
                threshold = await asyncio.to_thread(calibrated_threshold, weights)
            except NoCalibratedThreshold:
                threshold = None
            self._recogniser = (now, weights, threshold)
        return self._recogniser[1], self._recogniser[2]

    async def recogniser_threshold(self) -> float:
        """The calibrated threshold of the weights the ArcFace deployment serves."""
        weights, threshold = await self.recogniser()
        if threshold is None:
            raise errors.invalid_parameter(
                "similarity_threshold",
                f"the recogniser's weights {weights} have no calibrated similarity threshold "
                "in assets/manifest.yaml; give one",
            )
        return threshold

    @app.post(
        "/extract-faces",
        response_model=ExtractFacesResponse,
        responses={400: {}, 401: {}, 408: {}, 409: {}, 413: {}, 415: {}, 422: {}, 500: {}, 503: {}},
    )
    async def extract_faces(self, request: Request, body: ExtractFacesRequest) -> ExtractFacesResponse:
        if body.match_people:
            # Biometric lookups need the key /v1/people needs (the first check may read the key file).
            await asyncio.to_thread(auth.authorize, request.headers.get("authorization"))
        params = FaceExtractParams(**body.model_dump(include=set(FaceExtractParams.model_fields)))
        timeout_s = self.request_timeout_s or settings().request_timeout_s

        async def run() -> ExtractFacesResponse:
            async with image_loaders(body.images) as loaders:
                # The served recogniser's calibrated value, asked for only when the client gave none.
                served = await self.recogniser_threshold() if params.similarity_threshold is None else None
                resolved = params.with_threshold(lambda: served)
                matcher = None
                if body.match_people:
                    weights, _ = await self.recogniser()

                    # A person matches at the threshold that merges two faces into one person.
                    async def matcher(embeddings, eligible):
                        return await match_faces(embeddings, eligible, gallery, weights, resolved.similarity_threshold)

                return await handle(loaders, resolved, models, request_id(request), self.max_concurrent_images, matcher)

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
