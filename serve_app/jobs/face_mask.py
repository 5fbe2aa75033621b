"""Batch job `face-mask` (alias `cartoon-mask`): the cartoon face-mask pipeline over a
folder. Per image: <rel>.mask.png, and with --rgba / --overlay the other two images."""

from __future__ import annotations

import argparse
from pathlib import Path

from deployments.lbp_detector import LBPDetector, LBPDetectorConfig
from deployments.segformer_parser import SegFormerParser, SegFormerParserConfig
from serve_app.assets import resolve_for_serving
from serve_app.batch import BatchJob, Models
from serve_app.imaging import decode_image
from serve_app.mask_outputs import write_outputs
from serve_app.pipelines.face_mask import FaceMaskParams, face_mask


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-hair", action="store_true")
    p.add_argument("--use-crf", action="store_true")
    p.add_argument("--max-size", type=int, default=448)
    p.add_argument("--expand", type=float, default=0.15)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--rgba", action="store_true", help="also write <rel>.rgba.png")
    p.add_argument("--overlay", action="store_true", help="also write <rel>.overlay.png")
    p.add_argument("--detector-asset", default="lbp-detector-cascade")
    p.add_argument("--parser-asset", default="segformer-parser-face-parsing")


def models(args: argparse.Namespace) -> dict:
    _, cascade = resolve_for_serving(args.detector_asset)
    _, checkpoint = resolve_for_serving(args.parser_asset)
    return {
        "detect": (LBPDetector, LBPDetectorConfig(str(cascade))),
        "parse": (SegFormerParser, SegFormerParserConfig(str(checkpoint))),
    }


def options(args: argparse.Namespace) -> dict:
    return {
        "params": FaceMaskParams(args.include_hair, args.use_crf, args.max_size, args.expand, args.threshold),
        "rgba": args.rgba, "overlay": args.overlay, "input": str(Path(args.input).resolve()),
    }


async def process(path: Path, models: Models, opts: dict) -> dict:
    image = decode_image(path.read_bytes())
    result = await face_mask(image, opts["params"], models["detect"], models["parse"])
    kinds = {"mask"} | {k for k in ("rgba", "overlay") if opts[k]}
    outputs = write_outputs(image, result.mask, kinds, Path(opts["output"]), str(path.relative_to(opts["input"])))
    return {"faces": len(result.boxes), "boxes": result.boxes, "outputs": outputs}


JOB = BatchJob(
    name="face-mask", aliases=("cartoon-mask",),
    help="cartoon face masks (LBPDetector -> SegFormerParser [-> CRF])",
    add_arguments=add_arguments, models=models, options=options, process=process,
)
