"""Soak: steady mixed traffic for --minutes (10 by default) against every endpoint, on a
local Ray cluster of its own with the apps deployed from serve_config.yaml (test
weights, min replicas), while sampling every Serve process. Not run by the tests.

Mix: --clients closed-loop clients round robin over POST /v1/face-mask (a cartoon),
/v1/face-mask-sam2 (a photo; its SAM2 service, the tests' stand-in, goes down at
--outage-from and comes back at --outage-to, fractions of the run: the endpoint falls
back to polygons per face meanwhile), /extract-faces and /v1/mask-augment; and
--heavy-clients more on /v1/anonymize (many times the cost of the others on CPU).

Prints, per minute: RSS of every replica, proxy and controller process (the curve), their
open file descriptors, answers by status and p95 latency per endpoint, and how many
face-mask-sam2 answers came from SAM2 or the fallback. "Flat after warm-up" is judged
from the growth over the second half of the run (warm-up here takes a few minutes:
allocator arenas and caches of each process fill up).

    python -m bench soak [--minutes 10] [--clients 4] [--json OUT]
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from bench.faults.common import argument_parser, write_json
from bench.harness import cluster, figures
from bench.harness.endpoints import extract_faces_request, multipart_request
from bench.harness.load import ClosedLoop, Request, send_one
from bench.harness.procs import Sampler

APPS = ["face_mask", "face_mask_sam2", "face_extract", "mask_augment", "anonymize"]


def sam2_note(body: dict) -> str:
    sources = {f["mask_source"] for f in body.get("faces", [])}
    return "no face" if not sources else "sam2" if sources == {"sam2"} else "fallback"


def mix(url: str) -> tuple[list[Request], list[Request]]:
    """(the four lighter endpoints, /v1/anonymize)."""
    from serve_app.config.assets import resolve

    photo = (resolve("test-images-photos") / "lfw_Rob_Lowe_0001.jpg").read_bytes()
    cartoon = (resolve("test-images-cartoon") / "cartoonface_11008.jpg").read_bytes()
    return [
        multipart_request("face-mask", f"{url}/v1/face-mask", cartoon, outputs="mask"),
        multipart_request("face-mask-sam2", f"{url}/v1/face-mask-sam2", photo, outputs="mask", note=sam2_note),
        extract_faces_request(url, 1),
        multipart_request("mask-augment", f"{url}/v1/mask-augment", photo),
    ], [multipart_request("anonymize", f"{url}/v1/anonymize", photo)]


def at_minutes(samples, minutes: int) -> list[dict]:
    """The sample nearest each minute mark 0..minutes."""
    return [min(samples, key=lambda s: abs(s[0] - 60 * m))[1] for m in range(minutes + 1)]


def report(outcomes, samples, minutes: int, t0: float, outage: tuple[float, float]) -> dict:
    marks = at_minutes(samples, minutes)
    names = sorted({n for s in marks for n in s})
    curve = {n: [s[n]["rss_mib"] if n in s else None for s in marks] for n in names}
    fds = {n: [s[n]["fds"] if n in s else None for s in marks] for n in names}
    kinds = sorted({o.kind for o in outcomes})
    per_minute = []
    for m in range(minutes):
        window = [o for o in outcomes if 60 * m <= o.end - t0 < 60 * (m + 1)]
        row = {"minute": m + 1, "answers": figures.failures(window) | {"200": sum(o.ok for o in window)}}
        for kind in kinds:
            lat = [o.latency_s for o in window if o.kind == kind and o.ok]
            row[kind] = round(float(np.percentile(lat, 95)) * 1000) if lat else None
        notes = [o.note for o in window if o.kind == "face-mask-sam2" and o.ok]
        row["sam2"] = {n: notes.count(n) for n in sorted(set(notes))}
        per_minute.append(row)

    half = max(1, minutes // 2)
    print(f"\n== RSS (MiB) at minute 0..{minutes}; growth from minute 1, and from minute {half}, to the end")
    for n in names:
        series = curve[n]
        grow = [series[-1] - series[m] if None not in (series[m], series[-1]) else None for m in (1, half)]
        print(
            f"  {n:42s} "
            + " ".join(f"{v:6.0f}" if v is not None else "     -" for v in series)
            + "   "
            + " ".join(f"{g:+7.1f}" if g is not None else "      -" for g in grow)
        )
    print("\n== open file descriptors at minute 0..end")
    for n in names:
        print(f"  {n:42s} " + " ".join(f"{v:4d}" if v is not None else "   -" for v in fds[n]))
    print(
        f"\n== per minute: answers, p95 latency (ms) per endpoint, face-mask-sam2 sources "
        f"(SAM2 down from {outage[0]:.1f} to {outage[1]:.1f} min)"
    )
    for row in per_minute:
        lat = " ".join(f"{k}={row[k]}" for k in kinds)
        print(f"  min {row['minute']:2d}: {row['answers']}  {lat}  sam2={row['sam2']}")
    failed = [o for o in outcomes if not o.ok]
    print(f"\n  {len(outcomes)} requests, {len(failed)} not 200: {figures.failures(outcomes)}")
    return {
        "minutes": minutes,
        "requests": len(outcomes),
        "failed": len(failed),
        "failures": figures.failures(outcomes),
        "rss_mib": curve,
        "fds": fds,
        "per_minute": per_minute,
        "sam2_outage_min": list(outage),
    }


def main(argv=None) -> int:
    p = argument_parser(__doc__, "closed-loop clients of the four lighter endpoints")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--heavy-clients", type=int, default=1, help="closed-loop clients of /v1/anonymize")
    p.add_argument("--sample-s", type=float, default=10, help="seconds between process samples")
    p.add_argument("--outage-from", type=float, default=0.4, help="SAM2 goes down at this fraction of the run")
    p.add_argument("--outage-to", type=float, default=0.7, help="and comes back at this one")
    p.add_argument("--cpus", type=int, default=4)
    args = p.parse_args(argv)

    from tests.sam2_standin import Sam2StandIn

    standin = Sam2StandIn(mode="png").start()
    cluster.start_ray(args.cpus, env=cluster.REHEARSAL_ENV)
    try:
        config = cluster.app_config(
            APPS,
            app_args={
                "face_mask_sam2": {
                    "sam2": {"url": standin.url, "timeout_s": 5, "breaker_failures": 5, "breaker_cooldown_s": 30}
                }
            },
        )
        start = time.monotonic()
        url = cluster.deploy(config)
        cluster.wait_running(config)
        print(f"deployed {len(APPS)} apps in {time.monotonic() - start:.0f} s: {url}", flush=True)
        light, heavy = mix(url)
        with httpx.Client(timeout=120) as c:
            for req in light + heavy:  # warm-up: each endpoint once, lazily-built state made
                got = send_one(req, c)
                assert got.ok, (req.kind, got)
        seconds = args.minutes * 60
        load = ClosedLoop(light, args.clients, max_seconds=seconds, max_requests=1_000_000, timeout_s=120).start()
        # Anonymisation (a 3D fit and a render) costs many times the others on CPU: its own
        # clients, so it does not hold up the rest of the mix.
        load_heavy = ClosedLoop(
            heavy, args.heavy_clients, max_seconds=seconds, max_requests=1_000_000, timeout_s=120
        ).start()
        sampler = Sampler(args.sample_s, load.t0).start()
        down_at, up_at = args.outage_from * seconds, args.outage_to * seconds
        time.sleep(max(0.0, down_at - (time.monotonic() - load.t0)))
        # Down as a crashed service is: its open keep-alive connections closed without an
        # answer ("drop"), new ones refused (stopped listening).
        standin.mode = "drop"
        standin.stop()
        print(f"  SAM2 stand-in down at {down_at / 60:.1f} min", flush=True)
        time.sleep(max(0.0, up_at - (time.monotonic() - load.t0)))
        port = int(standin.url.rsplit(":", 1)[1])
        standin = Sam2StandIn(mode="png", port=port).start()
        print(f"  SAM2 stand-in up again at {up_at / 60:.1f} min", flush=True)
        time.sleep(max(0.0, seconds - (time.monotonic() - load.t0)))
        outcomes = sorted(load.stop() + load_heavy.stop(), key=lambda o: o.start)
        sampler.stop()
        result = report(outcomes, sampler.samples, max(1, round(args.minutes)), load.t0, (down_at / 60, up_at / 60))
        write_json(args.json, result)
    finally:
        standin.stop()
        cluster.shutdown()
    return 0
