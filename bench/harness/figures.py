"""Figures computed from what a run recorded: latency percentiles, answers by status,
successes per second, the time until throughput is back after a fault, the peak of
requests in flight, and the overlap of two masks. `outcomes` are load.Outcome records
(not imported: load imports this module)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(values: list[float], qs=(50, 95, 99), scale: float = 1000.0) -> dict[str, float]:
    """{"p50": .., "max": ..} of `values` times `scale` (seconds -> ms by default),
    numpy's linear interpolation, rounded to 0.1."""
    if not values:
        return {f"p{q}": float("nan") for q in qs} | {"max": float("nan")}
    arr = np.asarray(values) * scale
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in qs} | {"max": round(float(arr.max()), 1)}


def failures(outcomes: Sequence) -> dict[str, int]:
    """{"<status> <code>": count} of every answer that is not a 200."""
    out: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            key = f"{o.status} {o.error}".strip()
            out[key] = out.get(key, 0) + 1
    return out


def per_second(outcomes: Sequence, t0: float, seconds: int) -> list[int]:
    """Successful answers completed in each second after t0."""
    counts = [0] * seconds
    for o in outcomes:
        k = int(o.end - t0)
        if o.ok and 0 <= k < seconds:
            counts[k] += 1
    return counts


def recovery_s(
    outcomes: Sequence,
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


def peak_in_flight(outcomes: Sequence) -> int:
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


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
