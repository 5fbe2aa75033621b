"""The rehearsal's client: a steady closed-loop load on 127.0.0.1 (each client sends its
next request as soon as the last is answered), every outcome kept with its times, so a
phase's failures and the time to recover can be counted afterwards."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass

import httpx

from serve_app.config.assets import resolve


@dataclass(frozen=True)
class Outcome:
    start: float  # monotonic
    end: float
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    what: str  # the request's kind, and the error when it failed

    @property
    def ok(self) -> bool:
        return self.status == 200


def requests(base: str) -> list[tuple[str, dict]]:
    """One request per kind: extract-faces (ingress on a CPU worker, RetinaFace and ArcFace
    on the GPU worker) and face-mask (LBPDetector on a CPU worker, SegFormerParser on the
    GPU worker): both worker groups in every pair."""
    photo = resolve("test-images-photos") / "lfw_Rob_Lowe_0001.jpg"
    anime = resolve("test-images-cartoon") / "cartoonface_11008.jpg"  # one small face: short requests
    body = {"images": [{"image_base64": base64.b64encode(photo.read_bytes()).decode()}]}
    return [
        ("extract-faces", {"url": f"{base}/extract-faces", "json": body}),
        (
            "face-mask",
            {
                "url": f"{base}/v1/face-mask",
                "files": {"image": (anime.name, anime.read_bytes(), "image/jpeg")},
                "data": {"outputs": "mask"},
            },
        ),
    ]


class Load:
    """`clients` threads sending the request mix in turn until stop()."""

    def __init__(self, base: str, clients: int = 2, timeout_s: float = 60):
        self.mix = requests(base)
        self.clients, self.timeout_s = clients, timeout_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def _run(self, index: int) -> None:
        n = index
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                kind, args = self.mix[n % len(self.mix)]
                n += 1
                start = time.monotonic()
                try:
                    resp = client.post(**args)
                    status, what = resp.status_code, kind if resp.status_code == 200 else f"{kind}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    status, what = 0, f"{kind}: {type(exc).__name__}"
                with self._lock:
                    self.outcomes.append(Outcome(start, time.monotonic(), status, what))
                if status != 200:
                    time.sleep(0.2)  # a client backs off a little after an error

    def since(self, t0: float, t1: float | None = None) -> list[Outcome]:
        """Outcomes of requests in flight at t0 or sent in [t0, t1): a failure's window
        holds the requests the kill caught mid-way."""
        with self._lock:
            return [o for o in self.outcomes if o.end >= t0 and (t1 is None or o.start < t1)]

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return self.outcomes


def summary(outcomes: list[Outcome]) -> str:
    """Requests, failures (and why), and the answered requests' median and slowest time."""
    failed = [o for o in outcomes if not o.ok]
    kinds: dict[str, int] = {}
    for o in failed:
        kinds[o.what[:120]] = kinds.get(o.what[:120], 0) + 1
    pct = 100 * len(failed) / max(1, len(outcomes))
    times = sorted(o.end - o.start for o in outcomes if o.ok)
    latency = f", {times[len(times) // 2]:.1f} s median, {times[-1]:.1f} s slowest" if times else ""
    return f"{len(outcomes)} requests, {len(failed)} failed ({pct:.2f} %){latency}" + (f" {kinds}" if kinds else "")
