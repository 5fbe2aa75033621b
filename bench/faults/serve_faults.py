"""Serve faults, rehearsed on a local Ray cluster of its own: the face_extract app and
its two models deployed from serve_config.yaml (test weights, fixed replica counts,
RetinaFace at 2 replicas), load on POST /extract-faces over loopback.

  replica-killed: steady load from --clients closed-loop clients; after --before s one
      RetinaFace replica's process gets SIGKILL; the load goes on for --after s.
      Figures: failed requests (goal <= 1 %), time until throughput is back (goal
      <= 30 s), time until Serve runs a replacement replica.
  overload: the sustainable rate, measured with --saturate clients for --measure s,
      then an open-loop load at --factor x that rate for --overload s. Figures: answers
      by status, latency of the 200s and of the 503s, Retry-After and the error shape on
      every 503, RSS and open fds of every Serve process before, at peak and after.

    python -m bench serve_faults [--scenario replica-killed overload] [--json OUT]

tests/faults/test_serve_faults.py runs this and holds the figures to the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

import httpx

from bench.faults.common import argument_parser, write_json
from bench.harness import cluster, figures, procs
from bench.harness.endpoints import extract_faces_request
from bench.harness.load import ClosedLoop, open_loop, send_one

MODEL = "RetinaFace"  # the model whose replica is killed


def replica_killed(url: str, args) -> dict:
    send = extract_faces_request(url, args.images)
    load = ClosedLoop([send], args.clients, max_seconds=args.before + args.after + 30, max_requests=20_000).start()
    time.sleep(args.before)
    before = procs.replicas("models", MODEL)
    victim = before[0]
    # Killed while it computes (a thread of it running, polled for up to 3 s), so the
    # kill lands on calls it has accepted, not only on an idle process.
    busy = procs.wait_running_thread(victim.pid, timeout_s=3) if args.when_busy else False
    os.kill(victim.pid, signal.SIGKILL)
    fault_at = time.monotonic()
    replaced_s = None
    while time.monotonic() - fault_at < args.after:
        if replaced_s is None:
            alive = [p for p in procs.replicas("models", MODEL) if p.pid != victim.pid]
            if len(alive) >= len(before) and procs.healthy_replicas("models", MODEL) >= len(before):
                replaced_s = round(time.monotonic() - fault_at, 1)
        time.sleep(0.5)
    outcomes = load.stop()
    failed = [o for o in outcomes if not o.ok]
    seconds = int(max(o.end for o in outcomes) - load.t0) + 1
    return {
        "scenario": "replica-killed",
        "clients": args.clients,
        "images_per_request": args.images,
        "replicas": len(before),
        "killed_pid": victim.pid,
        "killed_while_running": busy,
        "fault_at_s": round(fault_at - load.t0, 1),
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_pct": round(100 * len(failed) / max(1, len(outcomes)), 2),
        "failures": figures.failures(outcomes),
        "recovery_s": figures.recovery_s(outcomes, fault_at, baseline_s=min(10, args.before - 2)),
        "replica_replaced_s": replaced_s,
        "calls_sent_again": cluster.count_in_logs("sending the call again"),
        "latency_ms": figures.percentiles([o.latency_s for o in outcomes if o.ok]),
        "ok_per_second": figures.per_second(outcomes, load.t0, seconds),
    }


def overload(url: str, args) -> dict:
    send = extract_faces_request(url, 1)
    measure = ClosedLoop([send], args.saturate, max_seconds=args.measure, max_requests=20_000)
    measure.start()
    time.sleep(args.measure)
    measured = measure.stop()
    warm = measure.t0 + 2
    done = [o for o in measured if o.ok and o.end >= warm]
    sustainable = len(done) / max(1e-9, max(o.end for o in done) - warm) if done else 1.0
    rate = args.factor * sustainable
    with procs.Sampler(period_s=2.0) as memory:
        outcomes = open_loop(send, rate, args.overload, max_in_flight=args.max_in_flight, timeout_s=60)
    refused = [o for o in outcomes if o.status == 503]
    ok = [o for o in outcomes if o.ok]
    time.sleep(3)  # the refused clients' Retry-After
    with httpx.Client(timeout=60) as client:
        after = [send_one(send, client) for _ in range(5)]
    return {
        "scenario": "overload",
        "sustainable_per_s": round(sustainable, 2),
        "offered_per_s": round(rate, 2),
        "seconds": args.overload,
        "requests": len(outcomes),
        "ok": len(ok),
        "refused_503": len(refused),
        "answers": figures.failures(outcomes) | {"200": len(ok)},
        "ok_per_s": round(len(ok) / args.overload, 2),
        "latency_ok_ms": figures.percentiles([o.latency_s for o in ok]),
        "latency_503_ms": figures.percentiles([o.latency_s for o in refused]),
        "503_without_retry_after": sum(1 for o in refused if not o.retry_after),
        "503_not_json_shape": sum(1 for o in refused if not o.json_shape),
        "retry_after_values": sorted({o.retry_after for o in refused if o.retry_after}),
        "no_answer": sum(1 for o in outcomes if o.status in (0, -1)),
        "peak_in_flight": figures.peak_in_flight(outcomes),
        "after_overload_ok": sum(1 for o in after if o.ok),
        "after_overload_sent": len(after),
        "memory": memory.summary(),
    }


def main(argv=None) -> int:
    p = argument_parser(__doc__)
    p.add_argument(
        "--scenario", nargs="+", default=["replica-killed", "overload"], choices=["replica-killed", "overload"]
    )
    p.add_argument("--images", type=int, default=4, help="images per request under the replica kill")
    p.add_argument("--before", type=float, default=12, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=30, help="seconds of load after the kill")
    p.add_argument(
        "--when-busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kill when a thread of the replica is running (default), else at once",
    )
    p.add_argument("--saturate", type=int, default=12, help="closed-loop clients that measure the sustainable rate")
    p.add_argument("--measure", type=float, default=12)
    p.add_argument("--factor", type=float, default=2.0, help="offered load, times the sustainable rate")
    p.add_argument("--overload", type=float, default=20, help="seconds of overload")
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--cpus", type=int, default=4, help="logical CPUs of the local cluster")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DEPLOYMENT.OPTION=VALUE",
        help="change a deployment option of serve_config.yaml for this run, e.g. "
        "FaceExtractIngress.max_ongoing_requests=16 (repeatable)",
    )
    args = p.parse_args(argv)

    import ray

    cluster.start_ray(args.cpus, env=cluster.REHEARSAL_ENV)
    results = []
    try:
        config = cluster.app_config(["face_extract"], overrides={MODEL: {"num_replicas": 2}})
        for setting in args.set:
            cluster.apply_override(config, setting)
        start = time.monotonic()
        url = cluster.deploy(config)
        cluster.wait_running(config)
        session = ray._private.worker._global_node.get_session_dir_path()
        print(f"deployed in {time.monotonic() - start:.0f} s: {url} (logs: {session}/logs)", flush=True)
        send = extract_faces_request(url, args.images)
        with httpx.Client(timeout=120) as c:
            for _ in range(3):  # warm-up: first calls build lazily-made state
                assert send_one(send, c).ok
        for scenario in args.scenario:
            result = (replica_killed if scenario == "replica-killed" else overload)(url, args)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "memory"}), flush=True)
            if "memory" in result:
                for name, m in result["memory"].items():
                    print(
                        f"  {name:40s} rss {m['rss_first']:7.1f} -> peak {m['rss_peak']:7.1f} -> "
                        f"{m['rss_last']:7.1f} MiB, fds {m['fds_first']} -> {m['fds_last']}, cpu {m['cpu_s']} s"
                    )
    finally:
        cluster.shutdown()
    write_json(args.json, results)
    return 0
