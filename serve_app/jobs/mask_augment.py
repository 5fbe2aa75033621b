"""Batch job `mask-augment`: masks painted on every face and aligned crops, for building
masked-face recognition training sets (the users' single-process script, on Ray Data).

Per input, mirrored under OUT and numbered so nothing overwrites anything:
  <rel>_f<face>_a<augmentation>_<style>.jpg   one crop per face, augmentation and style
  <rel>_a<augmentation>_masked.png            the whole image, every face masked (--no-crop)
  <rel>_a<augmentation>_original.png          the whole image unmasked (--no-mask --no-crop)
and after the run OUT/logs.csv (one line per crop, per face on a whole image, per failed input) and
OUT/missed_images.txt (inputs with no face). The seed of each image is derived from
--seed and its path, so a re-run (or one image run alone) gives the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from pathlib import Path

from serve_app.imaging import decode_image, encode_jpeg, encode_png
from serve_app.jobs.runner import BatchJob, Models, write_atomic
from serve_app.pipelines.mask_augment import SPEC, MaskAugmentResult, dataset_seeded, mask_augment

LOGS_FILE = "logs.csv"
MISSED_FILE = "missed_images.txt"
LOG_COLUMNS = (
    "image_path",
    "face_index",
    "augmentation",
    "mask_type",
    "mask_color",
    "crop_style",
    "output_path",
    "error",
)

HELP = "masks painted on every face and aligned crops (RetinaFace -> FaceMesh -> MaskTheFace templates)"
CROP_QUALITY = 95


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-crop",
        action="store_true",
        help="no crops: write the whole masked image instead (the same as --crop-style none)",
    )


def options(args: argparse.Namespace) -> dict:
    return {"no_crop": args.no_crop}


async def process(path: Path, models: Models, opts: dict) -> dict:
    params = opts["params"]
    if opts["no_crop"]:
        params = params.model_copy(update={"crop_style": "none"})
    rel = str(path.relative_to(opts["input"]))
    params = dataset_seeded(params, rel)
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    result = await mask_augment(image, params, **models)
    logs, outputs = await asyncio.to_thread(write_files, result, params, Path(opts["output"]), rel)
    return {"seed": result.seed, "faces": len(result.faces), "logs": logs, "outputs": outputs}


def write_files(result: MaskAugmentResult, params, output: Path, rel: str) -> tuple[list[dict], dict[str, str]]:
    logs, outputs = [], {}

    def log(key: str, target: str | None, **fields) -> None:
        if target is not None:
            outputs[key] = target
        logs.append({"image_path": rel, **fields, "output_path": target or ""})

    for a, aug in enumerate(result.augmentations):
        whole = None
        if not params.styles:
            whole = f"{rel}_a{a}_{'original' if params.no_mask else 'masked'}.png"
            write_atomic(output / whole, encode_png(aug.image))
        for i, fa in enumerate(aug.faces):
            common = dict(
                face_index=i,
                augmentation=a,
                mask_type=fa.mask_type or "",
                mask_color=fa.mask_color or fa.texture or "",
                error=fa.error or "",
            )
            for style, crop in fa.crops.items():
                name = f"{rel}_f{i}_a{a}_{style}.jpg"
                write_atomic(output / name, encode_jpeg(crop, CROP_QUALITY))
                log(name, name, crop_style=style, **common)
            if whole is not None:  # the whole image: one line per face on it, naming that face's mask
                log(whole, whole, crop_style="", **common)
            elif not fa.crops and fa.error:
                log(f"f{i}_a{a}", None, crop_style="", **common)
    return logs, outputs


def finalize(rows: list[dict], output: Path, opts: dict) -> None:
    """logs.csv and missed_images.txt over every input, this run's and earlier runs'."""
    lines = []
    for row in rows:
        if row.get("error"):
            lines.append({**dict.fromkeys(LOG_COLUMNS, ""), "image_path": row["path"], "error": row["error"]})
        lines.extend(row.get("logs", []))
    with open(output / f".{LOGS_FILE}.part", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows({k: line.get(k, "") for k in LOG_COLUMNS} for line in lines)
    (output / f".{LOGS_FILE}.part").replace(output / LOGS_FILE)
    missed = [row["path"] for row in rows if not row.get("error") and row.get("faces") == 0]
    write_atomic(output / MISSED_FILE, "".join(p + "\n" for p in missed).encode())
    written = len({line["output_path"] for line in lines if line["output_path"]})
    print(f"mask-augment: {written} files, {len(missed)} images without a face -> {output / LOGS_FILE}")


JOB = BatchJob(SPEC, HELP, process, add_arguments=add_arguments, options=options, finalize=finalize)
