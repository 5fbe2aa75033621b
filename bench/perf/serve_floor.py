"""What Ray Serve itself costs per request on this machine: the /extract-faces graph's shape
with no work in it. The same hops and payloads as an extract-faces request of --photos
photos (a JSON body with base64 photos through the proxy; per photo a 640x640
letterboxed image to a batched "detector" replica, then two 112x112 crops to a batched
"recogniser" replica, the photos in flight together as the pipeline runs them; a JSON
answer the size of two faces' headshots and embeddings per photo back), every model call
answered at once. The CPU this run's processes (Ray's, Serve's and the HTTP clients')
spend per request here, less the clients' share (printed beside it), is the floor under
any served pipeline of that shape,
so it bounds the HTTP / in-process ratio (P3 in `python -m bench all`, which measures
this floor beside it): work / (work + floor).

--our-shell adds what every FaceGraph app puts around its routes: the shared FastAPI app
(serve_app/web/http.py: request ids, error shape, metrics, CORS, request guard), JSON replica
logs as serve_config.yaml has them, and the HTTP edge in the proxy (serve_app/web/edge.py).

    python -m bench serve_floor [--clients 8] [--seconds 15] [--photos 1 4] [--our-shell]
"""

# No `from __future__ import annotations`: the empty graph's classes travel to their
# replicas pickled by value, and FastAPI must find the route's `Request` annotation as
# the class itself there, not as a name to look up.
import argparse
import asyncio
import os
import time
from dataclasses import dataclass, replace

import numpy as np
from fastapi import FastAPI, Request

from bench.harness.cluster import EDGE, shutdown, start_ray, start_serve
from bench.harness.endpoints import ENDPOINTS
from bench.harness.load import http_run
from bench.harness.procs import box_busy_seconds, cpu_seconds, load, run_cpu_seconds

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

        async def photo(self) -> np.ndarray:
            await self.detect.remote(self.letterboxed)
            return await self.embed.remote(self.crops)

        @api.post("/")
        async def extract(self, request: Request) -> dict:
            body = await request.json()  # the client's photos, parsed as the real ingress parses them
            embeddings = await asyncio.gather(*(self.photo() for _ in body["images"]))
            received = sum(len(image["image_base64"]) for image in body["images"])
            faces = sum(len(e) for e in embeddings)
            return {"faces": faces, "received": received, "pad": "x" * (ANSWER_BYTES * len(embeddings))}

    return EmptyIngress.bind(EmptyDetector.bind(), EmptyRecogniser.bind())


@dataclass(frozen=True)
class Floor:
    photos: int  # per request
    rate: float  # requests/s
    cpu_ms: float  # CPU per request of this run's processes (Ray's, Serve's, the HTTP clients')
    clients_ms: float  # of it, this process's (the HTTP clients')
    cores: float  # the whole machine's busy cores while it ran (other work on it included)

    @property
    def serve_ms(self) -> float:
        """Serve's floor: the run's CPU per request less the clients'."""
        return self.cpu_ms - self.clients_ms


def measure(base: str, photos: int, clients: int, seconds: float) -> Floor:
    """Load on the empty graph (deployed at `base`/floor/ by deploy_floor) at `clients`
    clients for `seconds`, requests of `photos` photos, after a warm-up."""
    payloads = replace(ENDPOINTS["extract-faces"], per_request=photos).payloads()
    url = f"{base}/floor/"

    def send(client, i):
        return client.post(url, json=payloads[i % len(payloads)])

    http_run(send, 4 * clients, clients)  # warm-up
    busy, run, mine = box_busy_seconds(), run_cpu_seconds(), cpu_seconds(os.getpid())
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        http_run(send, 4 * clients, clients, warmup=False)
        done += 4 * clients
    wall, cpu, clients_cpu = time.perf_counter() - start, run_cpu_seconds() - run, cpu_seconds(os.getpid()) - mine
    return Floor(photos, done / wall, 1000 * cpu / done, 1000 * clients_cpu / done, (box_busy_seconds() - busy) / wall)


def deploy_floor(replicas: int = 1, our_shell: bool = False) -> str:
    """Serve with the empty graph as the app `floor` (route /floor) -> the base URL. With
    our_shell, Ray must have started with EDGE in its environment (the proxy reads it)."""
    from ray import serve
    from ray.serve.schema import LoggingConfig

    logs = LoggingConfig(encoding="JSON", additional_log_standard_attrs=["name"]) if our_shell else None
    base = start_serve()
    serve.run(build_app(replicas, our_shell), name="floor", route_prefix="/floor", logging_config=logs)
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--photos", type=int, nargs="+", default=[1], help="photos per request, one run each")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of each deployment")
    parser.add_argument("--our-shell", action="store_true", help="FaceGraph's app shell, logs and HTTP edge")
    args = parser.parse_args(argv)

    start_ray(env=EDGE if args.our_shell else None)
    try:
        base = deploy_floor(args.replicas, args.our_shell)
        shell = " in FaceGraph's shell" if args.our_shell else ""
        for photos in args.photos:
            f = measure(base, photos, args.clients, args.seconds)
            print(
                f"empty extract-faces graph{shell}, {photos} photo(s) a request, {args.replicas} replica(s) each, "
                f"{args.clients} clients: {f.rate:.1f} req/s, CPU {f.cpu_ms:.1f} ms per request, "
                f"{f.clients_ms:.1f} of it the HTTP clients (this process): Serve's floor {f.serve_ms:.1f} ms "
                f"(the machine: {f.cores:.2f} of {os.cpu_count()} cores busy; {load()})",
                flush=True,
            )
    finally:
        shutdown()
    return 0
