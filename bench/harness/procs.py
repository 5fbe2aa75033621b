"""The processes a benchmark watches: Serve's by PID (from this cluster's GCS), and what
/proc says of any process on this machine (RSS, open files, CPU time) and of the
machine itself (busy CPU, load average). Only processes of the cluster this process
started are ever touched."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    name: str  # "models:RetinaFace", "ProxyActor", "ServeController"
    pid: int
    node_id: str
    actor_id: str


def serve_processes() -> list[Proc]:
    """Every live Serve actor of this cluster (replicas, proxies, the controller) with
    its PID, from the GCS actor table (ray.util.state needs the dashboard, which the
    benchmarks do not start)."""
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


def named(procs: list[Proc], values: dict[int, float]) -> dict[str, float]:
    """{pid: value} as {process name: value}; a second replica of a deployment gets a '."""
    out: dict[str, float] = {}
    for proc in procs:
        if proc.pid in values:
            key = proc.name
            while key in out:
                key += "'"
            out[key] = values[proc.pid]
    return out


# ---- /proc -------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process on this machine in MiB, None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int | None = None) -> list[int]:
    """Every process `pid` (default this one) started, and theirs, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], list(children.get(os.getpid() if pid is None else pid, []))
    while stack:
        found.append(stack.pop())
        stack.extend(children.get(found[-1], []))
    return found


def run_cpu_seconds() -> float:
    """CPU seconds used so far by this process and every process it started (Ray's GCS
    and raylet, Serve's controller, proxy and replicas, idle workers): this run's use of
    the machine, whatever else runs on it (a process that ended is no longer counted)."""
    return sum(cpu_seconds(pid) for pid in [os.getpid(), *descendants()])


def box_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat minus idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


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


def memory_snapshot() -> dict[str, dict]:
    """{process name#pid: {"rss_mib", "fds", "cpu_s"}} for every Serve process, and for
    this one (the load generator) as "client"."""
    out = {}
    for p in [*serve_processes(), Proc("client", os.getpid(), "", "")]:
        rss, fds = rss_mib(p.pid), open_fds(p.pid)
        if rss is not None and fds is not None:
            out[f"{p.name}#{p.pid}"] = {"rss_mib": round(rss, 1), "fds": fds, "cpu_s": cpu_seconds(p.pid)}
    return out


class Sampler:
    """memory_snapshot() every `period_s` in a thread, from start() until stop() (or as
    a `with` block): samples are (seconds since t0, snapshot)."""

    def __init__(self, period_s: float, t0: float | None = None):
        self.period_s, self.t0 = period_s, t0
        self.samples: list[tuple[float, dict[str, dict]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self.t0, memory_snapshot()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def start(self) -> Sampler:
        self.t0 = time.monotonic() if self.t0 is None else self.t0
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._sample()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict[str, dict]:
        """Per process: RSS first, peak and last, fds first and last, CPU seconds used."""
        out = {}
        for name in self.samples[0][1]:
            seen = [s[name] for _, s in self.samples if name in s]
            series = [m["rss_mib"] for m in seen]
            out[name] = {
                "rss_first": series[0],
                "rss_peak": max(series),
                "rss_last": series[-1],
                "fds_first": seen[0]["fds"],
                "fds_last": seen[-1]["fds"],
                "cpu_s": round(seen[-1]["cpu_s"] - seen[0]["cpu_s"], 1),
            }
        return out
