"""Benchmark of POST /v1/face-mask, printing in one run:

  in-process   the same pipeline with the same models in this process, requests
               concurrent, models behind LocalBatcher (the compute limit)
  HTTP batched the model tier (`models` app, the same weights and threads) and the
               face_mask app, batching on (max_batch_size from --batch-size)
  HTTP max_batch_size=1   the same apps redeployed, batching off

and the ratios HTTP/in-process and batched/unbatched. The parser defaults to a random
SegFormer with the real checkpoint's architecture (MiT-B5), so compute is realistic.

    .venv/bin/python -m serve_app.config.assets fetch --set bench
    .venv/bin/python -m bench face_mask [--requests 12] [--clients 4] [--parser-asset segformer-parser-tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness.cluster import delete_apps, deploy_model_tier, shutdown, start_ray, start_serve
from bench.harness.load import http_run, report

IMAGES = ["cartoonface_11008.jpg", "dualstylegan_anime_16031200.jpg", "kanosawa_anime_5faces.png"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--parser-asset", default="segformer-parser-b5-random")
    ap.add_argument(
        "--parser-threads",
        type=int,
        default=2,
        help="torch threads for the parser on both paths (the Serve replica gets as many num_cpus)",
    )
    args = ap.parse_args(argv)

    from ray import serve

    from deployments.lbp_detector.model import LBPDetector, LBPDetectorConfig
    from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
    from deployments.serving import LocalBatcher, model_deployment
    from deployments.types import Placement
    from serve_app.apps.face_mask import FaceMaskArgs, build
    from serve_app.config.assets import resolve
    from serve_app.config.model_tier import MODEL_APP
    from serve_app.imaging import decode_image
    from serve_app.pipelines.face_mask import SPEC, FaceMaskParams, face_mask

    cartoon = resolve("test-images-cartoon")
    blobs = [(name, (cartoon / name).read_bytes()) for name in IMAGES]
    detector_cfg = LBPDetectorConfig(cascade_path=str(resolve("lbp-detector-cascade")))
    parser_cfg = SegFormerParserConfig(checkpoint_dir=str(resolve(args.parser_asset)))
    rates = {}

    # 1. In-process: decode + pipeline, `clients` requests at a time, batched in-process.
    # The detector gets one thread, as its 0.25-CPU replica does below (Ray's share,
    # rounded up to a whole thread).
    detect = LocalBatcher(LBPDetector(detector_cfg, Placement(threads=1)))
    parse = LocalBatcher(
        SegFormerParser(parser_cfg, Placement(threads=args.parser_threads)), max_batch_size=args.batch_size
    )

    async def in_process() -> float:
        async def one(i):
            name, data = blobs[i % len(blobs)]
            await face_mask(decode_image(data), FaceMaskParams(), detect=detect, parse=parse)

        await one(0)  # warm-up
        sem = asyncio.Semaphore(args.clients)

        async def bounded(i):
            async with sem:
                await one(i)

        start = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(args.requests)))
        return args.requests / (time.perf_counter() - start)

    rates["in-process pipeline (compute limit)"] = asyncio.run(in_process())

    # 2./3. Over HTTP through Serve, with and without batching: the model tier (the same
    # weights) and the face_mask app, both redeployed for each batch size. The parser
    # replica gets `parser_threads` CPUs so both paths run it with the same threads (a
    # replica's threads come from its num_cpus); a little logical headroom for the rest.
    start_ray(num_cpus=args.parser_threads + 1)
    base = start_serve()

    def send(client, i):
        name, data = blobs[i % len(blobs)]
        return client.post(base + "/v1/face-mask", files={"image": (name, data)}, data={"outputs": "mask"})

    try:
        for label, batch in (
            (f"HTTP batched (max_batch_size={args.batch_size})", args.batch_size),
            ("HTTP max_batch_size=1", 1),
        ):
            user_config = {"max_batch_size": batch, "batch_wait_timeout_s": 0.05}
            deploy_model_tier(
                {
                    "LBPDetector": model_deployment(
                        LBPDetector,
                        detector_cfg,
                        "lbp-detector-cascade",
                        user_config=user_config,
                        ray_actor_options={"num_cpus": 0.25},
                    ),
                    "SegFormerParser": model_deployment(
                        SegFormerParser,
                        parser_cfg,
                        args.parser_asset,
                        user_config=user_config,
                        ray_actor_options={"num_cpus": args.parser_threads},
                    ),
                }
            )
            serve.run(build(FaceMaskArgs()), name=SPEC.name, route_prefix="/v1/face-mask")
            rates[label] = http_run(send, args.requests, args.clients).rate
            delete_apps(SPEC.name, MODEL_APP)
    finally:
        shutdown()

    batched = f"HTTP batched (max_batch_size={args.batch_size})"
    report(
        f"/v1/face-mask, {args.requests} requests, {args.clients} clients, parser {args.parser_asset}",
        rates,
        [(batched, "in-process pipeline (compute limit)"), (batched, "HTTP max_batch_size=1")],
    )
