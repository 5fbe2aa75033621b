"""Application `people` (route prefix /v1/people): the people gallery.

  POST   /v1/people                      enrol a person from images (201)
  GET    /v1/people?limit=&cursor=       list, oldest first
  GET    /v1/people/{person_id}          one person
  DELETE /v1/people/{person_id}          forget them: embeddings, crops, index entries (204)
  POST   /v1/people/{person_id}/faces    add faces from images
  POST   /v1/people/search               who is in these images
  GET    /v1/people/health, /ready, /openapi.json   open; every other route needs Authorization: Bearer <key>

Graph: PeopleIngress -> RetinaFace, ArcFace (as /extract-faces finds faces) ->
FaceGallery (the store and the in-memory search, deployments/face_gallery/). The key
is checked before anything else is read (serve_app/web/auth.py): a request without
it costs no parsing and no model work.
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into PeopleArgs.

import asyncio
import time
import uuid

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field
from ray import serve

from deployments.face_gallery.model import DeletePerson, GetPerson, ListPeople
from deployments.face_gallery.store import PersonRecord
from serve_app import display, errors
from serve_app.apps.images_json import image_loaders, max_body_bytes
from serve_app.apps.ingress import ModelCalls, add_health_routes, guarded
from serve_app.config.model_tier import NoCalibratedThreshold, calibrated_threshold
from serve_app.config.settings import settings
from serve_app.imaging import OverBudget
from serve_app.pipelines.people import (
    SPEC,
    SearchParams,
    add_person_faces,
    call_gallery,
    enrol_person,
    largest_faces,
    search_people,
)
from serve_app.web import auth, edge
from serve_app.web.http import create_app, request_id
from serve_app.web.people_schemas import (
    AddFacesRequest,
    EnrolRequest,
    EnrolResponse,
    PeopleListResponse,
    PersonMatch,
    PersonOut,
    PersonResponse,
    SearchedFace,
    SearchRequest,
    SearchResponse,
)
from serve_app.web.schemas import ImageError, ImageInput

# Open: liveness, readiness and the API's own description (the demo page builds its
# fields from it); it holds no person's data.
OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json"})
# The model tier can be redeployed with other weights: they are looked up again after this.
RECOGNISER_TTL_S = 60.0
ERRORS = {status: {} for status in (400, 401, 404, 408, 409, 413, 415, 422, 503)}


class RequireKey:
    """ASGI, outermost: every route but OPEN_PATHS (and CORS preflights) needs the
    Bearer key, checked before the body is read. The caller's key fingerprint goes on
    to the routes (request.state.caller) for the audit log."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        try:
            caller = await asyncio.to_thread(auth.authorize, header)  # the first call may read the key file
        except errors.ApiError as refused:
            incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
            self.metrics.request(refused.status)
            extra = [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()]
            return await edge.send_error(
                send, refused.status, refused.code, refused.message, incoming or uuid.uuid4().hex, extra, not incoming
            )
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: people", body_limit=max_body_bytes)
app.add_middleware(RequireKey, metrics=endpoint_metrics)
calls = ModelCalls(SPEC.models)
models = calls.calls()
add_health_routes(app, lambda: calls)


def person_out(record: PersonRecord) -> PersonOut:
    return PersonOut(
        person_id=record.person_id,
        name=record.name,
        metadata=record.metadata,
        faces=record.faces,
        created_at=record.created_at.isoformat(timespec="milliseconds"),
    )


def image_errors(failures) -> list[ImageError]:
    return [ImageError(image_index=f.image_index, error=f.code, message=f.message) for f in failures]


