"""Shared benchmark plumbing: a local Ray cluster, the model tier deployed with the
bench's own per-model options, concurrent HTTP clients, and printing ratios measured
in one run. Benchmarks are run by hand, never by the tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(num_cpus: int | None = None) -> str:
    """A local Ray cluster + Serve proxy on a free port; returns the base URL."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def deploy_model_tier(models: dict) -> None:
    """Deploy the `models` application from bound model deployments
    ({name: model_deployment(cls, cfg, weights, **options)}), as
    serve_app/apps/models.py build() does, but with the replicas, CPUs and batch sizes
    the bench chose. Pipeline apps reach these deployments by name, so deploy this first."""
    from ray import serve

    from serve_app.apps.models import ModelTier
    from serve_app.config.model_tier import MODEL_APP

    serve.run(ModelTier.bind(models), name=MODEL_APP, route_prefix="/healthz")


def delete_apps(*names: str) -> None:
    """Tear down applications, callers before the models they call."""
    from ray import serve

    for name in names:
        serve.delete(name)


def http_throughput(
    send: Callable[[httpx.Client, int], httpx.Response],
    requests: int,
    clients: int,
    items_per_request: Callable[[int], int] = lambda i: 1,
) -> float:
    """Items/s for `requests` calls spread over `clients` concurrent clients (after one
    warm-up call). Every response must be 200."""
    with httpx.Client(timeout=600) as client:
        send(client, 0).raise_for_status()  # warm-up: first call loads lazily-built state
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            responses = list(pool.map(lambda i: send(client, i), range(requests)))
        elapsed = time.perf_counter() - start
    bad = [r.status_code for r in responses if r.status_code != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed: {bad[:5]}")
    return sum(items_per_request(i) for i in range(requests)) / elapsed


def report(title: str, rates: dict[str, float], ratios: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    for name, rate in rates.items():
        print(f"  {name:48s} {rate:8.2f} images/s")
    for a, b in ratios:
        print(f"  ratio {a} / {b}: {rates[a] / rates[b]:.2f}")


class Run:
    """One measured run: items/s and each request's latency (ms)."""

    def __init__(self, rate: float, latencies_ms: list[float]):
        self.rate, self.latencies_ms = rate, sorted(latencies_ms)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        i = min(len(self.latencies_ms) - 1, max(0, round(q / 100 * len(self.latencies_ms) + 0.5) - 1))
        return self.latencies_ms[i]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)


def http_run(
    send: Callable[[httpx.Client, int], httpx.Response], requests: int, clients: int, warmup: bool = True
) -> Run:
    """`requests` calls over `clients` concurrent clients (after one warm-up call unless
    told not to): requests/s and each call's latency. Every response must be 200."""
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=max(clients, 10))) as client:
        first = send(client, 0) if warmup else None
        if first is not None and first.status_code != 200:
            raise RuntimeError(f"warm-up request: {first.status_code} {first.text[:500]}")

        failures: list[str] = []

        def one(i: int) -> tuple[int, float]:
            start = time.perf_counter()
            response = send(client, i)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:300]}")
            return response.status_code, (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - start
    bad = [s for s, _ in results if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} of {requests} requests at {clients} clients failed, e.g. {failures[:2]}")
    return Run(requests / elapsed, [ms for _, ms in results])


def inprocess_run(work: Callable[[int], Awaitable], requests: int, concurrency: int, warmup: bool = True) -> Run:
    """The same as http_run for an in-process coroutine `work(i)`: `concurrency` at a
    time on one event loop (after one warm-up call unless told not to)."""
    import asyncio

    async def go() -> Run:
        if warmup:
            await work(0)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> float:
            async with gate:
                start = time.perf_counter()
                await work(i)
                return (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        latencies = await asyncio.gather(*(one(i) for i in range(requests)))
        return Run(requests / (time.perf_counter() - start), list(latencies))

    return asyncio.run(go())
