"""Every performance comparison of the project in one run, one table at the end:

  P1      POST /extract-faces over HTTP, at the best of --p1-clients, against the plain
          insightface loop users run (det_500m + the 128-d ArcFace, one image at a
          time, file read included; bench_face_extract.PlainLoop);
  P2      POST /v1/face-mask over HTTP against the seed-style service (bench/seed_service.py:
          one request at a time, the same models run serially), both at --clients clients;
  P3      every endpoint over HTTP against the same work in this process
          (bench/endpoints.py InProcess), both at --clients requests in flight;
  parser  the face parser's ROIs/s on ONNX Runtime (fp32, int8) against torch, and the
          ONNX masks' IoU against torch's (bench/bench_parser_runtime.py);
  cold    `serve run`-equivalent deploy of every app in the serve config (Ray already
          up) until every app's /ready answers 200, and each replica's RSS;
  latency p50 / p95 per endpoint at 1 and --clients clients over HTTP, and the cores
          each Serve process used at --clients clients (where the time goes).

The two sides of every ratio take turns (--rounds rounds of: a pass over the endpoint's
images on one side, then on the other), so a load that comes and goes on a shared box
hits both alike; the load average is printed with the table. Before its turns each
endpoint gets --steady-s seconds of HTTP load, not counted, so the graph is measured as
the autoscaler has scaled it for that load (its replicas then stay: scale-down waits
10 minutes). The served graph is the repo's serve_config.yaml as it is (port moved to a
free one; --asset, --parser-runtime and --deployment applied to a temporary copy), with
the test stand-ins where production weights are absent (FACEGRAPH_ALLOW_STAND_INS=1, as
scripts/serve.sh); the in-process references build the same models from the same copy.

    python -m bench all [--quick] [--sections parser graph] [--endpoints extract-faces ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("FACEGRAPH_ALLOW_STAND_INS", "1")  # before settings() is first read
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from bench.common import Run, free_port, http_run, inprocess_run  # noqa: E402
from bench.endpoints import ENDPOINTS, InProcess  # noqa: E402

SECTIONS = ("parser", "graph")


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def bench_config(args, folder: Path) -> Path:
    """The serve config as run here: a free port on 127.0.0.1, --asset and
    --parser-runtime applied to the `models` block."""
    import yaml

    from serve_app.config.model_tier import MODEL_APP

    doc = yaml.safe_load(Path(args.serve_config).read_text())
    doc["http_options"] = {**doc.get("http_options", {}), "host": "127.0.0.1", "port": free_port()}
    models = next(a for a in doc["applications"] if a["name"] == MODEL_APP)["args"]["models"]
    for override in args.asset:
        name, _, asset = override.partition("=")
        models.setdefault(name, {})["asset"] = asset
    if args.parser_runtime:
        block = models.setdefault("SegFormerParser", {})
        block["config"] = {**(block.get("config") or {}), "runtime": args.parser_runtime}
    for override in args.deployment:
        apply_override(doc, override)
    path = folder / "serve_config.bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def apply_override(doc: dict, override: str) -> None:
    """DEPLOYMENT.KEY[.KEY...]=YAML, e.g. ArcFace.autoscaling_config.min_replicas=2
    (what-if runs for tuning serve_config.yaml)."""
    import yaml

    path, _, raw = override.partition("=")
    name, *keys = path.split(".")
    deployments = [d for a in doc["applications"] for d in a.get("deployments", []) if d["name"] == name]
    if not deployments or not keys:
        raise SystemExit(f"--deployment {override!r}: no deployment {name!r} or no key")
    node = deployments[0]
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw)


# ---- sections ----------------------------------------------------------------------


def section_parser(args, out: dict) -> None:
    from bench.bench_parser_runtime import mask_ious, roi_rates

    rates = roi_rates(args.parser_speed_asset, threads=os.cpu_count() or 1, max_rois=8 if args.quick else 16)
    out["parser_rates"] = rates
    out["parser_ious"] = {asset: mask_ious(asset, threads=os.cpu_count() or 1) for asset in args.parser_iou_assets}
    print(f"parser done ({load()}): {rates}", flush=True)


class Side:
    """One side of a comparison: `run(n)` does n requests' work and returns their
    latencies (ms); the side adds up items, wall time and latencies over its turns."""

    def __init__(self, run):
        self.run, self.items, self.seconds, self.latencies = run, 0, 0.0, []

    def turn(self, n: int) -> None:
        start = time.perf_counter()
        self.latencies += self.run(n)
        self.seconds += time.perf_counter() - start
        self.items += n

    def result(self) -> Run:
        return Run(self.items / self.seconds, self.latencies)


def take_turns(sides: dict[str, Side], n: int, rounds: int, watch: str | None = None):
    """Every side does n requests per round, in turn, `rounds` times. With `watch`,
    also {process name: cores used} by the Serve processes while that side ran
    (replicas the autoscaler starts are counted from the next turn on)."""
    used: dict[int, float] = {}
    names: dict[int, str] = {}
    wall = 0.0
    for side in sides.values():
        side.run(1)  # warm-up, not counted: first calls allocate, load lazily, fill caches
    for _ in range(rounds):
        for name, side in sides.items():
            if name != watch:
                side.turn(n)
                continue
            procs = {**serve_processes(), os.getpid(): "bench (the HTTP clients)"}
            names.update(procs)
            before, box_before, start = cpu_seconds(procs), box_busy_seconds(), time.perf_counter()
            side.turn(n)
            wall += time.perf_counter() - start
            after = cpu_seconds(procs)
            for pid in after:
                used[pid] = used.get(pid, 0.0) + after[pid] - before.get(pid, after[pid])
            used[0] = used.get(0, 0.0) + box_busy_seconds() - box_before
            names[0] = BOX
    cores = _named(names, {pid: v / wall for pid, v in used.items()}) if wall else {}
    return {name: side.result() for name, side in sides.items()}, cores


def http_side(send, clients: int) -> Side:
    def run(n: int) -> list[float]:
        return http_run(send, n, clients, warmup=False).latencies_ms

    return Side(run)


def inprocess_side(work, payloads, concurrency: int) -> Side:
    def run(n: int) -> list[float]:
        return inprocess_run(lambda i: work(payloads[i % len(payloads)]), n, concurrency, warmup=False).latencies_ms

    return Side(run)


def loop_side() -> Side:
    from bench.bench_face_extract import PlainLoop, images_of
    from serve_app.config.assets import resolve

    loop = PlainLoop("retinaface-det-500m", "arcface-mobilefacenet-128d")
    paths = images_of(resolve("test-images-photos"))

    def run(n: int) -> list[float]:
        latencies = []
        for i in range(n):
            start = time.perf_counter()
            loop.run([paths[i % len(paths)]])
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    return Side(run)


def seed_side(config: Path, clients: int):
    """The seed-style service started in this process, as a Side, and the service."""
    from bench.seed_service import SeedFaceMask
    from deployments.types import Placement
    from serve_app.config.model_tier import model_config, serve_config_models

    blocks = serve_config_models(config)
    built = {}
    for name in ("LBPDetector", "SegFormerParser"):
        cls, cfg, _ = model_config(name, blocks.get(name))
        built[name] = cls(cfg, Placement(threads=os.cpu_count() or 1))  # a seed process uses every core
    seed = SeedFaceMask(built["LBPDetector"], built["SegFormerParser"]).start()
    inputs = ENDPOINTS["face-mask"].inputs()
    return http_side(lambda client, i: client.post(seed.url, content=inputs[i % len(inputs)][1]), clients), seed


def section_graph(args, out: dict, config: Path) -> None:
    import ray
    import yaml
    from ray.serve._private import api as serve_api
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.schema import ServeDeploySchema

    from serve_app.web.edge import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # the HTTP edge, as `facegraph serve`
    doc = yaml.safe_load(config.read_text())
    base = f"http://127.0.0.1:{doc['http_options']['port']}"
    start = time.perf_counter()
    ray.init(address="local", namespace=SERVE_NAMESPACE, include_dashboard=False, log_to_driver=False)
    out["ray_start_s"] = time.perf_counter() - start
    local = InProcess(config)
    try:
        schema = ServeDeploySchema.model_validate(doc)
        start = time.perf_counter()
        client = serve_api.serve_start(
            http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
        )
        client.deploy_apps(schema, _blocking=False)
        ready = wait_ready(base, [e.ready for e in ENDPOINTS.values()] + ["/healthz"], args.ready_timeout)
        out["cold_start_s"] = ready - start
        print(f"all apps ready {out['cold_start_s']:.1f} s after deploy ({load()})", flush=True)
        out["rss_ready"] = replica_rss(serve_processes())
        out["http"], out["inprocess"], out["cpu"] = {}, {}, {}
        for name in args.endpoints:
            compare_endpoint(args, out, name, base, local, config)
        out["rss_loaded"] = replica_rss(serve_processes())
    finally:
        from ray import serve

        local.close()
        serve.shutdown()
        ray.shutdown()


def compare_endpoint(args, out: dict, name: str, base: str, local: InProcess, config: Path) -> None:
    endpoint = ENDPOINTS[name]
    payloads = endpoint.payloads()

    def send(client, i):
        return endpoint.send(client, base, payloads[i % len(payloads)])

    sides = {
        f"http@{args.clients}": http_side(send, args.clients),
        "inprocess": inprocess_side(local.work(name), payloads, args.clients),
    }
    seed = None
    if name == "extract-faces":
        sides["loop"] = loop_side()
        for clients in args.p1_clients:
            sides.setdefault(f"http@{clients}", http_side(send, clients))
    if name == "face-mask":
        sides["seed"], seed = seed_side(config, args.clients)
    n = len(payloads) if args.quick else max(len(payloads), 2 * args.clients)
    steady_load(send, args.clients, 0 if args.quick else args.steady_s)
    try:
        runs, cores = take_turns(sides, n, 1 if args.quick else args.rounds, watch=f"http@{args.clients}")
    finally:
        if seed is not None:
            seed.stop()
    single = http_side(send, 1)
    single.turn(len(payloads))
    http = {1: single.result(), **{int(k[5:]): r for k, r in runs.items() if k.startswith("http@")}}
    out["http"][name] = dict(sorted(http.items()))
    out["inprocess"][name] = runs["inprocess"]
    out["cpu"][name] = cores
    if "loop" in runs:
        out["loop"] = runs["loop"]
    if "seed" in runs:
        out["seed"] = runs["seed"]
    shown = ", ".join(f"{k} {r.rate:.2f}" for k, r in runs.items())
    print(f"{name}: req/s {shown}, http@1 {single.result().rate:.2f} ({load()})", flush=True)


def steady_load(send, clients: int, seconds: float) -> None:
    """HTTP load at `clients` clients for `seconds`, not counted: the autoscaler adds
    replicas only after upscale_delay_s of sustained load, and one turn of a comparison
    lasts a few seconds, so without this the graph is measured before it has scaled to
    the load (what a user with a steady load sees is the scaled graph)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        http_run(send, 4 * clients, clients, warmup=False)


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