def enrol_response(rid: str, found, record) -> EnrolResponse:
    """The answer to an enrolment and to added faces: the person and what each image gave."""
    return EnrolResponse(
        request_id=rid,
        person_id=record.person_id,
        name=record.name,
        faces_enrolled=len(found.embeddings),
        faces=record.faces,
        image_errors=image_errors(found.failures),
    )


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
@serve.ingress(app)
class PeopleIngress:
    def __init__(self, args: "PeopleArgs"):
        self.max_concurrent_images = args.max_concurrent_images
        self.request_timeout_s = args.request_timeout_s
        self._recogniser: tuple[float, str, float | None] | None = None  # (when, weights, threshold)
        auth.expected_digest()  # the key read, or generated and its path logged, as the replica starts

    async def recogniser(self) -> tuple[str, float | None]:
        """(the weights ArcFace serves, their calibrated threshold or None)."""
        now = time.monotonic()
        if self._recogniser is None or now - self._recogniser[0] > RECOGNISER_TTL_S:
            handle = await calls.handle(SPEC.models["embed"])
            weights = (await handle.describe.remote())["weights"]
            try:
                threshold = await asyncio.to_thread(calibrated_threshold, weights)
            except NoCalibratedThreshold:  # enrolment needs none; a search without one is refused
                threshold = None
            self._recogniser = (now, weights, threshold)
        return self._recogniser[1], self._recogniser[2]

    async def _deadline(self, work):
        """The request's work under its deadline (408 past it, the work cancelled); an
        image over the request's pixel budget stops it with 413 over_budget."""
        timeout_s = self.request_timeout_s or settings().request_timeout_s
        try:
            return await guarded(
                work,
                timeout_s,
                errors.ApiError(408, "request_timeout", f"the request took longer than {timeout_s:g} s"),
            )
        except OverBudget as over:
            raise over.error from None

    async def _largest_faces(self, images: list[ImageInput], params):
        async with image_loaders(images) as loaders:
            return await largest_faces(
                loaders, params, models["detect"], models["embed"], max_concurrent_images=self.max_concurrent_images
            )

    @app.post("/", status_code=201, response_model=EnrolResponse, responses=ERRORS)
    async def enrol(self, request: Request, body: EnrolRequest) -> EnrolResponse:
        async def run():
            weights, _ = await self.recogniser()
            found = await self._largest_faces(body.images, body)
            record = await enrol_person(
                found, models["gallery"], weights, body.name, body.metadata, request.state.caller
            )
            return found, record

        found, record = await self._deadline(run())
        return enrol_response(request_id(request), found, record)

    @app.get("/", response_model=PeopleListResponse, responses=ERRORS)
    async def list_people(
        self,
        request: Request,
        limit: int = Query(20, ge=1, le=100, description="people per page"),
        cursor: str | None = Query(None, max_length=512, description="next_cursor of the previous page"),
    ) -> PeopleListResponse:
        page = await self._deadline(call_gallery(models["gallery"], ListPeople(limit, cursor)))
        return PeopleListResponse(
            request_id=request_id(request), people=[person_out(p) for p in page.people], next_cursor=page.next_cursor
        )

    @app.post("/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, request: Request, body: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        params = SearchParams(**body.model_dump(include=set(SearchParams.model_fields)))

        async def run():
            weights, calibrated = await self.recogniser()
            threshold = params.similarity_threshold if params.similarity_threshold is not None else calibrated
            if threshold is None:
                raise errors.invalid_parameter(
                    "similarity_threshold",
                    f"the recogniser's weights {weights} have no calibrated similarity threshold "
                    "in assets/manifest.yaml; give one",
                )
            async with image_loaders(body.images) as loaders:
                return await search_people(
                    loaders,
                    params,
                    models["detect"],
                    models["embed"],
                    models["gallery"],
                    weights,
                    threshold,
                    max_concurrent_images=self.max_concurrent_images,
                )

        result = await self._deadline(run())
        endpoint_metrics.faces(len(result.faces))
        return SearchResponse(
            request_id=request_id(request),
            faces=[
                SearchedFace(
                    image_index=f.image_index,
                    box=display.box(f.box),
                    score=display.score(f.score),
                    low_quality=f.low_quality,
                    matches=[
                        PersonMatch(person_id=m.person_id, name=m.name, similarity=display.score(m.similarity))
                        for m in f.matches
                    ],
                )
                for f in result.faces
            ],
            similarity_threshold=result.threshold,
            images_processed=result.images_processed,
            image_errors=image_errors(result.failures),
            processing_time_ms=round((time.perf_counter() - start) * 1000, 1),
        )

    @app.get("/{person_id}", response_model=PersonResponse, responses=ERRORS)
    async def get_person(self, request: Request, person_id: str) -> PersonResponse:
        record = await self._deadline(call_gallery(models["gallery"], GetPerson(person_id)))
        return PersonResponse(request_id=request_id(request), **person_out(record).model_dump())

    @app.delete("/{person_id}", status_code=204, responses=ERRORS)
    async def delete_person(self, request: Request, person_id: str) -> Response:
        await self._deadline(call_gallery(models["gallery"], DeletePerson(person_id, actor=request.state.caller)))
        return Response(status_code=204)

    @app.post("/{person_id}/faces", response_model=EnrolResponse, responses=ERRORS)
    async def add_faces(self, request: Request, person_id: str, body: AddFacesRequest) -> EnrolResponse:
        async def run():
            await call_gallery(models["gallery"], GetPerson(person_id))  # 404 before any model work
            weights, _ = await self.recogniser()
            found = await self._largest_faces(body.images, body)
            record = await add_person_faces(found, models["gallery"], weights, person_id, request.state.caller)
            return found, record

        found, record = await self._deadline(run())
        return enrol_response(request_id(request), found, record)


class PeopleArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`). The gallery's store is FaceGallery's
    config in the `models` application."""

    max_concurrent_images: int = Field(8, ge=1, le=64, description="images of one request decoded and detected at once")
    request_timeout_s: float | None = Field(None, gt=0, description="default: REQUEST_TIMEOUT")


def build(args: PeopleArgs) -> serve.Application:
    return PeopleIngress.bind(args)
