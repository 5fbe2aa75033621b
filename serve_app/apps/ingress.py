"""What every ingress shares around its pipeline: calling the model tier by name,
the /health and /ready routes, running blocking work off the event loop, and turning
failures of model calls into the shared error shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model
from ray import exceptions as ray_exceptions
from ray.serve import exceptions as serve_exceptions

from serve_app import __version__, errors
from serve_app.config.model_tier import MODEL_APP
from serve_app.config.settings import settings
from serve_app.config.spec import Params, form_model, from_form
from serve_app.imaging import decode_image
from serve_app.web.http import read_upload
from serve_app.web.schemas import HealthResponse

log = logging.getLogger("facegraph.ingress")
T = TypeVar("T")
READY_TIMEOUT_S = 5.0
# A model replica that dies (killed, out of memory, its node lost) fails the calls it
# holds; Serve's router re-routes only calls no replica has accepted yet. Model calls
# are pure functions of their item, so such a call is sent again (to another replica,
# or the one Serve starts in its place), at most this many times: a poison item can
# take down no more than 1 + REPLICA_LOST_RETRIES replicas.
REPLICA_LOST = (ray_exceptions.RayActorError, serve_exceptions.ReplicaUnavailableError)
REPLICA_LOST_RETRIES = 2
REPLICA_LOST_BACKOFF_S = 0.5

# The error statuses a multipart mask endpoint documents (the shared error shape).
MASK_ERRORS = {status: {} for status in (400, 408, 413, 415, 422, 503, 504)}
# The multipart image field every image endpoint shares.
ImageUpload = Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP, TIFF or GIF (first frame)")]


def upload_form(params: type[Params], outputs: tuple[str, ...], default: str):
    """An image endpoint's form fields as one annotated type: the pipeline's parameters
    (one model, serve_app/config/spec.py) plus `outputs`, which of `outputs` to encode."""
    model = create_model(
        params.__name__ + "Form",
        __base__=form_model(params),
        outputs=(
            str,
            Field(
                default,
                description=f"which to return, comma-separated: {', '.join(outputs)}; the others come back "
                "null and are not encoded",
            ),
        ),
    )
    return Annotated[model, Form()]


def parse_outputs(raw: str, allowed) -> frozenset[str]:
    """The `outputs` form field -> the set asked for, or 422 naming the choices."""
    wanted = frozenset(p.strip() for p in raw.split(",") if p.strip())
    if not wanted or wanted - set(allowed):
        raise errors.invalid_parameter("outputs", f"a comma-separated subset of {', '.join(allowed)}")
    return wanted


class ModelCalls:
    """The model-tier deployments one ingress calls, by the pipeline's keys.

    Handles are looked up on first use, not in the constructor: the `models`
    application may come up after this one (serve_config.yaml deploys apps together),
    and a call before it exists is a 503, not a crashed replica."""

    def __init__(self, models: dict[str, str]):
        self.models = dict(models)  # pipeline key -> model name
        self._handles: dict[str, Any] = {}

    async def handle(self, name: str):
        if name not in self._handles:
            from ray import serve

            try:
                self._handles[name] = await asyncio.to_thread(serve.get_deployment_handle, name, MODEL_APP)
            except Exception as exc:  # the model tier is not deployed (yet)
                raise errors.not_ready(
                    f"model {name} is not deployed in the {MODEL_APP!r} application: {type(exc).__name__}"
                ) from None
        return self._handles[name]

    def call(self, key: str) -> Callable[[Any], Awaitable[Any]]:
        """A model as the awaitable the pipeline glue takes. If the awaiting task is
        cancelled (a request deadline, a failed sibling call), the Serve request is
        cancelled too, so the model replica drops it instead of computing it for nobody.
        A call lost with its replica is sent again (REPLICA_LOST_RETRIES)."""
        name = self.models[key]

        async def call(item: Any) -> Any:
            for attempt in range(REPLICA_LOST_RETRIES + 1):
                pending = (await self.handle(name)).remote(item)
                try:
                    return await pending
                except asyncio.CancelledError:
                    pending.cancel()
                    raise
                except REPLICA_LOST as exc:
                    if attempt == REPLICA_LOST_RETRIES:
                        raise
                    log.warning("model %s: replica lost (%s); sending the call again", name, type(exc).__name__)
                    await asyncio.sleep(REPLICA_LOST_BACKOFF_S * (attempt + 1))

        return call

    def calls(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {key: self.call(key) for key in self.models}

    async def describe(self) -> dict[str, dict | str]:
        """{model name: its describe() (weights, device) or the problem}, each within
        READY_TIMEOUT_S."""

        async def one(name: str):
            try:
                handle = await self.handle(name)
                return await asyncio.wait_for(handle.describe.remote(), READY_TIMEOUT_S)
            except TimeoutError:
                return f"no answer within {READY_TIMEOUT_S:g} s"
            except errors.ApiError as exc:
                return exc.message
            except Exception as exc:  # replica dead, deployment unhealthy, ...
                return f"unavailable: {type(exc).__name__}"

        names = sorted(set(self.models.values()))
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names))))


def add_health_routes(
    app: FastAPI, calls: Callable[[], ModelCalls], services: Callable[[], dict[str, str]] = dict
) -> None:
    """GET /health (the app is up) and GET /ready (every model it calls answers; 503
    until then), the same two routes on every pipeline app. `services` adds the state
    of anything else the app calls (the SAM2 service) to both."""

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        models = {name: f"served by the {MODEL_APP} application" for name in calls().models.values()}
        return HealthResponse(status="ok", version=__version__, models={**models, **services()})

    @app.get("/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def ready():
        described = await calls().describe()
        ok = all(isinstance(d, dict) for d in described.values())
        body = HealthResponse(
            status="ok" if ok else "not_ready",
            version=__version__,
            models={
                **{n: d["weights"] if isinstance(d, dict) else "unknown" for n, d in described.items()},
                **services(),
            },
            checks={n: "ok" if isinstance(d, dict) else d for n, d in described.items()},
        )
        return body if ok else JSONResponse(body.model_dump(), status_code=503)


async def guarded(work: Awaitable[T], timeout_s: float, timeout_error: errors.ApiError) -> T:
    """Await pipeline work under a deadline, mapping what can go wrong downstream:
    over the deadline -> `timeout_error` (the work is cancelled); a model deployment's
    queue full -> 503 overloaded with Retry-After (max_queued_requests in
    serve_config.yaml: refused at once, not left to time out); a model deployment not
    up -> 503 not_ready; a model failing on an item -> 500 with the shape."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except errors.ApiError:
        raise
    except TimeoutError:
        raise timeout_error from None
    except serve_exceptions.BackPressureError as exc:
        raise errors.overloaded("the server is at capacity; retry later", exc.retry_after_s) from None
    except (serve_exceptions.DeploymentUnavailableError, *REPLICA_LOST) as exc:
        raise errors.not_ready(f"a model deployment is not available: {type(exc).__name__}") from None
    except ray_exceptions.RayTaskError as exc:
        log.error("model call failed: %s", exc)
        raise errors.ApiError(500, "model_error", "a model failed on this request") from None


