"""Async client for an external SAM2 segmentation service (the operator's, over HTTP).

One POST per face, JSON body (field names from settings, README "SAM2"):

    {image_field: <base64 PNG>, points_field: [[x, y, label], ...],
     box_field: [x1, y1, x2, y2], multimask_field: bool, return_prob_field: false}

Accepted answers (anything else is an invalid response):
    {"mask_png_base64": "..."}
    {"mask_rle": {"counts": [...], "size": [h, w]}}  or  {"mask_rle": [counts, size]}
        uncompressed COCO RLE: column-major runs, the first run is background
    {"masks": [2-D array, ...], "scores": [...]}  0/1, bool or probabilities; the best
        score wins, else the largest area
Masks of another size are resized to the image (or crop) that was sent.

Never hangs and never raises for the service's failures: every face gets a
Sam2Outcome, with a mask or with the reason there is none. All faces of one call
share one deadline of `timeout_s` (retries and queueing included). Connection errors
and 5xx are retried with backoff; after `breaker_failures` such failures in a row the
client stops calling for `breaker_cooldown_s` and answers with the fallback at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from serve_app.config.settings import Sam2Config
from serve_app.faces.prompts import FacePrompt
from serve_app.imaging import encode_png

log = logging.getLogger("facegraph.sam2")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_MASK_PIXELS = 50_000_000  # an RLE/array claiming more is refused before allocating
BACKOFF_S = 0.2  # first retry delay; doubles per attempt, never past the deadline
CROP_PAD = 0.1  # crop mode: context around the prompt's extent, fraction of its size

# Fallback reasons (stable codes, shown per face in responses).
NOT_CONFIGURED = "not_configured"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
SERVER_ERROR = "server_error"
AUTH_REFUSED = "auth_refused"
REJECTED = "rejected"
INVALID_RESPONSE = "invalid_response"
EMPTY_MASK = "empty_mask"
CLIENT_ERROR = "client_error"  # a bug on our side; logged with its traceback
# Failures that say the service is down or overloaded (they feed the breaker);
# garbage or a refusal come from a live service and do not.
UNAVAILABLE = (UNREACHABLE, TIMEOUT, SERVER_ERROR)


class InvalidResponse(ValueError):
    """The service answered 2xx with something that is not an accepted mask format."""


@dataclass(frozen=True)
class Sam2Outcome:
    mask: np.ndarray | None  # bool HxW over the whole image, or None
    reason: str | None = None  # fallback code when mask is None
    detail: str = ""


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, retry: bool = False):
        super().__init__(detail)
        self.reason, self.detail, self.retry = reason, detail, retry


class Sam2Client:
    """One per ingress replica (or batch actor). SAM2_CONCURRENCY bounds the calls in
    flight from this client across all its requests."""

    def __init__(self, cfg: Sam2Config):
        self.cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http = None
        self._slots: asyncio.Semaphore | None = None
        # Breaker state (per client, so per replica): consecutive unavailable answers.
        self._failures = 0
        self._last_failure = UNREACHABLE
        self._open_until = 0.0

    @property
    def configured(self) -> bool:
        return bool(self.cfg.url)

    def _session(self):
        # httpx pools and semaphores belong to one event loop; batch workers run a
        # fresh loop per block, so make new ones when the loop changes.
        import httpx

        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._http = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=self.cfg.concurrency), follow_redirects=False
            )
            self._slots = asyncio.Semaphore(self.cfg.concurrency)
            self._loop = loop
        return self._http, self._slots

    async def aclose(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = self._loop = self._slots = None

    async def segment(self, image: np.ndarray, prompts: list[FacePrompt], multimask: bool = True) -> list[Sam2Outcome]:
        """A Sam2Outcome per prompt, within `timeout_s` of this call for all of them."""
        if not prompts:
            return []
        if not self.configured:
            return [Sam2Outcome(None, NOT_CONFIGURED, "SAM2_URL is not set")] * len(prompts)
        if self._breaker_open():
            wait = self._open_until - time.monotonic()
            detail = f"not called: {self._failures} failures in a row, next try in {wait:.0f} s"
            return [Sam2Outcome(None, self._last_failure, detail)] * len(prompts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.timeout_s
        shared = None
        if self.cfg.send == "image":
            # Encoded once per request, shared by every face's call.
            shared = asyncio.ensure_future(asyncio.to_thread(_encode_b64_png, image))
        try:
            faces = [self._face(image, p, multimask, shared, deadline) for p in prompts]
            return list(await asyncio.gather(*(self._bounded(f, deadline) for f in faces)))
        finally:
            if shared is not None and not shared.done():
                shared.cancel()

    async def _bounded(self, work: Awaitable[Sam2Outcome], deadline: float) -> Sam2Outcome:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            outcome = await asyncio.wait_for(work, max(remaining, 0.001))
        except TimeoutError:
            outcome = _fallback(TIMEOUT, f"no usable answer within {self.cfg.timeout_s:g} s")
        except Exception as exc:  # SAM2 trouble must never fail the request
            log.exception("SAM2 call failed on our side")
            outcome = Sam2Outcome(None, CLIENT_ERROR, f"{type(exc).__name__}: {exc}")
        self._record(outcome)
        return outcome

    def _breaker_open(self) -> bool:
        limit = self.cfg.breaker_failures
        return bool(limit) and self._failures >= limit and time.monotonic() < self._open_until

    def _record(self, outcome: Sam2Outcome) -> None:
        if outcome.reason not in UNAVAILABLE:
            self._failures = 0  # an answer, even a useless one: the service is up
            return
        self._failures += 1
        self._last_failure = outcome.reason
        if self.cfg.breaker_failures and self._failures >= self.cfg.breaker_failures:
            # Past the cooldown, calls go through again; one more failure re-opens.
            self._open_until = time.monotonic() + self.cfg.breaker_cooldown_s
            if self._failures == self.cfg.breaker_failures:
                log.warning(
                    "SAM2 failed %d times in a row (%s): not calling it for %g s",
                    self._failures,
                    outcome.reason,
                    self.cfg.breaker_cooldown_s,
                )

    async def _face(
        self, image: np.ndarray, prompt: FacePrompt, multimask: bool, shared, deadline: float
    ) -> Sam2Outcome:
        height, width = image.shape[:2]
        if shared is not None:
            region, sent = (0, 0, width, height), prompt
            encoded = await asyncio.shield(shared)
        else:
            region = crop_region(prompt, width, height)
            x1, y1, x2, y2 = region
            sent = prompt.shifted(x1, y1)
            encoded = await asyncio.to_thread(_encode_b64_png, np.ascontiguousarray(image[y1:y2, x1:x2]))
        box, points = sent.as_lists()
        body = _json_body(
            self.cfg.image_field,
            encoded,
            {
                self.cfg.points_field: points,
                self.cfg.box_field: box,
                self.cfg.multimask_field: bool(multimask),
                self.cfg.return_prob_field: False,
            },
        )
        try:
            raw = await self._post(body, deadline)
            x1, y1, x2, y2 = region
            part = await asyncio.to_thread(parse_response, raw, y2 - y1, x2 - x1)
        except _Failure as f:
            return _fallback(f.reason, f.detail)
        except InvalidResponse as exc:
            return _fallback(INVALID_RESPONSE, str(exc))
        if not part.any():
            return _fallback(EMPTY_MASK, "the service returned an empty mask")
        if region == (0, 0, width, height):
            return Sam2Outcome(part)
        full = np.zeros((height, width), bool)
        full[y1:y2, x1:x2] = part
        return Sam2Outcome(full)

    async def _post(self, body: bytes, deadline: float) -> bytes:
        """The 2xx body, retrying connection errors and 5xx with backoff; _Failure else."""
        import httpx

        http, slots = self._session()
        loop = asyncio.get_running_loop()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        failure = _Failure(UNREACHABLE, "no attempt made")
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                delay = BACKOFF_S * 2 ** (attempt - 1)
                if loop.time() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
            async with slots:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _Failure(TIMEOUT, f"no usable answer within {self.cfg.timeout_s:g} s")
                try:
                    return await self._attempt(http, body, headers, remaining)
                except httpx.TimeoutException:
                    raise _Failure(TIMEOUT, f"no usable answer within {self.cfg.timeout_s:g} s") from None
                except httpx.TransportError as exc:  # refused, reset, closed mid-answer
                    failure = _Failure(UNREACHABLE, f"{type(exc).__name__}: {exc}", retry=True)
                except _Failure as f:
                    failure = f
            if not failure.retry:
                break
        raise failure

    async def _attempt(self, http, body: bytes, headers: dict, timeout_s: float) -> bytes:
        async with http.stream("POST", self.cfg.url, content=body, headers=headers, timeout=timeout_s) as resp:
            status = resp.status_code
            if status >= 500:
                raise _Failure(SERVER_ERROR, f"HTTP {status}", retry=True)
            if status in (401, 403):
                raise _Failure(AUTH_REFUSED, f"HTTP {status}: check SAM2_API_KEY")
            if not 200 <= status < 300:
                raise _Failure(REJECTED, f"HTTP {status}")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _Failure(INVALID_RESPONSE, f"response over {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)


def _fallback(reason: str, detail: str) -> Sam2Outcome:
    log.warning("SAM2 fallback (%s): %s", reason, detail)
    return Sam2Outcome(None, reason, detail)


def _encode_b64_png(image: np.ndarray) -> str:
    # PNG, not the uploaded bytes: the service must see the pixels our coordinates
    # refer to (after EXIF rotation and mode conversion), losslessly.
    return base64.b64encode(encode_png(image)).decode("ascii")


def _json_body(image_field: str, encoded: str, rest: dict) -> bytes:
    """JSON with the (large) base64 image spliced in as-is: base64 needs no escaping,
    and re-serialising a multi-megabyte string per face is what we are avoiding."""
    head = json.dumps({image_field: ""})[:-2]  # '{"<field>": "'
    tail = json.dumps(rest)[1:]  # '"points": ...}'
    return f'{head}{encoded}", {tail}'.encode() if rest else f'{head}{encoded}"}}'.encode()


def crop_region(prompt: FacePrompt, width: int, height: int) -> tuple[int, int, int, int]:
    """Crop mode: the prompt's extent (box and every point) with some context, clipped."""
    x1, y1, x2, y2 = prompt.extent()
    pad_x, pad_y = round((x2 - x1) * CROP_PAD), round((y2 - y1) * CROP_PAD)
    return max(0, x1 - pad_x), max(0, y1 - pad_y), min(width, x2 + pad_x), min(height, y2 + pad_y)


