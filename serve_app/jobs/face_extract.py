"""Batch job `face-extract`: faces, embeddings and aligned headshots for a folder of
photos, de-duplicated across the whole dataset.

Per image (Ray Data actors, models batched across the images of a block):
<rel>.face<i>.jpg, the 160x160 aligned headshot of each face, and a results.jsonl row
holding every face's box, score, landmarks and embedding. After all rows are in
(finalize, on the driver): de-duplication over every face of the dataset, in input
order, and <output>/faces.parquet: one row per face with its cluster id, plus one
error row per input that could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import numpy as np

from deployments.arcface import ArcFace, ArcFaceConfig
from deployments.retinaface import RetinaFace, RetinaFaceConfig
from serve_app.assets import resolve_for_serving
from serve_app.batch import BatchJob, Models, output_path
from serve_app.dedup import deduplicate
from serve_app.imaging import decode_image
from serve_app.pipelines.face_extract import ExtractParams, faces_in_image

PARQUET_FILE = "faces.parquet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--similarity-threshold", type=float, default=0.4,
                   help="cosine similarity at or above which two faces are one person")
    p.add_argument("--min-face-size", type=float, default=20.0, help="drop faces whose shorter box side is smaller")
    p.add_argument("--det-size", type=int, default=640, help="detector letterbox side (multiple of 32)")
    p.add_argument("--det-thresh", type=float, default=0.5)
    p.add_argument("--detector-asset", default="retinaface-det-10g")
    p.add_argument("--recogniser-asset", default="arcface-w600k-r50")


def models(args: argparse.Namespace) -> dict:
    _, detector = resolve_for_serving(args.detector_asset)
    _, recogniser = resolve_for_serving(args.recogniser_asset)
    return {
        "detect": (RetinaFace, RetinaFaceConfig(str(detector), args.det_size, args.det_thresh)),
        "embed": (ArcFace, ArcFaceConfig(str(recogniser))),
    }


def options(args: argparse.Namespace) -> dict:
    return {
        "params": ExtractParams(det_size=args.det_size, min_face_size=args.min_face_size,
                                similarity_threshold=args.similarity_threshold),
        "input": str(Path(args.input).resolve()),
    }


async def process(path: Path, models: Models, opts: dict) -> dict:
    # Off the loop: the other rows of the block decode and detect meanwhile.
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    faces = await faces_in_image(image, 0, opts["params"], models["detect"], models["embed"])
    output, rel = Path(opts["output"]), str(path.relative_to(opts["input"]))
    rows, outputs = [], {}
    for face in faces:
        target = output_path(output, rel, f"face{face.face_index}.jpg")
        target.write_bytes(face.headshot_jpeg)
        headshot = str(target.relative_to(output))
        outputs[f"face{face.face_index}"] = headshot
        rows.append({
            "face_id": face.face_id, "face_index": face.face_index,
            "bbox": [round(float(v), 2) for v in face.bbox], "score": round(face.score, 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
            "embedding": face.embedding.tolist(), "headshot": headshot,
        })
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "faces": rows, "outputs": outputs}


def finalize(rows: list[dict], output: Path, args: argparse.Namespace) -> None:
    """De-duplicate every face of the dataset (input order, then face order) and write
    faces.parquet. Re-run in full on every run, so resumed runs cluster everything."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    faces = [(row["path"], face) for row in rows if not row.get("error") for face in row.get("faces", [])]
    if faces:
        dedup = deduplicate(np.array([f["embedding"] for _, f in faces], np.float32), args.similarity_threshold)
        kept = dedup.kept
        cluster_of_leader = {int(k): c for c, k in enumerate(kept)}
        clusters = [cluster_of_leader[int(lead)] for lead in dedup.leader]
    else:
        dedup, clusters = None, []
    records = []
    for i, (path, face) in enumerate(faces):
        lead = int(dedup.leader[i])
        records.append({
            "source_path": path, "error": None, "face_index": face["face_index"], "face_id": face["face_id"],
            "bbox": face["bbox"], "score": face["score"], "landmarks": [v for p in face["landmarks"] for v in p],
            "embedding": face["embedding"], "headshot_path": face["headshot"], "cluster_id": clusters[i],
            "is_representative": lead == i, "representative_face_id": faces[lead][1]["face_id"],
            "similarity_to_representative": float(dedup.similarity[i]),
        })
    # bbox and landmarks (x0, y0, ... x4, y4) as plain lists: pyarrow 20 cannot read back
    # nulls (the error rows) in fixed-size lists.
    schema = pa.schema([
        ("source_path", pa.string()), ("error", pa.string()), ("face_index", pa.int32()), ("face_id", pa.string()),
        ("bbox", pa.list_(pa.float32())), ("score", pa.float32()),
        ("landmarks", pa.list_(pa.float32())),
        ("embedding", pa.list_(pa.float32())), ("headshot_path", pa.string()), ("cluster_id", pa.int32()),
        ("is_representative", pa.bool_()), ("representative_face_id", pa.string()),
        ("similarity_to_representative", pa.float32()),
    ])
    blank = dict.fromkeys(schema.names)
    records += [{**blank, "source_path": row["path"], "error": row["error"]} for row in rows if row.get("error")]
    table = pa.Table.from_pylist(records, schema=schema)
    tmp = output / f".{PARQUET_FILE}.part"
    pq.write_table(table, tmp)
    os.replace(tmp, output / PARQUET_FILE)  # never a half-written file under the real name
    unique = len(set(clusters))
    print(f"face-extract: {len(faces)} faces, {unique} unique people (threshold {args.similarity_threshold:g}), "
          f"{sum(1 for r in rows if r.get('error'))} unreadable inputs -> {output / PARQUET_FILE}")


JOB = BatchJob(
    name="face-extract",
    help="faces, embeddings and headshots, de-duplicated across the dataset (RetinaFace -> ArcFace)",
    add_arguments=add_arguments, models=models, options=options, process=process, finalize=finalize,
)