async def decoded_upload(upload: UploadFile) -> np.ndarray:
    """A multipart image upload -> uint8 RGB, under the byte and pixel limits (the body
    itself was held to the upload limit as it arrived: serve_app/web/http.py RequestGuard);
    the decode runs in a worker thread so the ingress keeps serving other requests."""
    data = await read_upload(upload)
    return await asyncio.to_thread(decode_image, data)


async def within_request_timeout(work: Awaitable[T], what: str) -> T:
    """`guarded` with REQUEST_TIMEOUT, answering 504 upstream_timeout past it."""
    limit = settings().request_timeout_s
    return await guarded(work, limit, errors.upstream_timeout(f"{what} took longer than {limit:g} s"))


async def masked(rgb: np.ndarray, result_of: Awaitable[T], wanted: frozenset[str]) -> tuple[T, dict[str, str | None]]:
    """The mask endpoints' shared end: the pipeline's result, then the segmentation
    images the client asked for, encoded off the event loop. -> (result, encoded)."""
    from serve_app.imaging import encode_outputs

    result = await result_of
    return result, await asyncio.to_thread(encode_outputs, rgb, result.mask, wanted)


async def mask_request(
    image: UploadFile,
    form: BaseModel,
    params: type[Params],
    handle: Callable[[np.ndarray, Params, frozenset], Awaitable[T]],
) -> T:
    """The multipart mask endpoints' common path: the outputs asked for, the upload
    decoded under the limits, then the endpoint's handler with the form's parameters
    under REQUEST_TIMEOUT (504 past it)."""
    from serve_app.imaging import OUTPUT_FIELDS

    wanted = parse_outputs(form.outputs, OUTPUT_FIELDS)
    rgb = await decoded_upload(image)
    return await within_request_timeout(handle(rgb, from_form(params, form), wanted), "the face mask")
