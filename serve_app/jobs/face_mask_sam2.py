"""Batch job `face-mask-sam2`: the FaceMesh -> SAM2 face-mask pipeline over a folder.
Per image: <rel>.mask.png, and with --rgba / --overlay the other two images; each row
says per face whether its mask came from SAM2 or the oval polygon, and why.

SAM2 settings come from the SAM2_* environment (as for the endpoint), with the
--sam2-* options on top. Each Ray Data actor has its own client, so SAM2 sees at most
workers x SAM2_CONCURRENCY calls at once.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from serve_app.clients.sam2 import Sam2Client
from serve_app.config import spec
from serve_app.config.settings import OVERRIDABLE, Sam2Config
from serve_app.imaging import decode_image
from serve_app.jobs.mask_files import add_output_arguments, output_kinds, write_outputs
from serve_app.jobs.runner import BatchJob, Models
from serve_app.pipelines.face_mask_sam2 import SPEC, face_mask_sam2
from serve_app.web.schemas import FaceMaskSource

HELP = "face masks from FaceMesh prompts to an external SAM2 service (polygon fallback)"

# One client per worker process and config: it keeps its connection pool and its
# concurrency bound across the rows of a block.
_clients: dict[Sam2Config, Sam2Client] = {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    group = p.add_argument_group("SAM2 service (unset options come from the SAM2_* environment)")
    spec.add_arguments(group, Sam2Config, prefix="sam2-", skip=tuple(set(Sam2Config.model_fields) - set(OVERRIDABLE)))


def options(args: argparse.Namespace) -> dict:
    overrides = {name: getattr(args, "sam2_" + name) for name in OVERRIDABLE}
    try:
        sam2 = Sam2Config.from_env(**overrides)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return {"sam2": sam2, "kinds": output_kinds(args)}


async def process(path: Path, models: Models, opts: dict) -> dict:
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    client = _clients.setdefault(opts["sam2"], Sam2Client(opts["sam2"]))
    result = await face_mask_sam2(image, opts["params"], sam2=client, **models)
    rel = str(path.relative_to(opts["input"]))
    outputs = await asyncio.to_thread(write_outputs, image, result.mask, opts["kinds"], Path(opts["output"]), rel)
    sources = [FaceMaskSource.of(f).model_dump() for f in result.faces]
    return {"faces": len(sources), "boxes": [s["box"] for s in sources], "mask_sources": sources, "outputs": outputs}


JOB = BatchJob(SPEC, HELP, process, add_arguments=add_arguments, options=options)
