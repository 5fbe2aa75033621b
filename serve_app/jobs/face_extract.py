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

from serve_app import display, spec
from serve_app.batch import BatchJob, Models, output_path
from serve_app.dedup import deduplicate
from serve_app.imaging import decode_image
from serve_app.pipelines.face_extract import SPEC, faces_in_image

PARQUET_FILE = "faces.parquet"


async def process(path: Path, models: Models, opts: dict) -> dict:
    # Off the loop: the other rows of the block decode and detect meanwhile.
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    faces = await faces_in_image(image, 0, opts["params"], **models)
    output, rel = Path(opts["output"]), str(path.relative_to(opts["input"]))
    outputs = await asyncio.to_thread(write_headshots, faces, output, rel)
    rows = [{
        "face_id": face.face_id, "face_index": face.face_index, "bbox": display.box(face.bbox),
        "score": display.score(face.score), "landmarks": display.points(face.landmarks),
        "embedding": face.embedding.tolist(), "headshot": outputs[f"face{face.face_index}"],
    } for face in faces]
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "faces": rows, "outputs": outputs}


def write_headshots(faces, output: Path, rel: str) -> dict[str, str]:
    outputs = {}
    for face in faces:
        target = output_path(output, rel, f"face{face.face_index}.jpg")
        target.write_bytes(face.headshot_jpeg)
        outputs[f"face{face.face_index}"] = str(target.relative_to(output))
    return outputs


def finalize(rows: list[dict], output: Path, args: argparse.Namespace) -> None:
    """De-duplicate every face of the dataset (input order, then face order) and write
    faces.parquet. Re-run in full on every run, so resumed runs cluster everything."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    threshold = spec.from_arguments(SPEC.params, args).similarity_threshold
    faces = [(row["path"], face) for row in rows if not row.get("error") for face in row.get("faces", [])]
    if faces:
        dedup = deduplicate(np.array([f["embedding"] for _, f in faces], np.float32), threshold)
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
    print(f"face-extract: {len(faces)} faces, {unique} unique people (threshold {threshold:g}), "
          f"{sum(1 for r in rows if r.get('error'))} unreadable inputs -> {output / PARQUET_FILE}")


JOB = BatchJob(
    name="face-extract", spec=SPEC,
    help="faces, embeddings and headshots, de-duplicated across the dataset (RetinaFace -> ArcFace)",
    process=process, finalize=finalize,
)
