"""Batch job `face-extract`: faces, embeddings and aligned headshots for a folder of
photos, de-duplicated across the whole dataset.

Per image (Ray Data actors, models batched across the images of a block):
<rel>.face<i>.jpg, the 160x160 aligned headshot of each face, and a results.jsonl row
holding every face's box, score, landmarks and embedding. After all rows are in
(finalize, on the driver): de-duplication over every face of the dataset, in input
order, with the endpoint's rules (faces of one input are never merged; faces under the
quality floor are never merged; the threshold is the recogniser's calibrated one unless
--similarity-threshold is given), and <output>/faces.parquet: one row per face with its
cluster id and low_quality flag, plus one error row per input that could not be read.

With --enrol, each unique person found (a cluster; faces under the quality floor are
no identity evidence and are left out) is then enrolled into the people gallery with
all of their faces, unnamed (serve_app/jobs/gallery_enrol.py; a re-run adds only faces
not enrolled before).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import numpy as np

from serve_app import display
from serve_app.imaging import decode_image
from serve_app.jobs.runner import BatchJob, Models, model_blocks, output_path, write_atomic
from serve_app.pipelines.face_extract import (
    SPEC,
    FaceExtractParams,
    cluster_faces,
    faces_in_image,
    meets_quality_floor,
)

HELP = "faces, embeddings and headshots, de-duplicated across the dataset (RetinaFace -> ArcFace)"

PARQUET_FILE = "faces.parquet"


async def process(path: Path, models: Models, opts: dict) -> dict:
    # Off the loop: the other rows of the block decode and detect meanwhile.
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    faces = await faces_in_image(image, 0, opts["params"], **models)
    output, rel = Path(opts["output"]), str(path.relative_to(opts["input"]))
    outputs = await asyncio.to_thread(write_headshots, faces, output, rel)
    params = opts["params"]
    rows = [
        {
            "face_id": face.face_id,
            "face_index": face.face_index,
            "bbox": display.box(face.bbox),
            "score": display.score(face.score),
            "landmarks": display.points(face.landmarks),
            "embedding": face.embedding.tolist(),
            "headshot": outputs[f"face{face.face_index}"],
            # Decided here, on the detector's raw floats: the row keeps rounded ones.
            "low_quality": not meets_quality_floor(face.bbox, face.score, params),
        }
        for face in faces
    ]
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "faces": rows, "outputs": outputs}


def write_headshots(faces, output: Path, rel: str) -> dict[str, str]:
    outputs = {}
    for face in faces:
        target = output_path(output, rel, f"face{face.face_index}.jpg")
        write_atomic(target, face.headshot_jpeg)  # a killed job leaves no half-written JPEG
        outputs[f"face{face.face_index}"] = str(target.relative_to(output))
    return outputs


def recogniser_weights(args: argparse.Namespace) -> str:
    """The weights the job's ArcFace serves (its serve-config block, --asset applied)."""
    from serve_app.config.model_tier import served_weights

    name = SPEC.models["embed"]
    return served_weights(name, model_blocks(args).get(name))


def resolve(params: FaceExtractParams, args: argparse.Namespace) -> FaceExtractParams:
    """--similarity-threshold, else the calibrated value of the recogniser weights this
    job's models use: resolved before any work (no threshold to use stops the job now,
    not after every image)."""
    from serve_app.config.assets import AssetCorrupt, AssetMissing
    from serve_app.config.model_tier import NoCalibratedThreshold, calibrated_threshold

    try:
        return params.with_threshold(lambda: calibrated_threshold(recogniser_weights(args)))
    except NoCalibratedThreshold as exc:
        raise SystemExit(f"error: {exc}; give --similarity-threshold") from None
    except (AssetMissing, AssetCorrupt):
        return params  # the weights themselves are unusable: building the models reports that


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--enrol",
        action="store_true",
        help="enrol each unique person found into the people gallery (the FaceGallery block of --serve-config)",
    )


def options(args: argparse.Namespace) -> dict:
    """Where the threshold came from, for faces.parquet's metadata; with --enrol, the gallery."""
    from serve_app.config.assets import AssetCorrupt, AssetMissing
    from serve_app.jobs import gallery_enrol

    enrol = gallery_enrol.gallery_options(args) if getattr(args, "enrol", False) else {}
    if args.similarity_threshold is not None:
        return {"threshold_source": "--similarity-threshold", **enrol}
    try:
        return {"threshold_source": f"calibrated for {recogniser_weights(args)}", **enrol}
    except (AssetMissing, AssetCorrupt):
        return {"threshold_source": "calibrated", **enrol}  # unusable weights: building the models reports that


