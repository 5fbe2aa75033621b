"""Batch job `face-mask-sam2`: the FaceMesh -> SAM2 face-mask pipeline over a folder.
Per image: <rel>.mask.png, and with --rgba / --overlay the other two images; each row
says per face whether its mask came from SAM2 or the oval polygon, and why.

SAM2 settings come from the SAM2_* environment (as for the endpoint), with the
--sam2-* options on top. Each Ray Data actor has its own client, so SAM2 sees at most
workers x SAM2_CONCURRENCY calls at once.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from deployments.facemesh import FaceMesh, FaceMeshConfig
from serve_app.batch import BatchJob, Models
from serve_app.imaging import decode_image
from serve_app.mask_outputs import write_outputs
from serve_app.pipelines.face_mask_sam2 import FaceMaskSam2Params, face_mask_sam2
from serve_app.sam2_client import Sam2Client, Sam2Config

# One client per worker process and config: it keeps its connection pool and its
# concurrency bound across the rows of a block.
_clients: dict[Sam2Config, Sam2Client] = {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--multimask", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--expand", type=float, default=0.15)
    p.add_argument("--pos-points", type=int, default=16)
    p.add_argument("--max-num-faces", type=int, default=5)
    p.add_argument("--rgba", action="store_true", help="also write <rel>.rgba.png")
    p.add_argument("--overlay", action="store_true", help="also write <rel>.overlay.png")
    p.add_argument("--sam2-url", default=None, help="default: $SAM2_URL (unset: polygon masks)")
    p.add_argument("--sam2-timeout", type=float, default=None, help="seconds per image; default: $SAM2_TIMEOUT")
    p.add_argument("--sam2-retries", type=int, default=None, help="default: $SAM2_RETRIES")
    p.add_argument("--sam2-concurrency", type=int, default=None, help="per worker; default: $SAM2_CONCURRENCY")
    p.add_argument("--sam2-send", choices=("image", "crop"), default=None, help="default: $SAM2_SEND")


def models(args: argparse.Namespace) -> dict:
    return {"mesh": (FaceMesh, FaceMeshConfig(max_num_faces=args.max_num_faces))}


def options(args: argparse.Namespace) -> dict:
    if not 0 <= args.expand <= 2 or not 0 <= args.pos_points <= 64:
        raise SystemExit("--expand must be in 0..2 and --pos-points in 0..64")
    sam2 = Sam2Config.from_settings(url=args.sam2_url, timeout_s=args.sam2_timeout, retries=args.sam2_retries,
                                    concurrency=args.sam2_concurrency, send=args.sam2_send)
    return {
        "params": FaceMaskSam2Params(args.multimask, args.expand, args.pos_points), "sam2": sam2,
        "rgba": args.rgba, "overlay": args.overlay, "input": str(Path(args.input).resolve()),
    }


async def process(path: Path, models: Models, opts: dict) -> dict:
    image = decode_image(path.read_bytes())
    client = _clients.setdefault(opts["sam2"], Sam2Client(opts["sam2"]))
    result = await face_mask_sam2(image, opts["params"], models["mesh"], client)
    kinds = {"mask"} | {k for k in ("rgba", "overlay") if opts[k]}
    outputs = write_outputs(image, result.mask, kinds, Path(opts["output"]), str(path.relative_to(opts["input"])))
    return {"faces": len(result.boxes), "boxes": result.boxes,
            "mask_sources": [asdict(f) for f in result.faces], "outputs": outputs}


JOB = BatchJob(
    name="face-mask-sam2",
    help="face masks from FaceMesh prompts to an external SAM2 service (polygon fallback)",
    add_arguments=add_arguments, models=models, options=options, process=process,
)
