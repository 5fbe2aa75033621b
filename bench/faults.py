"""Shared plumbing of the fault rehearsals (bench/fault_serve.py, bench/fault_node_lost.py,
bench/soak.py): the apps deployed from serve_config.yaml itself (cut down to the apps
under test, test weights, fixed replica counts), bounded load generators on loopback,
replica processes by PID, and the figures (failed requests, time to recover,
latency, RSS).

Everything here is bounded: every load loop stops at a request count and a time limit,
every wait has a deadline, and only processes of the cluster this process started
are touched."""

from __future__ import annotations

import argparse
import base64
import copy
import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"

# Settings every Ray worker inherits: set before Ray starts. Stand-ins let the
# anonymize app's morphable model come from the test assets on a box without the
# production file. The proxy runs the app's edge middleware (serve_app/web/edge.py), as in
# production: the proxy's own 503s come out in the error shape too.
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "FACEGRAPH_ALLOW_STAND_INS": "1",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.web.edge:proxy_middlewares",
}
# The small weights CI has (as tests/conftest.py's model tier), by model.
TEST_WEIGHTS = {
    "SegFormerParser": "segformer-parser-tiny",
    "RetinaFace": "retinaface-det-500m",
    "ArcFace": "arcface-mobilefacenet-128d",
    "TDDFA": "tddfa-mb05-120",
}


def argument_parser(doc: str, clients_help: str = "closed-loop clients") -> argparse.ArgumentParser:
    """The fault and soak scripts' parser: their docstring as the description, and the
    two options they all take (--clients, --json)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4, help=clients_help)
    p.add_argument("--json", help="write the figures here")
    return p


# ---- the apps, from serve_config.yaml ------------------------------------------------


def app_config(
    apps: list[str],
    overrides: dict[str, dict] | None = None,
    app_args: dict[str, dict] | None = None,
    fixed_replicas: bool = True,
    weights: dict[str, str] = TEST_WEIGHTS,
) -> dict:
    """serve_config.yaml's `applications` cut down to the `models` application (only
    the models `apps` use) plus `apps`, everything else as configured there
    (max_queued_requests, health checks, graceful shutdown, batch sizes).

    overrides: {deployment name: options to change; None removes an option}.
    app_args: {app name: args to change}. fixed_replicas: every autoscaled deployment
    runs min_replicas replicas, so capacity does not move during a rehearsal."""
    doc = yaml.safe_load(SERVE_CONFIG.read_text())
    by_name = {a["name"]: copy.deepcopy(a) for a in doc["applications"]}
    used = {m for app in apps for m in importlib.import_module(f"serve_app.pipelines.{app}").SPEC.models.values()}
    models = by_name["models"]
    models["args"]["models"] = {n: b for n, b in models["args"]["models"].items() if n in used}
    for name, asset in weights.items():
        if name in models["args"]["models"]:
            models["args"]["models"][name]["asset"] = asset
            models["args"]["models"][name].pop("assets", None)  # TDDFA's stats file: the stand-in's own
    models["deployments"] = [d for d in models["deployments"] if d["name"] in used | {"ModelTier"}]
    chosen = [models] + [by_name[a] for a in apps]
    for app in chosen:
        app["args"] = {**app.get("args", {}), **(app_args or {}).get(app["name"], {})}
        for dep in app.get("deployments", []):
            if fixed_replicas and "autoscaling_config" in dep:
                dep["num_replicas"] = dep.pop("autoscaling_config")["min_replicas"]
            for key, value in (overrides or {}).get(dep["name"], {}).items():
                if value is None:
                    dep.pop(key, None)
                else:
                    dep[key] = value
    return {"applications": chosen}


def start_local(num_cpus: int = 4) -> None:
    """A local Ray cluster of its own (never someone else's)."""
    import ray

    os.environ.update(ENV)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def deploy(config: dict, port: int | None = None, location: str = "EveryNode", timeout_s: float = 300) -> str:
    """Serve on 127.0.0.1:port (a free one by default), then the applications deployed
    from `config` as `serve deploy` does (the controller imports each import_path and
    applies every deployment option). Waits until all are RUNNING; -> base URL."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from bench.common import free_port

    port = port or free_port()
    serve.start(proxy_location=location, http_options={"host": "127.0.0.1", "port": port})
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    wait_until(lambda: all_running([a["name"] for a in config["applications"]]), timeout_s, "applications RUNNING")
    return f"http://127.0.0.1:{port}"


def all_running(apps: list[str]) -> bool:
    from ray import serve

    status = serve.status().applications
    for name in apps:
        app = status.get(name)
        if app is None or str(getattr(app.status, "value", app.status)) != "RUNNING":
            if app is not None and "FAIL" in str(app.status):
                raise RuntimeError(f"{name}: {app.status} {app.message}")
            return False
    return True


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> float:
    """Seconds until check() is true; RuntimeError past timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(poll_s)
    raise RuntimeError(f"no {what} within {timeout_s:g} s")


# ---- processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    name: str  # "models:RetinaFace", "ProxyActor", "ServeController"
    pid: int
    node_id: str
    actor_id: str


def serve_processes() -> list[Proc]:
    """Every live Serve actor of this cluster (replicas, proxies, the controller) with
    its PID, from the GCS actor table (ray.util.state needs the dashboard, which these
    rehearsals do not start)."""
    from ray._private import state

    procs = []
    for actor_id, info in state.actors().items():
        cls = info["ActorClassName"]
        if info["State"] != "ALIVE" or not info["Pid"]:
            continue
        if cls.startswith("ServeReplica:"):
            name = cls.removeprefix("ServeReplica:")
        elif cls in ("ProxyActor", "ServeController"):
            name = cls
        else:
            continue
        procs.append(Proc(name, int(info["Pid"]), info["Address"]["NodeID"], actor_id))
    return sorted(procs, key=lambda p: (p.name, p.pid))


def replicas(app: str, deployment_name: str) -> list[Proc]:
    return [p for p in serve_processes() if p.name == f"{app}:{deployment_name}"]


def healthy_replicas(app: str, deployment_name: str) -> int:
    """Replicas Serve counts as RUNNING for a deployment (its own view, not the GCS's)."""
    from ray import serve

    app_status = serve.status().applications.get(app)
    dep = app_status.deployments.get(deployment_name) if app_status else None
    if dep is None:
        return 0
    counts = getattr(dep, "replica_states", {}) or {}
    return sum(n for state, n in counts.items() if str(getattr(state, "value", state)) == "RUNNING")


def rss_and_fds(pid: int) -> tuple[float, int] | None:
    """(RSS in MiB, open file descriptors) of a process on this machine, None if gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, fds


def wait_running_thread(pid: int, timeout_s: float) -> bool:
    """Wait until a thread of `pid` is on a CPU (state R in /proc): True, or False at
    the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] == "R":
                        return True
        except (FileNotFoundError, ProcessLookupError):
            return False
        time.sleep(0.002)
    return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_snapshot() -> dict[str, dict]:
    """{process name#pid: {"rss_mib", "fds", "cpu_s"}} for every Serve process, and for
    this one (the load generator) as "client"."""
    out = {}
    for p in [*serve_processes(), Proc("client", os.getpid(), "", "")]:
        got = rss_and_fds(p.pid)
        if got:
            out[f"{p.name}#{p.pid}"] = {"rss_mib": round(got[0], 1), "fds": got[1], "cpu_s": cpu_seconds(p.pid)}
    return out


