"""What Ray Serve itself costs per request on this box: the /extract-faces graph's shape
with no work in it. The same hops and payloads as one extract-faces request (a JSON
body with a base64 photo through the proxy; a 640x640 letterboxed image to a batched
"detector" replica; two 112x112 crops to a batched "recogniser" replica; a JSON answer
the size of two faces' headshots and embeddings back), every model call answered at
once. The CPU the machine spends per request here (less the share of the HTTP clients,
printed beside it) is the floor under any served pipeline of that shape, so it bounds
the HTTP / in-process ratio (P3 in bench all): work / (work + floor).

--our-shell adds what every FaceGraph app puts around its routes: the shared FastAPI app
(serve_app/web/http.py: request ids, error shape, metrics, CORS, request guard), JSON replica
logs as serve_config.yaml has them, and the HTTP edge in the proxy (serve_app/web/edge.py).

    python bench/serve_floor.py [--clients 8] [--seconds 15]
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402

from bench.bench_all import box_busy_seconds, load  # noqa: E402
from bench.common import free_port, http_run  # noqa: E402
from bench.endpoints import ENDPOINTS  # noqa: E402

ANSWER_BYTES = 30_000  # two faces: two 160-pixel JPEG headshots in base64 and two embeddings as JSON


def build_app(replicas: int = 1, our_shell: bool = False):
    from ray import serve

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.1})
    class EmptyDetector:
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
            return [np.zeros((2, 15), np.float32) for _ in images]  # two faces' boxes, scores, landmarks

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.1})
    class EmptyRecogniser:
        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
        async def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
            return [np.zeros((len(c), 512), np.float32) for c in crops]

    if our_shell:
        from serve_app.web.http import create_app

        api, _ = create_app("floor", "empty extract-faces graph", body_limit=lambda: 64 * 1024 * 1024)
    else:
        api = FastAPI()

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.05})
    @serve.ingress(api)
    class EmptyIngress:
        def __init__(self, detect, embed):
            self.detect, self.embed = detect, embed
            self.letterboxed = np.zeros((640, 640, 3), np.uint8)
            self.crops = np.zeros((2, 112, 112, 3), np.uint8)

        @api.post("/")
        async def extract(self, request: Request) -> dict:
            body = await request.json()  # the client's photo, parsed as the real ingress parses it
            await self.detect.remote(self.letterboxed)
            embeddings = await self.embed.remote(self.crops)
            received = len(body["images"][0]["image_base64"])
            return {"faces": len(embeddings), "received": received, "pad": "x" * ANSWER_BYTES}

    return EmptyIngress.bind(EmptyDetector.bind(), EmptyRecogniser.bind())


def own_cpu_seconds() -> float:
    """CPU seconds of this process so far: the HTTP clients (threads) and the Ray driver."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--replicas", type=int, default=1, help="replicas of each deployment")
    parser.add_argument("--our-shell", action="store_true", help="FaceGraph's app shell, logs and HTTP edge")
    args = parser.parse_args(argv)

    import ray
    from ray import serve
    from ray.serve.schema import LoggingConfig

    from serve_app.web.edge import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    logs = None
    if args.our_shell:
        os.environ[PROXY_CALLBACK_ENV] = PROXY_CALLBACK  # before Ray starts: the proxy reads it
        logs = LoggingConfig(encoding="JSON", additional_log_standard_attrs=["name"])
    port = free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args.replicas, args.our_shell), name="floor", route_prefix="/floor", logging_config=logs)
        payloads = ENDPOINTS["extract-faces"].payloads()
        url = f"http://127.0.0.1:{port}/floor/"

        def send(client, i):
            return client.post(url, json=payloads[i % len(payloads)])

        http_run(send, 4 * args.clients, args.clients)  # warm-up
        busy, mine, start, done = box_busy_seconds(), own_cpu_seconds(), time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            http_run(send, 4 * args.clients, args.clients, warmup=False)
            done += 4 * args.clients
        wall, cpu, clients = time.perf_counter() - start, box_busy_seconds() - busy, own_cpu_seconds() - mine
        shell = " in FaceGraph's shell" if args.our_shell else ""
        print(
            f"empty extract-faces graph{shell}, {args.replicas} replica(s) each, {args.clients} clients: "
            f"{done / wall:.1f} req/s, machine CPU {1000 * cpu / done:.1f} ms per request, "
            f"{1000 * clients / done:.1f} of it the HTTP clients (this process) "
            f"({cpu / wall:.2f} of {os.cpu_count()} cores; {load()})"
        )
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
