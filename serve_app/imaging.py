"""Image decoding with limits, and the PNG/JPEG/base64 encoders every endpoint uses.

Decoding is defensive: the byte limit is checked first, then the header is parsed
and the pixel limit checked before any pixel data is decoded (decompression bombs),
then EXIF orientation is applied and any mode converted to uint8 RGB.
"""

from __future__ import annotations

import base64
import io
import threading
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app import errors
from serve_app.config.settings import settings

# We enforce our own pixel limit before decoding; PIL's own check would only warn
# below 2x its default and raise above, with a different message.
Image.MAX_IMAGE_PIXELS = None


class OverBudget(Exception):
    """A request's images together are over its work budget: the whole request fails
    (`.error`, a 413), not one image. Deliberately not an ApiError, which a pipeline
    turns into a per-image error."""

    def __init__(self, error: errors.ApiError):
        super().__init__(error.message)
        self.error = error


class PixelBudget:
    """The decoded pixels one request may spend over all its images. Each image is
    charged from its header, before its pixels are decoded; the image that takes the
    total over the limit raises OverBudget, so the request stops at that point, whatever
    order its images load in. Charges come from worker threads: a lock keeps the sum."""

    def __init__(self, limit: int, setting: str = "MAX_REQUEST_PIXELS"):
        self.limit, self.setting, self.spent = limit, setting, 0
        self._lock = threading.Lock()

    def charge(self, width: int, height: int) -> None:
        with self._lock:
            self.spent += width * height
            spent = self.spent
        if spent > self.limit:
            raise OverBudget(
                errors.ApiError(
                    413,
                    "over_budget",
                    f"the images of this request total over {self.limit} pixels ({self.setting}); "
                    "send fewer or smaller images per request",
                )
            )


def decode_image(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    allowed_formats: tuple[str, ...] | None = None,
    budget: PixelBudget | None = None,
) -> np.ndarray:
    """Bytes of an image file -> uint8 RGB HxWx3, or ApiError (4xx). With a `budget`,
    the image's pixels are charged to it before they are decoded (OverBudget past it)."""
    cfg = settings()
    max_bytes = cfg.max_image_bytes if max_bytes is None else max_bytes
    max_pixels = cfg.max_image_pixels if max_pixels is None else max_pixels
    allowed = cfg.allowed_formats if allowed_formats is None else allowed_formats

    if not data:
        raise errors.bad_input("the image is empty (0 bytes)", code="empty_image")
    if len(data) > max_bytes:
        raise errors.too_large(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        img = Image.open(io.BytesIO(data))  # parses the header only
    except UnidentifiedImageError:
        raise errors.unsupported_format(f"not a recognised image; accepted formats: {', '.join(allowed)}") from None
    except Exception as exc:  # PIL raises assorted errors on mangled headers
        raise errors.bad_input(f"unreadable image header: {exc}", code="corrupt_image") from None
    if img.format not in allowed:
        raise errors.unsupported_format(f"format {img.format} is not accepted; accepted formats: {', '.join(allowed)}")
    width, height = img.size
    if width * height > max_pixels:
        raise errors.too_large(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if budget is not None:
        budget.charge(width, height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)  # animated GIF/WebP/TIFF: the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.ascontiguousarray(_to_rgb(img))
    except errors.ApiError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise errors.bad_input(f"the image data is corrupt or truncated: {exc}", code="corrupt_image") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth greyscale: scale the full range to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        grey = arr.round().astype(np.uint8)
        return np.stack([grey] * 3, axis=-1)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        # Transparent areas become white, not whatever colour hides under alpha=0.
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HxW, HxWx3 (RGB) or HxWx4 (RGBA) -> PNG bytes."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB HxWx3 -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{b64(data)}"


# ASCII whitespace: MIME wraps base64 at 76 characters with CRLF (RFC 2045), editors
# and shells add spaces and newlines around it. Anything else outside the alphabet is refused.
_WHITESPACE = str.maketrans("", "", " \t\r\n\f\v")


def decode_base64(text: str) -> bytes:
    """Raw base64 or a data URI -> bytes, or ApiError(400). Line breaks and whitespace
    anywhere (MIME's 76-character lines, a trailing newline) are ignored."""
    text = text.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise errors.bad_input("data URI is not base64-encoded")
    try:
        return base64.b64decode(text.translate(_WHITESPACE), validate=True)
    except Exception:
        raise errors.bad_input("invalid base64 data") from None


def base64_length(text: str) -> int:
    """Characters of base64 in `text` (whitespace not counted): what decodes to bytes."""
    return len(text) - sum(text.count(c) for c in " \t\r\n\f\v")


# ---- the segmentation outputs every face-mask endpoint and job returns -----------------
# made only when asked for:
#   mask      -> mask_png_base64       binary mask, white = face
#   rgba      -> face_rgba_png_base64  the image with alpha = mask
#   overlay   -> overlay_png_base64    the mask tinted over the image (QA)

OUTPUT_FIELDS = {"mask": "mask_png_base64", "rgba": "face_rgba_png_base64", "overlay": "overlay_png_base64"}
TINT_RGB = np.array([0, 255, 0], np.float32)
TINT_ALPHA = 0.45


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint the mask area; pixels outside the mask stay exactly as they were."""
    out = image.copy()
    on = mask > 0
    out[on] = (image[on].astype(np.float32) * (1 - TINT_ALPHA) + TINT_RGB * TINT_ALPHA).round().astype(np.uint8)
    return out


def render(image: np.ndarray, mask: np.ndarray, kinds) -> dict[str, np.ndarray]:
    """image uint8 RGB HxWx3, mask uint8 HxW (0/255) -> {kind: pixels} for the kinds asked."""
    makers = {"mask": lambda: mask, "rgba": lambda: np.dstack([image, mask]), "overlay": lambda: overlay(image, mask)}
    return {kind: makers[kind]() for kind in OUTPUT_FIELDS if kind in kinds}


def encode_outputs(image: np.ndarray, mask: np.ndarray, wanted) -> dict[str, str | None]:
    """{response field: base64 PNG, or None when not asked for}."""
    out: dict[str, str | None] = dict.fromkeys(OUTPUT_FIELDS.values())
    for kind, pixels in render(image, mask, wanted).items():
        out[OUTPUT_FIELDS[kind]] = b64(encode_png(pixels))
    return out
