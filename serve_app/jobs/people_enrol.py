"""Batch job `people-enrol`: a dataset laid out one folder per person (the folder's name
is the person's name, as LFW and most face datasets are) enrolled into the people
gallery.

Per image (Ray Data actors): its largest face, embedded, as /v1/people enrols (an
image with no face, or a largest face under the quality floor, is an error row); the
160x160 aligned headshot is written to <output>/<rel>.face.jpg (the crop the gallery
keeps when keep_crops is on). After all rows are in (finalize, on the driver): one
person per folder, all their faces in one transaction (serve_app/jobs/gallery_enrol.py,
which also makes re-runs add only what is new). A file directly under --input belongs
to no person: an error row.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from serve_app import errors
from serve_app.config.spec import PipelineSpec
from serve_app.imaging import decode_image
from serve_app.jobs import gallery_enrol
from serve_app.jobs.runner import BatchJob, Models, output_path, write_atomic
from serve_app.pipelines.people import PeopleParams, largest_faces

HELP = "enrol one person per folder (the folder name is the name) into the people gallery"
ACTOR = "batch:people-enrol"
SPEC = PipelineSpec("people_enrol", PeopleParams, {"detect": "RetinaFace", "embed": "ArcFace"})


async def process(path: Path, models: Models, opts: dict) -> dict:
    rel = Path(path.relative_to(opts["input"]))
    if len(rel.parts) < 2:
        raise errors.ApiError(422, "no_person_folder", "images go in a folder named after their person")

    async def load():
        return await asyncio.to_thread(lambda: decode_image(path.read_bytes()))

    found = await largest_faces([load], opts["params"], models["detect"], models["embed"], max_concurrent_images=1)
    if found.failures:
        failure = found.failures[0]
        raise errors.ApiError(422, failure.code, failure.message)
    headshot = output_path(Path(opts["output"]), str(rel), "face.jpg")
    await asyncio.to_thread(write_atomic, headshot, found.headshots[0])
    return {
        "person": rel.parts[0],
        "embedding": found.embeddings[0].tolist(),
        "outputs": {"face": str(headshot.relative_to(opts["output"]))},
    }


def options(args: argparse.Namespace) -> dict:
    return gallery_enrol.gallery_options(args)


def finalize(rows: list[dict], output: Path, opts: dict) -> None:
    groups: dict[str, gallery_enrol.Group] = {}
    for row in rows:
        if row.get("error"):
            continue
        name = row["person"]
        group = groups.setdefault(name, gallery_enrol.Group(name, {"source": "people-enrol", "folder": name}))
        group.add(row["path"], row["embedding"], output / row["outputs"]["face"])
    done = gallery_enrol.enrol_groups(list(groups.values()), output, opts, ACTOR)
    print(gallery_enrol.summary("people-enrol", done))


JOB = BatchJob(SPEC, HELP, process, options=options, finalize=finalize)