def finalize(rows: list[dict], output: Path, opts: dict) -> None:
    """De-duplicate every face of the dataset (input order, then face order) with the
    pipeline's own clustering step, and write faces.parquet. Re-run in full on every run,
    so resumed runs cluster everything."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    params = opts["params"]
    threshold, source = params.similarity_threshold, opts["threshold_source"]
    indexed = [(i, row) for i, row in enumerate(rows) if not row.get("error")]
    faces = [(row["path"], face) for _, row in indexed for face in row.get("faces", [])]
    # Cannot-link by input: faces of one photo are never one person.
    groups = np.array([i for i, row in indexed for _ in row.get("faces", [])], int)
    low_quality = np.array([face_low_quality(f, params) for _, f in faces], bool)
    if faces:
        dedup = cluster_faces(np.array([f["embedding"] for _, f in faces], np.float32), groups, low_quality, params)
        kept = dedup.kept
        cluster_of_leader = {int(k): c for c, k in enumerate(kept)}
        clusters = [cluster_of_leader[int(lead)] for lead in dedup.leader]
    else:
        dedup, clusters = None, []
    records = []
    for i, (path, face) in enumerate(faces):
        lead = int(dedup.leader[i])
        records.append(
            {
                "source_path": path,
                "error": None,
                "face_index": face["face_index"],
                "face_id": face["face_id"],
                "bbox": face["bbox"],
                "score": face["score"],
                "landmarks": [v for p in face["landmarks"] for v in p],
                "embedding": face["embedding"],
                "headshot_path": face["headshot"],
                "cluster_id": clusters[i],
                "low_quality": bool(low_quality[i]),
                "is_representative": lead == i,
                "representative_face_id": faces[lead][1]["face_id"],
                "similarity_to_representative": float(dedup.similarity[i]),
            }
        )
    # bbox and landmarks (x0, y0, ... x4, y4) as plain lists: pyarrow 20 cannot read back
    # nulls (the error rows) in fixed-size lists.
    schema = pa.schema(
        [
            ("source_path", pa.string()),
            ("error", pa.string()),
            ("face_index", pa.int32()),
            ("face_id", pa.string()),
            ("bbox", pa.list_(pa.float32())),
            ("score", pa.float32()),
            ("landmarks", pa.list_(pa.float32())),
            ("embedding", pa.list_(pa.float32())),
            ("headshot_path", pa.string()),
            ("cluster_id", pa.int32()),
            ("low_quality", pa.bool_()),
            ("is_representative", pa.bool_()),
            ("representative_face_id", pa.string()),
            ("similarity_to_representative", pa.float32()),
        ],
        metadata={
            "similarity_threshold": str(threshold),
            "similarity_threshold_source": source,
            "quality_min_face_size": str(params.quality_min_face_size),
            "quality_min_score": str(params.quality_min_score),
        },
    )
    blank = dict.fromkeys(schema.names)
    records += [{**blank, "source_path": row["path"], "error": row["error"]} for row in rows if row.get("error")]
    table = pa.Table.from_pylist(records, schema=schema)
    tmp = output / f".{PARQUET_FILE}.part"
    pq.write_table(table, tmp)
    os.replace(tmp, output / PARQUET_FILE)  # never a half-written file under the real name
    unique = len(set(clusters))
    print(
        f"face-extract: {len(faces)} faces, {unique} unique people ({int(low_quality.sum())} of them low quality, "
        f"never merged; threshold {threshold:g}, {source}), "
        f"{sum(1 for r in rows if r.get('error'))} unreadable inputs -> {output / PARQUET_FILE}"
    )
    if "gallery" in opts:
        enrol_clusters(faces, clusters, low_quality, output, opts)


def enrol_clusters(faces: list[tuple[str, dict]], clusters: list[int], low_quality, output: Path, opts: dict) -> None:
    """--enrol: one unnamed person per cluster, with every face of it (by face id)."""
    from serve_app.jobs import gallery_enrol

    groups: dict[int, gallery_enrol.Group] = {}
    metadata = {"source": "face-extract", "input": opts["input"]}
    for (_, face), cluster, low in zip(faces, clusters, low_quality):
        if low:
            continue
        group = groups.setdefault(cluster, gallery_enrol.Group(None, dict(metadata)))
        group.add(face["face_id"], face["embedding"], output / face["headshot"])
    done = gallery_enrol.enrol_groups(list(groups.values()), output, opts, "batch:face-extract")
    print(gallery_enrol.summary("face-extract", done))


def face_low_quality(face: dict, params: FaceExtractParams) -> bool:
    """The row's flag, decided on raw floats when it was written; rows of an earlier
    version that have none are judged on their stored (rounded) values."""
    if "low_quality" in face:
        return bool(face["low_quality"])
    return not meets_quality_floor(face["bbox"], face["score"], params)


JOB = BatchJob(SPEC, HELP, process, add_arguments=add_arguments, options=options, resolve=resolve, finalize=finalize)
