"""The face-mask jobs' image files: <output>/<rel>.<kind>.png for the segmentation outputs
asked for (serve_app/imaging.py renders them; the HTTP apps encode the same pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serve_app.imaging import encode_png, render
from serve_app.jobs.runner import output_path, write_atomic


def write_outputs(image: np.ndarray, mask: np.ndarray, kinds, output: Path, rel: str) -> dict[str, str]:
    """Batch jobs: write <output>/<rel>.<kind>.png for each kind; {kind: path relative to output}."""
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