def count_in_logs(text: str, pattern: str = "serve/replica_*.log") -> int:
    """Lines of this cluster's Serve logs containing `text` (e.g. the ingress's
    "replica lost" warnings: calls it sent again)."""
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    total = 0
    for path in (session / "logs").glob(pattern):
        with open(path, errors="replace") as f:
            total += sum(1 for line in f if text in line)
    return total


# ---- load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request, encoded once (the load generator shares the cores with the server:
    it must not re-encode a body per request)."""

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
    import asyncio

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


# ---- figures ---------------------------------------------------------------------------


def peak_in_flight(outcomes: list[Outcome]) -> int:
    """The most requests sent and not yet answered at any moment (a sweep over the
    sent requests' start and end times)."""
    sent = [o for o in outcomes if o.status != -1]
    # (time, +1 sent / -1 answered); sorted, an answer at the same instant as a send goes first
    events = sorted([(o.start, 1) for o in sent] + [(o.end, -1) for o in sent])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def per_second(outcomes: list[Outcome], t0: float, seconds: int) -> list[int]:
    """Successful answers completed in each second after t0."""
    counts = [0] * seconds
    for o in outcomes:
        k = int(o.end - t0)
        if o.ok and 0 <= k < seconds:
            counts[k] += 1
    return counts


def recovery_s(
    outcomes: list[Outcome],
    fault_at: float,
    baseline_s: float = 10,
    window_s: float = 3,
    fraction: float = 0.8,
    horizon_s: float = 120,
) -> float | None:
    """Seconds from the fault until throughput is back: the start of the first
    `window_s` window after the fault whose successful answers per second reach
    `fraction` of the `baseline_s` before it. None if it never is within horizon_s."""
    done = [o.end for o in outcomes if o.ok]
    before = sum(1 for t in done if fault_at - baseline_s <= t < fault_at) / baseline_s
    if before == 0:
        return None
    last = max(done, default=fault_at)
    t = fault_at
    while t + window_s <= min(last, fault_at + horizon_s) + 1e-9:
        rate = sum(1 for x in done if t <= x < t + window_s) / window_s
        if rate >= fraction * before:
            return round(t - fault_at, 1)
        t += 0.5
    return None


def percentiles(values: list[float], qs=(50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in qs} | {"max": float("nan")}
    arr = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in qs} | {"max": round(float(arr.max()), 1)}


def failures(outcomes: list[Outcome]) -> dict[str, int]:
    """{"<status> <code>": count} of every answer that is not a 200."""
    out: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            key = f"{o.status} {o.error}".strip()
            out[key] = out.get(key, 0) + 1
    return out


# ---- requests --------------------------------------------------------------------------


def photo_b64(name: str = "lfw_Rob_Lowe_0001.jpg") -> str:
    from serve_app.config.assets import resolve

    return base64.b64encode((resolve("test-images-photos") / name).read_bytes()).decode()


PHOTOS = ("lfw_Rob_Lowe_0001.jpg", "lfw_Nathalie_Baye_0002.jpg", "insightface_t1.jpg", "lfw_Rob_Lowe_0002.jpg")


def extract_faces_request(url: str, images: int = 1) -> Request:
    """POST /extract-faces with `images` of the test photos (a detector call each)."""
    body = {"images": [{"image_base64": photo_b64(PHOTOS[i % len(PHOTOS)])} for i in range(images)]}
    return Request.build("extract-faces", f"{url}/extract-faces", json=body)


def multipart_request(kind: str, url: str, image: bytes, filename: str = "face.jpg", note=None, **form) -> Request:
    return Request.build(kind, url, note=note, files={"image": (filename, image, "image/jpeg")}, data=form)
