"""Every performance comparison of the project in one run, one table at the end:

  P1      POST /extract-faces over HTTP, at the best of --p1-clients, against the plain
          insightface loop users run (det_500m + the 128-d ArcFace, one image at a
          time, file read included; perf/baselines.py PlainLoop), in photos/s;
  P2      POST /v1/face-mask over HTTP against the seed-style service (perf/baselines.py
          SeedFaceMask: one request at a time, the same models run serially), both at
          --clients clients;
  P3      every endpoint over HTTP against the same work in this process
          (harness/endpoints.py InProcess), both at --clients requests in flight, each
          at its intended use: /extract-faces with --photos-per-request photos a
          request, the others with one image. Beside it Serve's floor: the CPU per
          request of the same graph shape with no work in it (perf/serve_floor.py,
          FaceGraph's app shell and HTTP edge, measured first in the same run), the
          in-process work's CPU per request, and the bound they set, work / (work +
          floor). CPU is counted for this run's processes only (procs.run_cpu_seconds),
          so other work on a shared machine does not count as either;
  parser  the face parser's ROIs/s on ONNX Runtime (fp32, int8) against torch, and the
          ONNX masks' IoU against torch's (perf/parser_runtime.py);
  cold    `serve run`-equivalent deploy of every app in the serve config (Ray already
          up) until every app's /ready answers 200, and each replica's RSS;
  latency p50 / p95 per endpoint at 1 and --clients clients over HTTP, and the cores
          each Serve process used at --clients clients (where the time goes).

The two sides of every ratio take turns (--rounds rounds of: a pass over the endpoint's
images on one side, then on the other), so a load that comes and goes on a shared box
hits both alike; the load average is printed with the table. Before its turns each
endpoint gets --steady-s seconds of HTTP load, not counted, so the graph is measured as
the autoscaler has scaled it for that load (its replicas then stay: scale-down waits
10 minutes). The served graph is the repo's serve_config.yaml as it is (on a free
loopback port; --asset, --parser-runtime and --deployment applied to a temporary copy),
with the test stand-ins where production weights are absent (FACEGRAPH_ALLOW_STAND_INS=1,
as scripts/serve.sh); the in-process references build the same models from the same copy.

    python -m bench all [--quick] [--sections parser graph] [--endpoints extract-faces ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.harness.cluster import EDGE, STAND_INS, apply_override, deploy, read_config, shutdown, start_ray, wait_ready
from bench.harness.endpoints import ENDPOINTS, PHOTOS_PER_REQUEST, Endpoint, InProcess
from bench.harness.load import Run, http_run, inprocess_run
from bench.harness.procs import (
    Proc,
    box_busy_seconds,
    cpu_seconds,
    load,
    named,
    rss_mib,
    run_cpu_seconds,
    serve_processes,
)

for _key, _value in {**STAND_INS, **EDGE}.items():
    os.environ.setdefault(_key, _value)  # before settings() is first read, and before Ray starts

SECTIONS = ("parser", "graph")
BOX = "whole machine"  # every process: Serve's, the clients, Ray's raylet and GCS, anything else
CLIENTS = "bench (the HTTP clients)"


def bench_config(args, folder: Path) -> Path:
    """The serve config as run here: --asset, --parser-runtime and --deployment applied
    to the `models` block and the deployments, in a copy under `folder`."""
    import yaml

    from serve_app.config.model_tier import MODEL_APP

    doc = read_config(Path(args.serve_config))
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


# ---- sections ----------------------------------------------------------------------


def section_parser(args, out: dict) -> None:
    from bench.perf.parser_runtime import mask_ious, roi_rates

    rates = roi_rates(args.parser_speed_asset, threads=os.cpu_count() or 1, max_rois=8 if args.quick else 16)
    out["parser_rates"] = rates
    out["parser_ious"] = {asset: mask_ious(asset, threads=os.cpu_count() or 1) for asset in args.parser_iou_assets}
    print(f"parser done ({load()}): {rates}", flush=True)


class Side:
    """One side of a comparison: `run(n)` does n requests' work and returns their
    latencies (ms); the side adds up requests, wall time and latencies over its turns,
    and the CPU seconds of this run's processes (run_cpu_seconds), of this process alone,
    and of the whole machine (other work on it included)."""

    def __init__(self, run, per_request: int = 1):
        self.run, self.per_request = run, per_request
        self.requests, self.seconds, self.latencies = 0, 0.0, []
        self.run_cpu = self.own_cpu = self.box_cpu = 0.0

    def turn(self, n: int) -> None:
        run, own, box = run_cpu_seconds(), cpu_seconds(os.getpid()), box_busy_seconds()
        start = time.perf_counter()
        self.latencies += self.run(n)
        self.seconds += time.perf_counter() - start
        self.run_cpu += run_cpu_seconds() - run
        self.own_cpu += cpu_seconds(os.getpid()) - own
        self.box_cpu += box_busy_seconds() - box
        self.requests += n

    def result(self) -> Run:
        return Run(self.requests / self.seconds, self.latencies, self.per_request)

    def cpu_ms(self) -> tuple[float, float]:
        """(CPU ms per request of this run's processes, of it this process's)."""
        return 1000 * self.run_cpu / self.requests, 1000 * self.own_cpu / self.requests


def take_turns(sides: dict[str, Side], n: int, rounds: int, watch: str | None = None):
    """Every side does n requests per round, in turn, `rounds` times. With `watch`,
    also {process name: cores used} by the Serve processes while that side ran
    (replicas the autoscaler starts are counted from the next turn on)."""
    used: dict[int, float] = {}
    seen: dict[int, Proc] = {}
    for side in sides.values():
        side.run(1)  # warm-up, not counted: first calls allocate, load lazily, fill caches
    for _ in range(rounds):
        for name, side in sides.items():
            if name != watch:
                side.turn(n)
                continue
            procs = [*serve_processes(), Proc(CLIENTS, os.getpid(), "", "")]
            seen.update({p.pid: p for p in procs})
            before = {p.pid: cpu_seconds(p.pid) for p in procs}
            side.turn(n)
            for pid, start in before.items():
                now = cpu_seconds(pid)
                if now:  # 0: gone meanwhile
                    used[pid] = used.get(pid, 0.0) + now - start
    watched = sides.get(watch)
    if not watched:
        return {name: side.result() for name, side in sides.items()}, {}
    cores = named(list(seen.values()), {pid: v / watched.seconds for pid, v in used.items()})
    cores[BOX] = watched.box_cpu / watched.seconds
    return {name: side.result() for name, side in sides.items()}, cores


def http_side(send, clients: int, per_request: int = 1) -> Side:
    def run(n: int) -> list[float]:
        return http_run(send, n, clients, warmup=False).latencies_ms

    return Side(run, per_request)


def inprocess_side(work, payloads, concurrency: int, per_request: int = 1) -> Side:
    def run(n: int) -> list[float]:
        return inprocess_run(lambda i: work(payloads[i % len(payloads)]), n, concurrency, warmup=False).latencies_ms

    return Side(run, per_request)


def loop_side(endpoint: Endpoint) -> Side:
    """The plain insightface loop over the photos of each of the endpoint's requests."""
    from bench.perf.baselines import PlainLoop
    from serve_app.config.assets import resolve

    loop = PlainLoop("retinaface-det-500m", "arcface-mobilefacenet-128d")
    folder = resolve(endpoint.images)
    groups = [[folder / name for name, _ in group] for group in endpoint.requests()]

    def run(n: int) -> list[float]:
        latencies = []
        for i in range(n):
            start = time.perf_counter()
            loop.run(groups[i % len(groups)])
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    return Side(run, endpoint.per_request)