def serve_processes() -> dict[int, str]:
    """{pid: name} of the Serve processes this run started (descendants of this
    process: other Ray clusters on the box are not counted); names like
    ServeReplica:models:ArcFace, ProxyActor, ServeController."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = {}, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            title = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        # A replica's title carries the method it is running: keep app and deployment.
        match = re.match(r"ray::(ServeReplica:[^:.]+:[^:.\s]+|ProxyActor|ServeController)", title)
        if match:
            found[pid] = match.group(1)
    return found


def _named(procs: dict[int, str], values: dict[int, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, value in values.items():
        key = procs[pid]
        while key in out:  # a second replica of the same deployment
            key += "'"
        out[key] = value
    return out


def replica_rss(procs: dict[int, str]) -> dict[str, float]:
    """{process name: RSS MiB}."""
    values = {}
    for pid in procs:
        try:
            status = (Path("/proc") / str(pid) / "status").read_text()
        except OSError:
            continue
        values[pid] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
    return _named(procs, values)


BOX = "whole machine"  # every process: Serve's, the clients, Ray's raylet and GCS, anything else


def box_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat minus idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(procs: dict[int, str]) -> dict[int, float]:
    """{pid: user + system CPU seconds so far}."""
    tick, values = os.sysconf("SC_CLK_TCK"), {}
    for pid in procs:
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        values[pid] = (int(fields[11]) + int(fields[12])) / tick
    return values


# ---- the table ----------------------------------------------------------------------


def ratio_rows(args, out: dict) -> list[tuple[str, str, str]]:
    rows = []
    http = out.get("http", {})
    if "loop" in out and "extract-faces" in http:
        best = max(http["extract-faces"].items(), key=lambda cr: cr[1].rate)
        rows.append(
            (
                f"P1 /extract-faces HTTP (best: {best[0]} clients) / insightface loop",
                f"{best[1].rate / out['loop'].rate:.2f}x",
                ">= 1.3",
            )
        )
    if "seed" in out and "face-mask" in http:
        rows.append(
            (
                f"P2 /v1/face-mask HTTP / seed-style serial service, {args.clients} clients",
                f"{http['face-mask'][args.clients].rate / out['seed'].rate:.2f}x",
                ">= 1.0",
            )
        )
    for name, run in out.get("inprocess", {}).items():
        if name in http:
            rows.append(
                (
                    f"P3 {name}: HTTP / in-process, {args.clients} in flight",
                    f"{http[name][args.clients].rate / run.rate:.2f}x",
                    ">= 0.9",
                )
            )
    rates = out.get("parser_rates", {})
    for runtime in ("onnx", "onnx-int8"):
        if runtime in rates:
            rows.append(
                (
                    f"parser {runtime} / torch ROI/s ({args.parser_speed_asset})",
                    f"{rates[runtime] / rates['torch']:.2f}x",
                    ">= 1.5" if runtime == "onnx-int8" else "",
                )
            )
    for asset, ious in out.get("parser_ious", {}).items():
        for runtime, values in ious.items():
            rows.append(
                (
                    f"parser {runtime} face-mask IoU vs torch ({asset}), min / mean",
                    f"{min(values):.4f} / {sum(values) / len(values):.4f}",
                    ">= 0.98",
                )
            )
    if "cold_start_s" in out:
        rows.append(("cold start: deploy -> every /ready 200", f"{out['cold_start_s']:.1f} s", "<= 30 s"))
    return rows


def print_table(args, out: dict) -> None:
    print(f"\n== FaceGraph bench, {os.cpu_count()} CPUs, {load()}")
    print(f"{'comparison':72s} {'measured':>18s}  target")
    for name, value, target in ratio_rows(args, out):
        print(f"{name:72s} {value:>18s}  {target}")
    if out.get("http"):
        print(f"\n{'endpoint (HTTP)':20s} {'clients':>7s} {'req/s':>8s} {'p50 ms':>9s} {'p95 ms':>9s}")
        for name, runs in out["http"].items():
            for clients, run in runs.items():
                print(f"{name:20s} {clients:7d} {run.rate:8.2f} {run.p50:9.0f} {run.p95:9.0f}")
    if out.get("inprocess"):
        print(f"\n{'endpoint (in-process)':20s} {'flight':>7s} {'req/s':>8s} {'p50 ms':>9s} {'p95 ms':>9s}")
        for name, run in out["inprocess"].items():
            print(f"{name:20s} {args.clients:7d} {run.rate:8.2f} {run.p50:9.0f} {run.p95:9.0f}")
    extra = [
        ("insightface loop (images/s)", out["loop"].rate if "loop" in out else None),
        ("seed-style face-mask (req/s)", out["seed"].rate if "seed" in out else None),
        ("ray start (s)", out.get("ray_start_s")),
    ]
    for name, value in extra:
        if value is not None:
            print(f"{name:40s} {value:8.2f}")
    if out.get("parser_rates"):
        print("parser ROI/s: " + ", ".join(f"{k} {v:.2f}" for k, v in out["parser_rates"].items()))
    for name, cores in out.get("cpu", {}).items():
        cores = dict(cores)
        box = cores.pop(BOX, None)
        busy = sorted(((v, k) for k, v in cores.items() if v >= 0.02), reverse=True)
        print(
            f"\ncores used during HTTP {name} at {args.clients} clients (of {os.cpu_count()}; "
            + (f"whole machine {box:.2f}; " if box is not None else "")
            + f"these processes {sum(cores.values()):.2f}): "
            + ", ".join(f"{k} {v:.2f}" for v, k in busy)
        )
    for key, label in (("rss_ready", "RSS MiB per process, all apps ready"), ("rss_loaded", "after the HTTP runs")):
        if out.get(key):
            print(f"\n{label}:")
            for title, mib in sorted(out[key].items()):
                print(f"  {title:60s} {mib:7.0f}")
            print(f"  {'total':60s} {sum(out[key].values()):7.0f}")


def main(argv: list[str] | None = None) -> int:
    from serve_app.config.settings import REPO_ROOT

    ap = argparse.ArgumentParser(
        prog="python -m bench all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=list(ENDPOINTS))
    ap.add_argument("--serve-config", default=str(REPO_ROOT / "serve_config.yaml"))
    ap.add_argument("--asset", action="append", default=[], metavar="MODEL=ASSET", help="weights override")
    ap.add_argument(
        "--parser-runtime",
        choices=("torch", "onnx", "onnx-int8", "auto"),
        default=None,
        help="SegFormerParser runtime for the served and in-process graphs (default: the config's)",
    )
    ap.add_argument(
        "--deployment",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="a deployment option of the served config, e.g. ArcFace.autoscaling_config.min_replicas=2",
    )
    ap.add_argument("--parser-speed-asset", default="segformer-parser-b5-random")
    ap.add_argument("--parser-iou-assets", nargs="+", default=["face-parser-unet-small", "segformer-parser-tiny"])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--p1-clients", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=3, help="turns each side of a comparison takes")
    ap.add_argument(
        "--steady-s",
        type=float,
        default=30,
        help="seconds of HTTP load per endpoint before its turns (not counted): the autoscaler's time to scale up",
    )
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--quick", action="store_true", help="one pass, fewer ROIs: a smoke run, not a measurement")
    args = ap.parse_args(argv)
    print(f"start: {load()}", flush=True)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="facegraph_bench_") as tmp:
        config = bench_config(args, Path(tmp))
        steps = {"parser": lambda: section_parser(args, out), "graph": lambda: section_graph(args, out, config)}
        for name in SECTIONS:
            if name in args.sections:
                steps[name]()
                gc.collect()
    print_table(args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
