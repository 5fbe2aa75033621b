"""Mask augmentation throughput in augmented images per second (one masked copy of one
image, with its crops, written to disk), in one run on the same images and cores:

  loop        the users' script: one process, one image at a time: decode, RetinaFace +
              FaceMesh (locate_faces), paint and crop (augment_all), write the files
              (the job's own file layout), models with one thread each
  job xN      `python -m serve_app.jobs.runner mask-augment` on Ray Data with --workers N
              (each actor holds both models; --cpus-per-worker CPUs, so as many threads)

Both are timed end to end, model loading included (the job also starts its actors);
the Ray cluster itself is started before the clock. Inputs are the shared photos,
copied --repeat times under distinct names (a job skips nothing: fresh output folders).
The same seed rule and parameters everywhere, so the job's files are compared byte for
byte with the loop's. Run by hand:

    .venv/bin/python -m bench mask_augment [--repeat 4] [--n-augmentations 2] [--crop-style all]
        [--asset RetinaFace=retinaface-det-10g]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness.cluster import start_ray
from bench.harness.endpoints import images_in
from bench.harness.load import report


def stage_inputs(photos: Path, folder: Path, repeat: int) -> list[str]:
    """The shared photos copied `repeat` times as r<k>/<name>: distinct paths, so
    distinct seeds and nothing a job would skip. -> relative paths."""
    rels = []
    for k in range(repeat):
        (folder / f"r{k}").mkdir(parents=True)
        for path in images_in(photos):
            shutil.copy(path, folder / f"r{k}" / path.name)
            rels.append(f"r{k}/{path.name}")
    return rels


def run_loop(folder: Path, rels: list[str], out: Path, args) -> int:
    """The users' script, in-process. -> augmented images written."""
    from deployments.serving import LocalBatcher
    from deployments.types import Placement
    from serve_app.imaging import decode_image
    from serve_app.jobs.mask_augment import JOB, write_files
    from serve_app.jobs.runner import job_models
    from serve_app.pipelines.locate import locate_faces
    from serve_app.pipelines.mask_augment import MaskAugmentParams, MaskAugmentResult, augment_all, dataset_seeded

    params = MaskAugmentParams(n_augmentations=args.n_augmentations, crop_style=args.crop_style)
    # The same model classes and configs as the job (serve config + --asset), one thread each.
    specs, _ = job_models(JOB, argparse.Namespace(serve_config=args.serve_config, asset=args.asset))
    built = {key: cls(cfg, Placement(threads=args.loop_threads)) for key, (cls, cfg) in specs.items()}
    detect, mesh = (LocalBatcher(built[key]) for key in ("detect", "mesh"))
    augmented = 0
    for rel in rels:
        image = decode_image((folder / rel).read_bytes())
        faces = asyncio.run(locate_faces(image, detect, mesh, params.max_num_faces))
        if not faces:
            continue
        mine = dataset_seeded(params, rel)  # the seed rule the job applies to each image
        augmentations = augment_all(image, faces, mine, mine.seed)
        result = MaskAugmentResult(image.shape[1], image.shape[0], mine.seed, faces, augmentations)
        write_files(result, mine, out, rel)
        augmented += len(augmentations)
    for model in built.values():
        getattr(model, "close", lambda: None)()
    return augmented


def run_job(folder: Path, out: Path, workers: int, args) -> int:
    """The batch job through its command line. -> augmented images written."""
    import json

    from serve_app.jobs.runner import main

    argv = [
        "mask-augment",
        "--input",
        str(folder),
        "--output",
        str(out),
        "--workers",
        str(workers),
        "--cpus-per-worker",
        str(args.cpus_per_worker),
        "--batch-size",
        str(args.batch_size),
        "--n-augmentations",
        str(args.n_augmentations),
        "--crop-style",
        args.crop_style,
        "--serve-config",
        args.serve_config,
    ]
    for override in args.asset:
        argv += ["--asset", override]
    if main(argv) != 0:
        raise RuntimeError("the job failed")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [r for r in rows if r.get("error")]
    if errors:
        raise RuntimeError(f"{len(errors)} inputs failed: {errors[:3]}")
    return sum(args.n_augmentations for r in rows if r.get("faces"))


def same_files(a: Path, b: Path) -> tuple[int, int]:
    """(files with the same bytes in both folders, files in `a`), bookkeeping aside."""
    files = [p for p in a.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png")]
    same = sum(
        1 for p in files if (b / p.relative_to(a)).is_file() and (b / p.relative_to(a)).read_bytes() == p.read_bytes()
    )
    return same, len(files)


def main(argv: list[str] | None = None) -> None:
    from serve_app.config.settings import REPO_ROOT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the shared photos (15 each)")
    ap.add_argument("--n-augmentations", type=int, default=2)
    ap.add_argument("--crop-style", default="all")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--loop-threads", type=int, default=1, help="threads per model in the loop (a worker's share)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--serve-config", default=str(REPO_ROOT / "serve_config.yaml"))
    ap.add_argument(
        "--asset",
        action="append",
        default=None,
        metavar="MODEL=ASSET",
        help="weights override for both paths [default: RetinaFace=retinaface-det-500m]",
    )
    args = ap.parse_args(argv)
    args.asset = args.asset or ["RetinaFace=retinaface-det-500m"]

    import ray

    from serve_app.config.assets import resolve

    with tempfile.TemporaryDirectory(prefix="bench_mask_augment_") as tmp:
        tmp = Path(tmp)
        rels = stage_inputs(resolve("test-images-photos"), tmp / "in", args.repeat)
        rates = {}

        start = time.perf_counter()
        augmented = run_loop(tmp / "in", rels, tmp / "loop", args)
        loop = f"loop, 1 process, {args.loop_threads} thread(s) per model"
        rates[loop] = augmented / (time.perf_counter() - start)

        start_ray(num_cpus=max(os.cpu_count() or 1, max(args.workers) * args.cpus_per_worker))
        try:
            for workers in args.workers:
                out = tmp / f"job{workers}"
                start = time.perf_counter()
                done = run_job(tmp / "in", out, workers, args)
                rates[f"job --workers {workers}"] = done / (time.perf_counter() - start)
                if done != augmented:
                    raise RuntimeError(f"job --workers {workers}: {done} augmented images, the loop {augmented}")
                same, total = same_files(tmp / "loop", out)
                print(f"job --workers {workers}: {same}/{total} files byte-identical to the loop's")
        finally:
            ray.shutdown()

    report(
        f"mask-augment, {len(rels)} images ({augmented} augmented images: n_augmentations="
        f"{args.n_augmentations}, crop_style={args.crop_style}), {os.cpu_count()} cores, "
        f"cpus-per-worker {args.cpus_per_worker}, models {', '.join(args.asset)}",
        rates,
        [(f"job --workers {w}", loop) for w in args.workers]
        + (
            [(f"job --workers {args.workers[-1]}", f"job --workers {args.workers[0]}")] if len(args.workers) > 1 else []
        ),
    )