def seed_side(config: Path, clients: int):
    """The seed-style service started in this process, as a Side, and the service."""
    from bench.perf.baselines import SeedFaceMask
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
    from ray import serve

    from bench.perf import serve_floor

    endpoints = {name: ENDPOINTS[name] for name in args.endpoints}
    if "extract-faces" in endpoints:
        endpoints["extract-faces"] = replace(endpoints["extract-faces"], per_request=args.photos_per_request)
    doc = read_config(config)
    start = time.perf_counter()
    start_ray()
    out["ray_start_s"] = time.perf_counter() - start
    local = InProcess(config)
    try:
        if args.floor_seconds > 0:
            # Serve's floor first, alone on the machine: the empty graph in FaceGraph's shell
            # (the edge is in the proxy: EDGE set before Ray started), at each request size.
            floor_base = serve_floor.deploy_floor(our_shell=True)
            out["floor"] = {}
            for photos in sorted({e.per_request for e in endpoints.values()}):
                floor = serve_floor.measure(floor_base, photos, args.clients, args.floor_seconds)
                out["floor"][photos] = floor
                print(f"Serve floor, {photos} photo(s) a request: {floor.serve_ms:.1f} ms ({load()})", flush=True)
            serve.shutdown()
        start = time.perf_counter()
        base = deploy(doc)
        ready = wait_ready(base, [e.ready for e in endpoints.values()] + ["/healthz"], args.ready_timeout)
        out["cold_start_s"] = ready - start
        print(f"all apps ready {out['cold_start_s']:.1f} s after deploy ({load()})", flush=True)
        out["rss_ready"] = replica_rss()
        out["http"], out["inprocess"], out["cpu"], out["cpu_ms"] = {}, {}, {}, {}
        for endpoint in endpoints.values():
            compare_endpoint(args, out, endpoint, base, local, config)
        out["rss_loaded"] = replica_rss()
    finally:
        local.close()
        shutdown()


