"""Benchmark of POST /v1/face-mask, printing in one run:

  in-process   the same pipeline with the same models in this process, requests
               concurrent, models behind LocalBatcher (the compute limit)
  HTTP batched the Serve graph with batching on (max_batch_size from --batch-size)
  HTTP max_batch_size=1   the same graph, batching off

and the ratios HTTP/in-process and batched/unbatched. The parser defaults to a random
SegFormer with the real checkpoint's architecture (MiT-B5), so compute is realistic.

    .venv/bin/python -m serve_app.assets fetch --set bench
    .venv/bin/python bench/bench_face_mask.py [--requests 12] [--clients 4] [--parser-asset segformer-parser-tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import http_throughput, report, start_serve  # noqa: E402

IMAGES = ["cartoonface_11008.jpg", "dualstylegan_anime_16031200.jpg", "kanosawa_anime_5faces.png"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--parser-asset", default="segformer-parser-b5-random")
    ap.add_argument("--parser-threads", type=int, default=2,
                    help="torch threads for the parser on both paths (the Serve replica gets as many num_cpus)")
    args = ap.parse_args()

    from deployments.lbp_detector import LBPDetector, LBPDetectorConfig
    from deployments.segformer_parser import SegFormerParser, SegFormerParserConfig
    from deployments.serving import LocalBatcher, model_deployment
    from serve_app.apps.face_mask import FaceMaskIngress
    from serve_app.assets import resolve
    from serve_app.imaging import decode_image
    from serve_app.pipelines.face_mask import FaceMaskParams, face_mask

    cartoon = resolve("test-images-cartoon")
    blobs = [(name, (cartoon / name).read_bytes()) for name in IMAGES]
    detector_cfg = LBPDetectorConfig(str(resolve("lbp-detector-cascade")))
    parser_cfg = SegFormerParserConfig(str(resolve(args.parser_asset)), num_threads=args.parser_threads)
    rates = {}

    # 1. In-process: decode + pipeline, `clients` requests at a time, batched in-process.
    detect = LocalBatcher(LBPDetector(detector_cfg))
    parse = LocalBatcher(SegFormerParser(parser_cfg), max_batch_size=args.batch_size)

    async def in_process() -> float:
        async def one(i):
            name, data = blobs[i % len(blobs)]
            await face_mask(decode_image(data), FaceMaskParams(), detect, parse)

        await one(0)  # warm-up
        sem = asyncio.Semaphore(args.clients)

        async def bounded(i):
            async with sem:
                await one(i)

        start = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(args.requests)))
        return args.requests / (time.perf_counter() - start)

    rates["in-process pipeline (compute limit)"] = asyncio.run(in_process())

    # 2./3. Over HTTP through Serve, with and without batching. The parser replica gets
    # `parser_threads` CPUs so both paths run it with the same threads (Ray sizes a
    # replica's threads from its num_cpus); a little logical headroom for the rest.
    from ray import serve

    base = start_serve(num_cpus=args.parser_threads + 1)

    def send(client, i):
        name, data = blobs[i % len(blobs)]
        return client.post(base + "/v1/face-mask", files={"image": (name, data)}, data={"outputs": "mask"})

    for label, batch in ((f"HTTP batched (max_batch_size={args.batch_size})", args.batch_size),
                         ("HTTP max_batch_size=1", 1)):
        user_config = {"max_batch_size": batch, "batch_wait_timeout_s": 0.05}
        app = FaceMaskIngress.bind(
            model_deployment(LBPDetector, detector_cfg, user_config=user_config, ray_actor_options={"num_cpus": 0.25}),
            model_deployment(SegFormerParser, parser_cfg, user_config=user_config,
                             ray_actor_options={"num_cpus": args.parser_threads}),
            {"LBPDetector": "lbp-detector-cascade", "SegFormerParser": args.parser_asset},
        )
        serve.run(app, name="face_mask", route_prefix="/v1/face-mask")
        rates[label] = http_throughput(send, args.requests, args.clients)
        serve.delete("face_mask")

    batched = f"HTTP batched (max_batch_size={args.batch_size})"
    report(f"/v1/face-mask, {args.requests} requests, {args.clients} clients, parser {args.parser_asset}",
           rates, [(batched, "in-process pipeline (compute limit)"), (batched, "HTTP max_batch_size=1")])


if __name__ == "__main__":
    main()
