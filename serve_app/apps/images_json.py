"""Images given in a JSON body (`images: [{"image_base64" | "image_url"}, ...]`), as
/extract-faces and /v1/people take them: the body limit such a request needs, the
checks on the list, and one loader per image (base64 decoded, or the URL fetched
safely), all charged to the request's pixel budget."""

from __future__ import annotations

import asyncio
import contextlib

from serve_app import errors
from serve_app.config.settings import settings
from serve_app.imaging import PixelBudget, base64_length, decode_base64, decode_image
from serve_app.web.schemas import ImageInput
from serve_app.web.url_fetch import UrlFetcher


def max_body_bytes() -> int:
    """The largest body a valid request can have: every image at the byte limit, in
    base64, plus room for the JSON around them; never over MAX_REQUEST_BYTES (counted
    while the body streams in, before FastAPI parses the JSON: serve_app/web/http.py)."""
    s = settings()
    return min(s.max_request_bytes, s.max_images_per_request * (s.max_image_bytes * 4 // 3 + 64) + 1024 * 1024)


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


@contextlib.asynccontextmanager
async def image_loaders(images: list[ImageInput]):
    """The list checked, then one loader per image, all charged to one pixel budget
    (the request's work: each image charged from its header, before decoding; over it
    the whole request is refused). A fetcher is opened only when a URL is given."""
    check_images(images)
    budget = PixelBudget(settings().max_request_pixels)
    fetch = any(e.image_url is not None for e in images)
    async with UrlFetcher() if fetch else contextlib.nullcontext() as fetcher:
        yield [
            base64_loader(e.image_base64, budget)
            if e.image_base64 is not None
            else url_loader(e.image_url, fetcher, budget)
            for e in images
        ]