def compare_endpoint(args, out: dict, endpoint: Endpoint, base: str, local: InProcess, config: Path) -> None:
    name, per = endpoint.name, endpoint.per_request
    payloads = endpoint.payloads()

    def send(client, i):
        return endpoint.send(client, base, payloads[i % len(payloads)])

    http_key = f"http@{args.clients}"
    sides = {
        http_key: http_side(send, args.clients, per),
        "inprocess": inprocess_side(local.work(name), payloads, args.clients, per),
    }
    seed = None
    if name == "extract-faces":
        sides["loop"] = loop_side(endpoint)
        for clients in args.p1_clients:
            sides.setdefault(f"http@{clients}", http_side(send, clients, per))
    if name == "face-mask":
        sides["seed"], seed = seed_side(config, args.clients)
    n = len(payloads) if args.quick else max(len(payloads), 2 * args.clients)
    steady_load(send, args.clients, 0 if args.quick else args.steady_s)
    try:
        runs, cores = take_turns(sides, n, 1 if args.quick else args.rounds, watch=http_key)
    finally:
        if seed is not None:
            seed.stop()
    single = http_side(send, 1, per)
    single.turn(len(payloads))
    http = {1: single.result(), **{int(k[5:]): r for k, r in runs.items() if k.startswith("http@")}}
    out["http"][name] = dict(sorted(http.items()))
    out["inprocess"][name] = runs["inprocess"]
    out["cpu"][name] = cores
    out["cpu_ms"][name] = {
        "per_request": per,
        "http": sides[http_key].cpu_ms(),
        "inprocess": sides["inprocess"].cpu_ms(),
    }
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


def replica_rss() -> dict[str, float]:
    """{Serve process name: RSS MiB}."""
    procs = serve_processes()
    return named(procs, {p.pid: rss for p in procs if (rss := rss_mib(p.pid)) is not None})


# ---- the table ----------------------------------------------------------------------


def work_and_floor(out: dict, name: str) -> tuple[float, float] | None:
    """(the work: CPU ms per request in-process, all of it in this process; Serve's floor
    at the same request size in ms), or None without a floor measured."""
    cpu, floors = out.get("cpu_ms", {}).get(name), out.get("floor", {})
    if not cpu or cpu["per_request"] not in floors:
        return None
    return cpu["inprocess"][1], floors[cpu["per_request"]].serve_ms


def ratio_rows(args, out: dict) -> list[tuple[str, str, str, str]]:
    """(comparison, measured, target, beside it)."""
    rows = []
    http = out.get("http", {})
    if "loop" in out and "extract-faces" in http:
        best = max(http["extract-faces"].items(), key=lambda cr: cr[1].item_rate)
        per = out["loop"].items_per_request
        rows.append(
            (
                f"P1 /extract-faces HTTP (best: {best[0]} clients) / insightface loop, photos/s",
                f"{best[1].item_rate / out['loop'].item_rate:.2f}x",
                ">= 1.3",
                f"{per} photo(s) a request",
            )
        )
    if "seed" in out and "face-mask" in http:
        rows.append(
            (
                f"P2 /v1/face-mask HTTP / seed-style serial service, {args.clients} clients",
                f"{http['face-mask'][args.clients].rate / out['seed'].rate:.2f}x",
                ">= 1.0",
                "",
            )
        )
    for name, run in out.get("inprocess", {}).items():
        if name in http:
            beside = ""
            if found := work_and_floor(out, name):
                work, floor = found
                beside = f"work {work:.0f} + floor {floor:.0f} ms: bound {work / (work + floor):.2f}"
            per = run.items_per_request
            rows.append(
                (
                    f"P3 {name} ({per} image{'s' if per > 1 else ''} a request): HTTP / in-process, "
                    f"{args.clients} in flight",
                    f"{http[name][args.clients].rate / run.rate:.2f}x",
                    ">= 0.9",
                    beside,
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
                    "",
                )
            )
    for asset, ious in out.get("parser_ious", {}).items():
        for runtime, values in ious.items():
            rows.append(
                (
                    f"parser {runtime} face-mask IoU vs torch ({asset}), min / mean",
                    f"{min(values):.4f} / {sum(values) / len(values):.4f}",
                    ">= 0.98",
                    "",
                )
            )
    if "cold_start_s" in out:
        rows.append(("cold start: deploy -> every /ready 200", f"{out['cold_start_s']:.1f} s", "<= 30 s", ""))
    return rows


