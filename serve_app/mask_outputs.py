"""The image outputs every face-mask endpoint returns, encoded only when asked for.

    mask      -> mask_png_base64       binary mask, white = face
    rgba      -> face_rgba_png_base64  the image with alpha = mask
    overlay   -> overlay_png_base64    the mask tinted over the image (QA)
"""

from __future__ import annotations

import numpy as np

from serve_app.imaging import b64, encode_png

OUTPUT_FIELDS = {"mask": "mask_png_base64", "rgba": "face_rgba_png_base64", "overlay": "overlay_png_base64"}
TINT_RGB = np.array([0, 255, 0], np.float32)
TINT_ALPHA = 0.45


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint the mask area; pixels outside the mask stay exactly as they were."""
    out = image.copy()
    on = mask > 0
    out[on] = (image[on].astype(np.float32) * (1 - TINT_ALPHA) + TINT_RGB * TINT_ALPHA).round().astype(np.uint8)
    return out


def encode_outputs(image: np.ndarray, mask: np.ndarray, wanted: frozenset[str]) -> dict[str, str | None]:
    """image uint8 RGB HxWx3, mask uint8 HxW (0/255) -> {response field: base64 PNG or None}."""
    out: dict[str, str | None] = {field: None for field in OUTPUT_FIELDS.values()}
    if "mask" in wanted:
        out["mask_png_base64"] = b64(encode_png(mask))
    if "rgba" in wanted:
        out["face_rgba_png_base64"] = b64(encode_png(np.dstack([image, mask])))
    if "overlay" in wanted:
        out["overlay_png_base64"] = b64(encode_png(overlay(image, mask)))
    return out
