"""The face parser's runtimes on CPU (SegFormerParserConfig.runtime: torch | onnx |
onnx-int8), in one run on the same ROIs, threads and batch size:

  speed  ROIs per second of SegFormerParser.predict on the face ROIs of the shared
         cartoon images (LBP detector + the face-mask pipeline's face_rois), default
         the random-weight MiT-B5 (the production architecture: realistic compute);
  masks  IoU of the face-mask pipeline's binary masks, each ONNX runtime against the
         torch path, on every shared cartoon image; default the trained small UNet
         (real weights, so masks mean something) and the B5 (int8 quantises its MatMuls).

The first run exports (and quantises) each checkpoint into the ONNX cache
(deployments/segformer_parser/onnx.py); later runs only load the files.

    python -m bench parser_runtime [--speed-asset segformer-parser-b5-random] [--threads 2]
        [--iou-assets face-parser-unet-small segformer-parser-b5-random]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import numpy as np

from bench.harness.endpoints import images_in
from bench.harness.figures import mask_iou

RUNTIMES = ("torch", "onnx", "onnx-int8")


def cartoon_images() -> list[tuple[str, np.ndarray]]:
    from serve_app.config.assets import resolve
    from serve_app.imaging import decode_image

    return [(p.name, decode_image(p.read_bytes())) for p in images_in(resolve("test-images-cartoon"))]


def detector():
    from deployments.lbp_detector.model import LBPDetector, LBPDetectorConfig
    from serve_app.config.assets import resolve

    return LBPDetector(LBPDetectorConfig(cascade_path=str(resolve("lbp-detector-cascade"))))


def face_rois_of(images) -> list[list[np.ndarray]]:
    """Per image, every face ROI the face-mask pipeline would send the parser."""
    import cv2

    from serve_app.pipelines.face_mask import FaceMaskParams, face_rois

    det = detector()
    rois = []
    for _, image in images:
        (faces,) = det.predict([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)])
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        rois.append([roi for _, roi in face_rois(image, boxes, FaceMaskParams())])
    return rois


def parser(asset: str, runtime: str, threads: int):
    from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
    from deployments.types import Placement
    from serve_app.config.assets import resolve

    return SegFormerParser(
        SegFormerParserConfig(checkpoint_dir=str(resolve(asset)), runtime=runtime), Placement(threads=threads)
    )


def roi_rates(
    asset: str, threads: int = 2, batch: int = 8, rounds: int = 1, max_rois: int = 16, runtimes=RUNTIMES
) -> dict[str, float]:
    """{runtime: ROIs/s} on the cartoon images' face ROIs (the first `max_rois`, taken
    image by image), `batch` ROIs per predict(). The runtimes take turns batch by batch
    (all loaded at once), so a load that changes during the run hits them alike."""
    from deployments.types import ParseRequest
    from serve_app.pipelines.face_mask import FACE_LABELS

    # Every image's first ROI, then every image's second, ...: all the ROI shapes, not
    # mostly the 64 alike ones of the 8x8 grid image.
    per_image = face_rois_of(cartoon_images())
    rois = [r for group in itertools.zip_longest(*per_image) for r in group if r is not None][:max_rois]
    items = [ParseRequest(r, FACE_LABELS) for r in rois]
    models = {runtime: parser(asset, runtime, threads) for runtime in runtimes}
    spent = dict.fromkeys(runtimes, 0.0)
    for model in models.values():
        model.predict(items[:batch])  # warm-up: allocations, kernel selection
    for _ in range(rounds):
        for i in range(0, len(items), batch):
            for runtime, model in models.items():
                start = time.perf_counter()
                model.predict(items[i : i + batch])
                spent[runtime] += time.perf_counter() - start
    return {runtime: rounds * len(items) / spent[runtime] for runtime in runtimes}


def mask_ious(asset: str, threads: int = 2, runtimes=RUNTIMES[1:]) -> dict[str, list[float]]:
    """{runtime: [IoU of its face mask vs the torch path's, per cartoon image with a face]}
    through the whole face-mask pipeline (detector, ROIs, parser, merge at 0.5)."""
    from deployments.serving import LocalBatcher
    from serve_app.pipelines.face_mask import FaceMaskParams, face_mask

    images = cartoon_images()
    det = LocalBatcher(detector())

    def masks(runtime: str) -> list[np.ndarray]:
        parse = LocalBatcher(parser(asset, runtime, threads))

        async def go():
            return [(await face_mask(image, FaceMaskParams(), detect=det, parse=parse)).mask for _, image in images]

        return asyncio.run(go())

    reference = masks("torch")
    out = {}
    for runtime in runtimes:
        out[runtime] = [mask_iou(a > 0, b > 0) for a, b in zip(masks(runtime), reference) if b.any()]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed-asset", default="segformer-parser-b5-random")
    ap.add_argument("--iou-assets", nargs="+", default=["face-parser-unet-small", "segformer-parser-b5-random"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-rois", type=int, default=16)
    args = ap.parse_args(argv)
    rates = roi_rates(args.speed_asset, args.threads, args.batch, args.rounds, args.max_rois)
    print(f"\n== parser ROIs/s on CPU, {args.speed_asset}, {args.threads} threads, batches of {args.batch}")
    for runtime, rate in rates.items():
        print(f"  {runtime:10s} {rate:7.2f} ROI/s   x{rate / rates['torch']:.2f} of torch")
    print("\n== face-mask IoU against the torch path (shared cartoon images with a face)")
    for asset in args.iou_assets:
        for runtime, values in mask_ious(asset, args.threads).items():
            print(
                f"  {asset:28s} {runtime:10s} mean {np.mean(values):.4f}  min {np.min(values):.4f}  "
                f"({len(values)} images)"
            )
