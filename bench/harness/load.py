"""Load, and what it measured. Two kinds of run:

- counted runs (Run): a number of requests over a number of concurrent clients, over
  HTTP (http_run) or as coroutines in this process (inprocess_run): requests/s and each
  request's latency, every answer a 200;
- rehearsal load on pre-encoded requests (Request -> Outcome): closed-loop clients that
  run until stopped (ClosedLoop), or a fixed rate whether or not the server keeps up
  (open_loop), every answer kept with its status, error code and timing.

The load generators share the cores with the server: bodies are encoded once, outside
the clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench.harness.figures import percentiles


class Run:
    """One measured run: requests/s and each request's latency (ms). A request may
    carry several items (photos): item_rate counts those."""

    def __init__(self, rate: float, latencies_ms: list[float], items_per_request: int = 1):
        self.rate, self.latencies_ms, self.items_per_request = rate, sorted(latencies_ms), items_per_request

    @property
    def item_rate(self) -> float:
        return self.rate * self.items_per_request

    @property
    def p50(self) -> float:
        return percentiles(self.latencies_ms, (50,), scale=1)["p50"]

    @property
    def p95(self) -> float:
        return percentiles(self.latencies_ms, (95,), scale=1)["p95"]


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


def report(title: str, rates: dict[str, float], ratios: list[tuple[str, str]], unit: str = "images/s") -> None:
    """Rates measured in one run, then the ratios asked for."""
    print(f"\n== {title}")
    for name, rate in rates.items():
        print(f"  {name:48s} {rate:8.2f} {unit}")
    for a, b in ratios:
        print(f"  ratio {a} / {b}: {rates[a] / rates[b]:.2f}")


# ---- rehearsal load ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request, encoded once."""

    kind: str  # its name in the mix
    url: str
    content: bytes
    headers: tuple[tuple[str, str], ...]
    note: Callable[[dict], str] | None = None  # a word about a 200's body (e.g. SAM2 or its fallback)

    @staticmethod
    def build(kind: str, url: str, note: Callable[[dict], str] | None = None, **httpx_args) -> Request:
        req = httpx.Request("POST", url, **httpx_args)
        return Request(kind, url, req.read(), (("content-type", req.headers["content-type"]),), note)


@dataclass
class Outcome:
    kind: str  # which request of the mix
    start: float  # monotonic
    end: float
    status: int  # 0: no HTTP answer (timeout, connection error); -1: not sent (generator's limit)
    error: str  # the error shape's code, "plain-text", the exception's name, or ""
    retry_after: str | None
    json_shape: bool  # a non-200 answer in the shared error shape
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency_s(self) -> float:
        return self.end - self.start


def outcome(req: Request, start: float, resp: httpx.Response | None, exc: Exception | None = None) -> Outcome:
    end = time.monotonic()
    if resp is None:
        return Outcome(req.kind, start, end, 0, type(exc).__name__, None, False)
    error, shape, note = "", False, ""
    if resp.status_code == 200 and req.note is not None:
        note = req.note(resp.json())
    if resp.status_code != 200:
        try:
            body = resp.json()
            shape = isinstance(body, dict) and set(body) == {"error", "message", "request_id"}
            error = body.get("error", "") if isinstance(body, dict) else ""
        except ValueError:  # not JSON: Serve's own plain-text answers
            error = "plain-text"
    return Outcome(req.kind, start, end, resp.status_code, error, resp.headers.get("retry-after"), shape, note)


def send_one(req: Request, client: httpx.Client) -> Outcome:
    start = time.monotonic()
    try:
        return outcome(req, start, client.post(req.url, content=req.content, headers=dict(req.headers)))
    except httpx.HTTPError as exc:
        return outcome(req, start, None, exc)


class ClosedLoop:
    """`clients` threads, each sending its next request of the mix as soon as the last
    is answered (a steady load that slows down when the server does), until stop(),
    max_seconds or max_requests in all."""

    def __init__(
        self, mix: list[Request], clients: int, max_seconds: float, max_requests: int = 100_000, timeout_s: float = 60
    ):
        self.mix, self.clients = list(mix), clients
        self.max_seconds, self.max_requests, self.timeout_s = max_seconds, max_requests, timeout_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> ClosedLoop:
        self.t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def _run(self, index: int) -> None:
        n = index
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set() and time.monotonic() - self.t0 < self.max_seconds:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                result = send_one(self.mix[n % len(self.mix)], client)
                n += self.clients
                with self._lock:
                    self.outcomes.append(result)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return self.outcomes


def open_loop(
    req: Request, rate: float, seconds: float, max_in_flight: int = 256, timeout_s: float = 60
) -> list[Outcome]:
    """Requests at a fixed `rate` for `seconds`, whether or not earlier ones are answered
    (how real clients overload a server), from one asyncio loop. At most `max_in_flight`
    at once: past that a request is not sent and counts as status -1."""

    async def run() -> list[Outcome]:
        outcomes: list[Outcome] = []
        in_flight = 0
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

            async def one() -> None:
                nonlocal in_flight
                start = time.monotonic()
                try:
                    resp = await client.post(req.url, content=req.content, headers=dict(req.headers))
                    outcomes.append(outcome(req, start, resp))
                except httpx.HTTPError as exc:
                    outcomes.append(outcome(req, start, None, exc))
                finally:
                    in_flight -= 1

            tasks = []
            t0 = time.monotonic()
            for i in range(int(rate * seconds)):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if in_flight >= max_in_flight:
                    now = time.monotonic()
                    outcomes.append(Outcome(req.kind, now, now, -1, "generator_limit", None, False))
                    continue
                in_flight += 1
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return sorted(outcomes, key=lambda o: o.start)

    return asyncio.run(run())
