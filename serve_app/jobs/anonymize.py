"""Batch job `anonymize`: 3D anonymisation of every face of every photo, in the seed's
layout under OUT (serve_app/jobs/anonymize_files.py lists it): face3d/, seg/, anon/,
render/ and the anonymised photo in anonymized/.

`--steps` (default all) runs any contiguous range of the seed's four steps (face3d,
segmentation, anonymization, renderer), the first reading the folder its predecessor
wrote (serve_app/jobs/anonymize_steps.py): `--steps renderer --img_size 1024` renders
again without reconstructing. All four run as one pipeline in memory, the HTTP
endpoint's. Resumable: an input is done when its row ran the asked steps with the same
parameters and its files exist; one error row per failed input; --stop-on-error stops
at the first.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from serve_app import display
from serve_app.config.model_tier import morphable_model
from serve_app.imaging import decode_image
from serve_app.jobs.anonymize_files import AnonMesh, Writer
from serve_app.jobs.anonymize_steps import STEPS, face_record, parse_steps, run_steps
from serve_app.jobs.runner import BatchJob, Models
from serve_app.pipelines.anonymize import SPEC, AnonymizeResult, anonymize

HELP = "3D face anonymisation (RetinaFace -> TDDFA -> morph to the mean face -> MeshRenderer)"

_bfm: dict[str, tuple] = {}  # per worker process: the morphable model, loaded once


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps",
        type=parse_steps,
        default=STEPS,
        metavar="all|STEP[,STEP...]",
        help="the seed's steps to run, contiguous, in order: face3d, segmentation, anonymization, renderer; "
        "the first reads what the step before it wrote under --output [default: all]",
    )


def options(args) -> dict:
    from serve_app.config.assets import resolve_for_serving
    from serve_app.config.model_tier import MORPHABLE_MODEL, MORPHABLE_MODEL_FILES

    # Its files resolved here, in the driver: a missing one stops the job with one line
    # (serve_app/jobs/runner.py) instead of failing every input in the workers.
    for asset in MORPHABLE_MODEL_FILES.values():
        resolve_for_serving(asset)
    # The asset actually used goes to the workers: a stand-in allowed here (by
    # FACEGRAPH_ALLOW_STAND_INS in the driver's env) is the one they load, whatever theirs.
    used, _ = resolve_for_serving(MORPHABLE_MODEL)
    return {"morphable_model": used, "steps": args.steps}


async def process(path: Path, models: Models, opts: dict) -> dict:
    if opts["morphable_model"] not in _bfm:
        _bfm[opts["morphable_model"]] = await asyncio.to_thread(morphable_model, opts["morphable_model"])
    bfm, description = _bfm[opts["morphable_model"]]
    rel, params, steps = str(path.relative_to(opts["input"])), opts["params"], opts["steps"]
    output = Path(opts["output"])
    image = await asyncio.to_thread(lambda: decode_image(path.read_bytes()))
    if steps == STEPS:
        result = await anonymize(image, params, bfm, **models)
        outputs = await asyncio.to_thread(write_files, result, bfm, output, rel)
        records = [face_record(a.face) for a in result.faces]
    else:
        records, outputs = await run_steps(steps, image, params, bfm, models, output, rel)
    faces = [
        {
            "box": display.box(r["box"]),
            "score": display.score(r["score"]),
            "pose": {k: round(r["pose"][k], 1) for k in ("yaw", "pitch", "roll")},
        }
        for r in records
    ]
    return {
        "faces": faces,
        "morphable_model": description,
        "steps": list(steps),
        "params": params.model_dump(),
        "outputs": outputs,
    }


def done(row: dict, opts: dict) -> bool:
    """An earlier row answers this run when it ran these steps (or more) with the same
    parameters: `--steps renderer --img_size 1024` after a full run renders again."""
    return set(opts["steps"]) <= set(row.get("steps", ())) and row.get("params") == opts["params"].model_dump()


def write_files(result: AnonymizeResult, bfm, output: Path, rel: str) -> dict[str, str]:
    """Every step's files from the pipeline's one in-memory run."""
    out = Writer(output, rel)
    out.face3d((result.height, result.width), [a.face for a in result.faces])
    out.seg(result.segmented)
    out.anon([AnonMesh(a.vertices, a.model_vertices, a.texture, bfm.tri, bfm.uv) for a in result.faces])
    out.render([a.frontal for a in result.faces], result.anonymized)
    return out.outputs


JOB = BatchJob(SPEC, HELP, process, add_arguments=add_arguments, options=options, done=done)
