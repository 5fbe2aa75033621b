"""Face extraction throughput, three ways, in one run on the same images and cores:

  1. plain:     insightface's detector then recogniser per image, one image at a time,
                one face at a time, each file read in the loop (how users run it today);
  2. pipeline:  our pipeline glue in-process, models behind LocalBatcher, many images
                in flight (the compute limit of this box, no HTTP or Ray);
  3. http:      POST /extract-faces over HTTP on a local Ray Serve graph (the model
                tier with the same weights + the face_extract app), concurrent clients,
                one image per request, ArcFace scaled to one replica per core.

Plus the two batching questions: does a multi-image predict() help the detector, and
how much does a true batched forward help ArcFace. Run by hand:

    python -m bench face_extract [--rounds 3] [--clients 2 4 8 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import warnings

import numpy as np

from bench.harness.cluster import delete_apps, deploy_model_tier, shutdown, start_ray, start_serve
from bench.harness.endpoints import build_model, extract_faces_body, images_in
from bench.harness.load import http_run, report
from bench.perf.baselines import PlainLoop
from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from deployments.types import Placement
from serve_app.config.assets import resolve
from serve_app.config.model_tier import recogniser_threshold
from serve_app.faces.align import aligned_crops
from serve_app.imaging import decode_image
from serve_app.pipelines.face_extract import SPEC, FaceExtractParams, extract_faces


def bench_plain(paths, args) -> tuple[float, int]:
    """images/s and faces of PlainLoop over `paths`, args.rounds times (after a warm-up:
    first runs allocate, not part of the loop's steady rate)."""
    loop = PlainLoop(args.detector, args.recogniser)
    loop.run(paths[:1])
    start = time.perf_counter()
    faces = sum(loop.run(paths) for _ in range(args.rounds))
    return len(paths) * args.rounds / (time.perf_counter() - start), faces


def models(args, threads: int):
    """Our model classes, as the pipeline and the batching measurements use them."""
    return build_model("RetinaFace", args.detector, threads), build_model("ArcFace", args.recogniser, threads)


def bench_pipeline(paths, args) -> tuple[float, int, dict, dict]:
    """Our glue in-process: every image of a round in flight, models batched."""
    detector, recogniser = models(args, args.model_threads)
    detect, embed = LocalBatcher(detector), LocalBatcher(recogniser)
    blobs = [p.read_bytes() for p in paths]

    def loader(data):
        async def load():
            return await asyncio.to_thread(decode_image, data)

        return load

    async def go():
        faces = 0
        for _ in range(args.rounds):
            result = await extract_faces(
                [loader(b) for b in blobs],
                FaceExtractParams(min_face_size=0).with_threshold(lambda: recogniser_threshold(args.recogniser)),
                detect=detect,
                embed=embed,
            )
            faces += len(result.faces)
        return faces

    start = time.perf_counter()
    faces = asyncio.run(go())
    rate = len(blobs) * args.rounds / (time.perf_counter() - start)
    return rate, faces, dict(detect.batch_sizes), dict(embed.batch_sizes)


def bench_batching(paths, args) -> dict[str, float]:
    detector, recogniser = models(args, args.model_threads)
    images = [decode_image(p.read_bytes()) for p in paths][:8]
    detector.predict(images[:1])
    out = {}
    start = time.perf_counter()
    for _ in range(args.rounds):
        for img in images:
            detector.predict([img])
    per_image = lambda: (time.perf_counter() - start) / (len(images) * args.rounds) * 1000
    out["detector, one image per predict (ms/image)"] = per_image()
    start = time.perf_counter()
    for _ in range(args.rounds):
        found = detector.predict(images)
    out["detector, 8 images per predict (ms/image)"] = per_image()
    out.update(forced_batch_axis(detector, args))
    crops = [aligned_crops(img, face.five_points(), (112,))[0] for img, faces in zip(images, found) for face in faces]
    crops = (crops * 64)[:64]
    recogniser.predict(crops[:1])
    start = time.perf_counter()
    for c in crops:
        recogniser.predict([c])
    out["ArcFace, batch of 1 (ms/face)"] = (time.perf_counter() - start) / len(crops) * 1000
    for size in (8, 32):
        start = time.perf_counter()
        for i in range(0, len(crops), size):
            recogniser.predict(crops[i : i + size])
        out[f"ArcFace, batch of {size} (ms/face)"] = (time.perf_counter() - start) / len(crops) * 1000
    return out


def forced_batch_axis(detector: RetinaFace, args) -> dict[str, float]:
    """The exported detector fixes its batch axis to 1. Make it symbolic in a copy of the
    graph (the outputs are reshaped to [-1, k], so a batch comes out image-major) and
    compare one 8-image forward with 8 single forwards on the same letterboxed input."""
    import onnx
    import onnxruntime

    from deployments.runtime import session_options

    graph = onnx.load(str(resolve(args.detector)))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for output in graph.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.dim_param = "?"
    opts = session_options(Placement(threads=args.model_threads))
    batched = onnxruntime.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    single = onnxruntime.InferenceSession(str(resolve(args.detector)), opts, providers=["CPUExecutionProvider"])
    name = single.get_inputs()[0].name
    blob = np.random.default_rng(0).uniform(-1, 1, (8, 3, 640, 640)).astype(np.float32)
    single.run(None, {name: blob[:1]}), batched.run(None, {name: blob})
    start = time.perf_counter()
    ones = [single.run(None, {name: blob[i : i + 1]}) for i in range(8)]
    per_image = (time.perf_counter() - start) / 8 * 1000
    start = time.perf_counter()
    together = batched.run(None, {name: blob})
    forced = (time.perf_counter() - start) / 8 * 1000
    drift = float(np.abs(np.concatenate([o[0] for o in ones]) - together[0]).max())
    return {
        "detector graph, batch axis forced, 1 image/forward (ms)": per_image,
        "detector graph, batch axis forced, 8 images/forward (ms)": forced,
        "  max score change from forcing the batch axis": drift,
    }


def bench_http(paths, args) -> tuple[dict[int, float], dict]:
    from ray import serve

    from deployments.serving import model_deployment
    from serve_app.apps.face_extract import FaceExtractArgs, build
    from serve_app.config.model_tier import MODEL_APP

    start_ray()
    base = start_serve()
    try:
        # The model tier with the bench's weights, ArcFace (the bulk of the compute) scaled
        # out to --arcface-replicas replicas as serve_config.yaml autoscaling would. Each
        # replica has half a CPU, which Ray's placement turns into one thread. Batch
        # sizes: the adapter's default for the detector (images), the in-process
        # LocalBatcher's cap for ArcFace (faces, its work unit, in both paths).
        deploy_model_tier(
            {
                "RetinaFace": model_deployment(
                    RetinaFace,
                    RetinaFaceConfig(model_path=str(resolve(args.detector))),
                    args.detector,
                    ray_actor_options={"num_cpus": 0.5},
                    user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
                ),
                "ArcFace": model_deployment(
                    ArcFace,
                    ArcFaceConfig(model_path=str(resolve(args.recogniser))),
                    args.recogniser,
                    num_replicas=args.arcface_replicas,
                    ray_actor_options={"num_cpus": 0.5},
                    user_config={"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
                ),
            }
        )
        serve.run(build(FaceExtractArgs()), name=SPEC.name, route_prefix="/")
        bodies = [extract_faces_body([p.read_bytes()], min_face_size=0) for p in paths]
        rates = {
            clients: http_run(
                lambda client, i: client.post(base + "/extract-faces", json=bodies[i % len(bodies)]),
                requests=max(len(bodies) * args.rounds, 2 * clients),
                clients=clients,
            ).rate
            for clients in args.clients
        }
        stats = serve.get_deployment_handle("ArcFace", app_name=MODEL_APP).batch_stats.remote().result()
        delete_apps(SPEC.name, MODEL_APP)
        return rates, stats
    finally:
        shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="test-images-photos", help="asset name of a folder of photos")
    parser.add_argument("--detector", default="retinaface-det-500m")
    parser.add_argument("--recogniser", default="arcface-mobilefacenet-128d")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the image set per measurement")
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[2, 4, 8, 16],
        help="concurrent HTTP clients; the best count is compared",
    )
    parser.add_argument(
        "--model-threads",
        type=int,
        default=os.cpu_count(),
        help="ONNX threads per model in-process (default: every core, as the plain loop)",
    )
    parser.add_argument(
        "--arcface-replicas",
        type=int,
        default=os.cpu_count(),
        help="ArcFace replicas in the served graph (each one thread)",
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    paths = images_in(resolve(args.images))
    print(
        f"{len(paths)} images from {args.images}, {args.rounds} rounds, {os.cpu_count()} CPUs, "
        f"{args.detector} + {args.recogniser}\n"
    )

    plain, plain_faces = bench_plain(paths, args)
    pipe, pipe_faces, det_batches, emb_batches = bench_pipeline(paths, args)
    assert pipe_faces == plain_faces, (pipe_faces, plain_faces)  # the same work, done differently
    http_rates, served_batches = bench_http(paths, args)
    best_clients, http = max(http_rates.items(), key=lambda cr: cr[1])
    print("HTTP images/s by clients: " + ", ".join(f"{c}: {r:.2f}" for c, r in http_rates.items()))
    print(
        f"{plain_faces} faces per {args.rounds} rounds; in-process batches: detector {det_batches}, "
        f"ArcFace {emb_batches}; served ArcFace batches {served_batches}"
    )
    print("\nbatching inside the models:")
    for name, ms in bench_batching(paths, args).items():
        print(f"  {name:58} {ms:7.2f}")
    report(
        "face extraction (images/s, same images, same cores)",
        {
            "plain insightface loop, one image at a time": plain,
            "in-process pipeline (LocalBatcher)": pipe,
            f"/extract-faces over HTTP, {best_clients} clients (best)": http,
        },
        [
            ("in-process pipeline (LocalBatcher)", "plain insightface loop, one image at a time"),
            (f"/extract-faces over HTTP, {best_clients} clients (best)", "plain insightface loop, one image at a time"),
            (f"/extract-faces over HTTP, {best_clients} clients (best)", "in-process pipeline (LocalBatcher)"),
        ],
    )