# ---- response formats -------------------------------------------------------------


def parse_response(raw: bytes, height: int, width: int) -> np.ndarray:
    """A 2xx body -> bool mask of (height, width), or InvalidResponse."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponse("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidResponse("the body is not a JSON object")
    if "mask_png_base64" in doc:
        prob = _from_png(doc["mask_png_base64"])
    elif "mask_rle" in doc:
        prob = _from_rle(doc["mask_rle"])
    elif "masks" in doc:
        prob = _from_masks(doc["masks"], doc.get("scores"))
    else:
        raise InvalidResponse("no mask_png_base64, mask_rle or masks in the answer")
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return prob > 0.5


def _from_png(text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise InvalidResponse("mask_png_base64 is not a string")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise InvalidResponse("mask_png_base64 is not base64") from None
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if grey is None or grey.size == 0:
        raise InvalidResponse("mask_png_base64 is not an image")
    # 0/1 PNGs and 0/255 PNGs both occur in the wild.
    on = grey > 0 if grey.max() <= 1 else grey >= 128
    return on.astype(np.float32)


def _from_rle(rle: Any) -> np.ndarray:
    if isinstance(rle, dict):
        counts, size = rle.get("counts"), rle.get("size")
    elif isinstance(rle, (list, tuple)) and len(rle) == 2:
        counts, size = rle
    else:
        raise InvalidResponse("mask_rle is neither {counts, size} nor [counts, size]")
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise InvalidResponse("mask_rle size is not [h, w] of positive integers")
    if not (
        isinstance(counts, list)
        and counts
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts)
    ):
        raise InvalidResponse("mask_rle counts is not a list of non-negative integers")
    h, w = size
    if h * w > MAX_MASK_PIXELS or sum(counts) != h * w:
        raise InvalidResponse(f"mask_rle counts sum to {sum(counts)}, not h*w = {h * w}")
    # Runs alternate background, foreground, ... starting with background.
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.float32)
    return flat.reshape((h, w), order="F")


def _from_masks(masks: Any, scores: Any) -> np.ndarray:
    if not isinstance(masks, list) or not masks:
        raise InvalidResponse("masks is not a non-empty list")
    arrays = [_mask_array(m, i) for i, m in enumerate(masks)]
    if scores is not None:
        if not (
            isinstance(scores, list)
            and len(scores) == len(arrays)
            and all(isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) for s in scores)
        ):
            raise InvalidResponse("scores is not a list of numbers, one per mask")
        best = int(np.argmax(scores))
    else:
        best = int(np.argmax([np.count_nonzero(a > 0.5) for a in arrays]))
    return arrays[best]


def _mask_array(value: Any, index: int) -> np.ndarray:
    if not isinstance(value, list):
        raise InvalidResponse(f"masks[{index}] is not a 2-D array")
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged rows
        raise InvalidResponse(f"masks[{index}] is not a 2-D array") from None
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise InvalidResponse(f"masks[{index}] is not a non-empty 2-D array of numbers")
    if arr.size > MAX_MASK_PIXELS:
        raise InvalidResponse(f"masks[{index}] is too large")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise InvalidResponse(f"masks[{index}] has values outside 0..1")
    return arr
