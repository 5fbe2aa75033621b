"""Batch job `face-mask` (alias `cartoon-mask`): the cartoon face-mask pipeline over a
folder. Per image: <rel>.mask.png, and with --rgba / --overlay the other two images."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from serve_app import display
from serve_app.imaging import decode_image
from serve_app.jobs.mask_files import add_output_arguments, output_kinds, write_outputs
from serve_app.jobs.runner import BatchJob, Models
from serve_app.pipelines.face_mask import SPEC, face_mask

HELP = "cartoon face masks (LBPDetector -> SegFormerParser [-> CRF])"


def options(args: argparse.Namespace) -> dict:
    return {"kinds": output_kinds(args)}


async def process(path: Path, models: Models, opts: dict) -> dict:
    # Off the loop: the other rows of the block decode and detect meanwhile.
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    result = await face_mask(image, opts["params"], **models)
    rel = str(path.relative_to(opts["input"]))
    outputs = await asyncio.to_thread(write_outputs, image, result.mask, opts["kinds"], Path(opts["output"]), rel)
    return {"faces": len(result.boxes), "boxes": display.boxes(result.boxes), "outputs": outputs}


JOB = BatchJob(SPEC, HELP, process, aliases=("cartoon-mask",), add_arguments=add_output_arguments, options=options)
