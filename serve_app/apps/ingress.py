"""Helpers every ingress uses around its pipeline: running blocking work off the event
loop, and turning failures of model calls into the shared error shape."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, TypeVar

import numpy as np
from fastapi import Request, UploadFile
from ray import exceptions as ray_exceptions
from ray.serve import exceptions as serve_exceptions

from serve_app import errors
from serve_app.http import check_content_length, read_upload
from serve_app.imaging import decode_image
from serve_app.settings import settings

log = logging.getLogger("facegraph.ingress")
T = TypeVar("T")


def model_call(handle) -> Callable[[Any], Awaitable[Any]]:
    """A deployment handle as the awaitable the pipeline glue takes. If the awaiting
    task is cancelled (a request deadline, a failed sibling call), the Serve request is
    cancelled too, so the model replica drops it instead of computing it for nobody."""

    async def call(item: Any) -> Any:
        pending = handle.remote(item)
        try:
            return await pending
        except asyncio.CancelledError:
            pending.cancel()
            raise

    return call


async def guarded(work: Awaitable[T], timeout_s: float, timeout_error: errors.ApiError) -> T:
    """Await pipeline work under a deadline, mapping what can go wrong downstream:
    over the deadline -> `timeout_error` (the work is cancelled); a model deployment
    overloaded or not up -> 503; a model failing on an item -> 500 with the shape."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except errors.ApiError:
        raise
    except asyncio.TimeoutError:
        raise timeout_error from None
    except (serve_exceptions.BackPressureError, serve_exceptions.DeploymentUnavailableError,
            serve_exceptions.ReplicaUnavailableError, ray_exceptions.RayActorError) as exc:
        raise errors.not_ready(f"a model deployment is not available: {type(exc).__name__}") from None
    except ray_exceptions.RayTaskError as exc:
        log.error("model call failed: %s", exc)
        raise errors.ApiError(500, "model_error", "a model failed on this request") from None


async def decoded_upload(request: Request, upload: UploadFile) -> np.ndarray:
    """A multipart image upload -> uint8 RGB, under the byte and pixel limits; the
    decode runs in a worker thread so the ingress keeps serving other requests."""
    check_content_length(request)
    data = await read_upload(upload)
    return await asyncio.to_thread(decode_image, data)


async def within_request_timeout(work: Awaitable[T], what: str) -> T:
    """`guarded` with REQUEST_TIMEOUT, answering 504 upstream_timeout past it."""
    limit = settings().request_timeout_s
    return await guarded(work, limit, errors.upstream_timeout(f"{what} took longer than {limit:g} s"))
