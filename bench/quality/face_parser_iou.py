"""Face-parser mask quality: IoU of the face-mask pipeline's binary mask against the
CelebAMask-HQ ground truth of the shared benchmark pairs (benchmark-celebamask-hq-parsing),
for the face labels (skin..l_lip, CelebAMask-HQ ids 1-12) and with hair (13) added.

Each whole 512x512 image is the face ROI (the pairs are aligned face crops, framed like
the pipeline's grown face box); it goes through the pipeline's own face_rois (scaled to
max_size) and merge_masks (threshold), so the number is what /v1/face-mask would draw.
The pairs are from the split the small UNet was trained on: its scores are optimistic.

    python -m bench face_parser_iou [--parsers face-parser-unet-small segformer-parser-tiny]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.harness.figures import mask_iou

BENCHMARK = "benchmark-celebamask-hq-parsing"


def pairs(root: Path):
    """(name, RGB image, ground-truth id map) for every benchmark pair."""
    from PIL import Image

    for image_path in sorted((root / "images").glob("*.jpg")):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        ids = np.asarray(Image.open(root / "masks" / f"{image_path.stem}.png"))  # mode P: pixel = class id
        yield image_path.stem, image, ids


def parser_iou(asset: str, threads: int) -> dict[str, list[float]]:
    """{"face": [IoU per pair], "face+hair": [...]} for one parser checkpoint."""
    from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
    from deployments.types import ParseRequest, Placement
    from serve_app.config.assets import resolve
    from serve_app.pipelines.face_mask import FaceMaskParams, face_rois, merge_masks

    parser = SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(resolve(asset))), Placement(threads=threads))
    scores: dict[str, list[float]] = {"face": [], "face+hair": []}
    for _, image, ids in pairs(resolve(BENCHMARK)):
        h, w = ids.shape
        for key, hair in (("face", False), ("face+hair", True)):
            params = FaceMaskParams(include_hair=hair, expand=0.0)
            ((box, roi),) = face_rois(image, np.array([[0, 0, w, h]], np.float32), params)
            (prob,) = parser.predict([ParseRequest(roi, params.labels)])
            mask = merge_masks((h, w), [box], [prob], params.threshold) > 0
            scores[key].append(mask_iou(mask, np.isin(ids, params.labels)))
    return scores


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parsers", nargs="+", default=["face-parser-unet-small"], help="SegFormerParser assets")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for asset in args.parsers:
        scores = parser_iou(asset, args.threads)
        for key, values in scores.items():
            per_pair = " ".join(f"{v:.3f}" for v in values)
            print(f"{asset:28} {key:10} mean IoU {np.mean(values):.3f}  min {np.min(values):.3f}  ({per_pair})")
