"""A Ray cluster and Serve for the benchmarks and rehearsals: a local cluster of this
process's own (never someone else's), Serve on a free loopback port, serve_config.yaml
read, cut down to the apps under test and overridden, applications deployed, and waits
with deadlines."""

from __future__ import annotations

import copy
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from serve_app.config.settings import REPO_ROOT
from serve_app.web.edge import PROXY_CALLBACK, PROXY_CALLBACK_ENV
from serve_app.web.ports import free_port

SERVE_CONFIG = REPO_ROOT / "serve_config.yaml"

# Read by Ray's processes, so set before Ray starts. Stand-ins serve the test assets
# where production weights are absent (the anonymize app's morphable model among them).
# The proxy runs the app's edge middleware (serve_app/web/edge.py), as in production: the
# proxy's own 503s come out in the error shape too.
STAND_INS = {"FACEGRAPH_ALLOW_STAND_INS": "1"}
EDGE = {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
REHEARSAL_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_SERVE_LOG_TO_STDERR": "0", **STAND_INS, **EDGE}
# The small weights CI has (as tests/conftest.py's model tier), by model.
TEST_WEIGHTS = {
    "SegFormerParser": "segformer-parser-tiny",
    "RetinaFace": "retinaface-det-500m",
    "ArcFace": "arcface-mobilefacenet-128d",
    "TDDFA": "tddfa-mb05-120",
}

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local single-user cluster: no token auth


def start_ray(num_cpus: int | None = None, env: dict[str, str] | None = None) -> None:
    """A local Ray cluster (address="local": never one already running on the box),
    `env` set first: Ray's processes inherit the environment it starts with."""
    import ray

    os.environ.update(env or {})
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def start_serve(location: str = "EveryNode") -> str:
    """Serve's controller and proxy on 127.0.0.1 and a free port; -> the base URL."""
    from ray import serve

    port = free_port()
    serve.start(proxy_location=location, http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def deploy(doc: dict, location: str | None = None) -> str:
    """Serve started (start_serve), then the applications of a serve config deployed as
    `serve deploy` does: the controller imports each import_path and applies every
    deployment option. Returns at once with the base URL: the caller waits its own way
    (all_running, or each route answering)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    base = start_serve(location or doc.get("proxy_location", "EveryNode"))
    host, port = base.removeprefix("http://").split(":")
    doc = {**doc, "http_options": {**doc.get("http_options", {}), "host": host, "port": int(port)}}
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(doc))
    return base


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


# ---- serve_config.yaml, as a benchmark runs it ------------------------------------------


def read_config(path: Path = SERVE_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


def apply_override(doc: dict, override: str) -> None:
    """DEPLOYMENT.KEY[.KEY...]=YAML, e.g. ArcFace.autoscaling_config.min_replicas=2:
    a deployment option changed for one run (what-if runs for tuning serve_config.yaml)."""
    path, _, raw = override.partition("=")
    name, *keys = path.split(".")
    deployments = [d for a in doc["applications"] for d in a.get("deployments", []) if d["name"] == name]
    if not deployments or not keys:
        raise SystemExit(f"{override!r}: no deployment {name!r} or no key")
    node = deployments[0]
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw)


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
    by_name = {a["name"]: copy.deepcopy(a) for a in read_config()["applications"]}
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


# ---- waits ---------------------------------------------------------------------------------


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


def wait_running(doc: dict, timeout_s: float = 300) -> float:
    """Seconds until every application of a deployed config is RUNNING."""
    return wait_until(lambda: all_running([a["name"] for a in doc["applications"]]), timeout_s, "applications RUNNING")


def wait_ready(base: str, routes: list[str], timeout_s: float) -> float:
    """perf_counter when every route answered 200 (polled every 0.25 s)."""
    import httpx

    pending, deadline = set(routes), time.perf_counter() + timeout_s
    with httpx.Client(timeout=5) as client:
        while pending:
            for route in sorted(pending):
                try:
                    if client.get(base + route).status_code == 200:
                        pending.discard(route)
                except httpx.HTTPError:
                    pass
            if not pending:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"not ready after {timeout_s:g} s: {sorted(pending)}")
            time.sleep(0.25)
    return time.perf_counter()


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


def shutdown() -> None:
    """Serve, then Ray (what every benchmark's `finally` does)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
