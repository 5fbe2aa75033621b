"""The image outputs every face-mask endpoint and job returns, made only when asked for.

mask      -> mask_png_base64       binary mask, white = face
rgba      -> face_rgba_png_base64  the image with alpha = mask
overlay   -> overlay_png_base64    the mask tinted over the image (QA)
"""

from __future__ import annotations

from pathlib import Path

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


def write_outputs(image: np.ndarray, mask: np.ndarray, kinds, output: Path, rel: str) -> dict[str, str]:
    """Batch jobs: write <output>/<rel>.<kind>.png for each kind; {kind: path relative to output}."""
    from serve_app.batch import output_path, write_atomic

    written = {}
    for kind, pixels in render(image, mask, kinds).items():
        target = output_path(output, rel, f"{kind}.png")
        write_atomic(target, encode_png(pixels))  # a killed job leaves no half-written PNG
        written[kind] = str(target.relative_to(output))
    return written


def add_output_arguments(parser) -> None:
    """The mask jobs' choice of images, besides the mask that is always written."""
    parser.add_argument("--rgba", action="store_true", help="also write <rel>.rgba.png")
    parser.add_argument("--overlay", action="store_true", help="also write <rel>.overlay.png")


def output_kinds(args) -> frozenset[str]:
    return frozenset({"mask"} | {k for k in ("rgba", "overlay") if getattr(args, k)})