def print_table(args, out: dict) -> None:
    print(f"\n== FaceGraph bench, {os.cpu_count()} CPUs, {load()}")
    print(f"{'comparison':80s} {'measured':>18s}  {'target':8s} beside it")
    for name, value, target, beside in ratio_rows(args, out):
        print(f"{name:80s} {value:>18s}  {target:8s} {beside}")
    header = "\n{:21s} {:>6s} {:>8s} {:>9s} {:>9s} {:>9s}"
    row = "{:21s} {:6d} {:8.2f} {:9.2f} {:9.0f} {:9.0f}"
    if out.get("http"):
        print(header.format("endpoint (HTTP)", "flight", "req/s", "images/s", "p50 ms", "p95 ms"))
        for name, runs in out["http"].items():
            for clients, run in runs.items():
                print(row.format(name, clients, run.rate, run.item_rate, run.p50, run.p95))
    if out.get("inprocess"):
        print(header.format("endpoint (in-process)", "flight", "req/s", "images/s", "p50 ms", "p95 ms"))
        for name, run in out["inprocess"].items():
            print(row.format(name, args.clients, run.rate, run.item_rate, run.p50, run.p95))
    print_work_and_floor(args, out)
    extra = [
        ("insightface loop (photos/s)", out["loop"].item_rate if "loop" in out else None),
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


def print_work_and_floor(args, out: dict) -> None:
    """Work vs overhead per request, in CPU ms of this run's processes: in-process (the
    work, all in this process), served over HTTP less the HTTP clients' share, their
    difference (what serving cost here), and Serve's floor at the same request size (the
    empty graph). The in-process CPU overstates the work where one process runs it less
    efficiently than the replicas (one GIL, every model on every core): the difference
    can then be near 0."""
    if not out.get("cpu_ms"):
        return
    floors = out.get("floor", {})
    for photos, f in sorted(floors.items()):
        print(
            f"\nServe floor, {photos} photo(s) a request (empty extract-faces graph in FaceGraph's shell, "
            f"{args.clients} clients): {f.rate:.1f} req/s, CPU {f.cpu_ms:.1f} ms a request, "
            f"{f.clients_ms:.1f} of it the HTTP clients: floor {f.serve_ms:.1f} ms"
        )
    print(
        f"\n{'CPU ms a request':24s} {'images':>6s} {'in-process':>10s} {'served':>8s} {'overhead':>9s} "
        f"{'floor':>7s} {'work/(work+floor)':>18s}"
    )
    for name, cpu in out["cpu_ms"].items():
        work = cpu["inprocess"][1]
        served = cpu["http"][0] - cpu["http"][1]  # less the HTTP clients (this process)
        floor = floors.get(cpu["per_request"])
        shown = f"{floor.serve_ms:7.1f} {work / (work + floor.serve_ms):18.2f}" if floor else f"{'-':>7s} {'-':>18s}"
        print(f"{name:24s} {cpu['per_request']:6d} {work:10.1f} {served:8.1f} {served - work:9.1f} {shown}")


def main(argv: list[str] | None = None) -> int:
    from serve_app.config.settings import REPO_ROOT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument(
        "--photos-per-request",
        type=int,
        default=PHOTOS_PER_REQUEST,
        help="photos in one /extract-faces request (P1, P3); 1: as measured before BENCHMARKS.md's 2026-12 runs",
    )
    ap.add_argument("--rounds", type=int, default=3, help="turns each side of a comparison takes")
    ap.add_argument(
        "--steady-s",
        type=float,
        default=30,
        help="seconds of HTTP load per endpoint before its turns (not counted): the autoscaler's time to scale up",
    )
    ap.add_argument(
        "--floor-seconds",
        type=float,
        default=None,
        help="seconds of load on the empty graph per request size for Serve's floor (0: no floor) "
        "[default: 15, --quick 3]",
    )
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--quick", action="store_true", help="one pass, fewer ROIs: a smoke run, not a measurement")
    args = ap.parse_args(argv)
    if args.floor_seconds is None:
        args.floor_seconds = 3 if args.quick else 15
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
