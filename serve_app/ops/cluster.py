"""`facegraph cluster rehearse`: the KubeRay deployment of cluster.gpu.yaml played on this
one machine, then the failures an operator should rehearse, under a steady load.

    python -m serve_app.ops.cluster [--runner containers|processes] [--image IMAGE]

The cluster (serve_app/ops/cluster_nodes.py): a head (`num-cpus 0`, the dashboard, GCS
fault tolerance on a local `redis-server`), two workers of the `cpu` group and one of the
`gpu` group (a logical GPU: no CUDA here, so its models run on the CPU and say so in
/healthz), every figure of cluster.gpu.yaml scaled by the same factor, host networking,
every node on a loopback address with its own ports. Nodes run as containers of the FaceGraph image
(podman), or as the same `ray start` commands as plain processes (--runner processes).
The apps are deployed as the RayService operator does: `serve deploy` of serveConfigV2
through the head's dashboard. Then, with clients on 127.0.0.1 sending requests to the
workers' proxies all along:

  1. placement: every application RUNNING, no replica on the head, every GPU-asking
     deployment on the GPU worker and nothing else there, each ingress on two nodes;
  2. a CPU worker killed (`podman kill`): its replicas running again on the remaining
     nodes (within 60 s); restarted, it rejoins;
  3. the head killed and restarted: the workers' proxies keep answering, and the new head
     finds the applications RUNNING with the same replicas (no redeploy);
  4. a Ray Data job (`ray job submit`) over a folder every node mounts, the other CPU
     worker killed mid-job (its replicas move to the worker that rejoined in 2): every
     input in the results, each once.

The last line:
cluster rehearsal: N requests, F failed (P %), recovered in S s, head loss survived: yes|no, batch job complete: yes|no
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from serve_app import __version__
from serve_app.config.assets import resolve
from serve_app.config.settings import REPO_ROOT
from serve_app.ops import cluster_nodes
from serve_app.ops.cluster_load import Load, summary
from serve_app.ops.cluster_nodes import SCALE, Containers, Processes

MAX_FAILED_PCT = 1.0
RECOVERY_LIMIT_S = 60
MAX_CRASHES = 5
RESTART_AFTER_S = 10  # a lost pod's replacement starts about this much later on KubeRay
BATCH_PHOTOS = ("lfw_Rob_Lowe_0001.jpg", "lfw_Nathalie_Baye_0002.jpg", "insightface_t1.jpg", "3ddfa_JianzhuGuo.jpg")
BATCH_COPIES = 20  # 80 inputs: the job runs long enough on 2 cores for a kill to land mid-run
BATCH_ACTOR_CPUS = 2  # a batch actor's CPUs on a cluster node (scaled like everything else)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- what the cluster says (the head's dashboard) --------------------------------------


class Dashboard:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> dict | None:
        """A dashboard API answer, None while the head does not answer."""
        try:
            resp = httpx.get(self.url + path, timeout=10)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def nodes(self) -> dict[str, dict]:
        """{node id: {"name", "state"}} of every node the GCS knows (dead ones too)."""
        got = self.get("/api/v0/nodes?limit=1000&detail=true")
        rows = (got or {}).get("data", {}).get("result", {}).get("result", [])
        return {r["node_id"]: {"name": r.get("node_name"), "state": r.get("state")} for r in rows}

    def applications(self) -> dict | None:
        got = self.get("/api/serve/applications/")
        return None if got is None else got.get("applications", {})

    def actors(self) -> list[dict]:
        """Every live actor: {"class_name", "node_id", ...}."""
        alive = "filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
        got = self.get(f"/api/v0/actors?limit=10000&detail=true&{alive}")
        return (got or {}).get("data", {}).get("result", {}).get("result", [])

    def job(self, job_id: str) -> dict | None:
        return self.get(f"/api/jobs/{job_id}")


@dataclass(frozen=True)
class Replica:
    app: str
    deployment: str
    replica_id: str
    node: str  # the node's name (head, cpu-1, ...)
    state: str


def replicas(apps: dict, names: dict[str, str]) -> list[Replica]:
    out = []
    for app_name, app in apps.items():
        for dep_name, dep in app.get("deployments", {}).items():
            for r in dep.get("replicas", []):
                node = names.get(r.get("node_id"), "?")
                out.append(Replica(app_name, dep_name, r["replica_id"], node, r["state"]))
    return out


def running_by_deployment(reps: list[Replica], lost: str | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in reps:
        if r.state == "RUNNING" and r.node != lost:
            counts[r.deployment] = counts.get(r.deployment, 0) + 1
    return counts


def app_statuses(apps: dict | None) -> dict[str, str]:
    return {name: app.get("status", "?") for name, app in (apps or {}).items()}


def wait_for(check, timeout_s: float, what: str, poll_s: float = 1.0):
    """check()'s first truthy value, polled; RuntimeError past timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise RuntimeError(f"no {what} within {timeout_s:.0f} s")


# ---- the rehearsal ----------------------------------------------------------------------


class Rehearsal:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.service = yaml.safe_load(Path(args.cluster).read_text())
        base = cluster_nodes.free_port_block(5 * cluster_nodes.PORT_STRIDE)
        extra = base + 4 * cluster_nodes.PORT_STRIDE
        self.redis_port, self.client_port, self.head_http_port = extra, extra + 1, extra + 2
        # The people gallery's store on a folder every node mounts (its PostgreSQL, the
        # secret FACEGRAPH_DATABASE_URL names on KubeRay, is not played here).
        data = work / "data"
        data.mkdir()
        data.chmod(0o777)
        nodes = cluster_nodes.plan(
            self.service,
            base,
            f"127.0.0.1:{self.redis_port}",
            self.client_port,
            {"cpu": 2, "gpu": 1},
            env={"FACEGRAPH_DATA_DIR": str(data)},
        )
        self.nodes = {n.name: n for n in nodes}
        self.head = self.nodes["head"]
        self.dashboard = Dashboard(self.head.dashboard_port)
        self.config = cluster_nodes.scaled_serve_config(self.service, self.head_http_port)
        self.config_path = work / "serve_config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.config_path.chmod(0o644)
        if args.runner == "containers":
            code = REPO_ROOT if args.code_from_checkout else None
            self.runner = Containers(work, args.image, f"facegraph-rehearsal-{self.redis_port}", code_from=code)
            self.python = "python"
        else:
            self.runner = Processes(work)
            self.python = sys.executable
        self.redis: subprocess.Popen | None = None
        self.load: Load | None = None
        self.names: dict[str, str] = {}  # node id -> node name, every node ever seen
        self.results: dict = {}
        self.windows: dict[str, tuple[float, float]] = {}  # each failure: from the kill until recovered
        self.crashes: dict[str, int] = {}  # node name -> times its ray start ended on its own

    # -- plumbing --

    def node_names(self) -> dict[str, str]:
        for node_id, info in self.dashboard.nodes().items():
            self.names[node_id] = info["name"]
        return self.names

    def alive(self) -> set[str]:
        return {info["name"] for info in self.dashboard.nodes().values() if info["state"] == "ALIVE"}

    def replicas(self) -> list[Replica] | None:
        apps = self.dashboard.applications()
        if apps is None:
            return None
        return replicas(apps, self.node_names())

    def gpu_deployments(self) -> set[str]:
        return {
            d["name"]
            for app in self.config["applications"]
            for d in app.get("deployments", [])
            if d.get("ray_actor_options", {}).get("num_gpus")
        }

    def ingresses(self) -> set[str]:
        models = {m for app in self.config["applications"] for m in (app.get("args") or {}).get("models", {})}
        return {d["name"] for app in self.config["applications"] for d in app.get("deployments", [])} - models

    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.work), "--protected-mode", "yes"]
        self.redis = subprocess.Popen(argv, stdout=open(self.work / "redis.log", "w"), stderr=subprocess.STDOUT)
        cluster_nodes.wait_port(self.redis_port, 20)

    def up(self, names: set[str]) -> bool:
        """Whether every node in `names` is ALIVE. A node whose `ray start` ended is started
        again, as the kubelet restarts a crashed container: here a raylet gives up when its
        agents are slow to start on the loaded 2 cores (it waits 15 s for their ports)."""
        for name in names:
            if not self.runner.running(name):
                self.crashes[name] = self.crashes.get(name, 0) + 1
                if self.crashes[name] > MAX_CRASHES:
                    raise RuntimeError(f"node {name} crashed {MAX_CRASHES} times: see {self.work / name}.log")
                log(f"{name}'s ray start ended: starting it again ({self.crashes[name]})")
                self.runner.start(name)
        return names <= self.alive()

    def start_cluster(self) -> float:
        start = time.monotonic()
        self.runner.create(self.head, self.head)
        wait_for(lambda: self.up({"head"}), 300, "the head ALIVE")
        for node in self.nodes.values():
            if not node.is_head:
                self.runner.create(node, self.head)
        wait_for(lambda: self.up(set(self.nodes)), 300, "every node ALIVE")
        return time.monotonic() - start

    def deploy(self) -> float:
        """`serve deploy` through the head's dashboard, as the RayService operator does;
        seconds until every application is RUNNING."""
        start = time.monotonic()
        serve = str(Path(sys.executable).with_name("serve"))
        done = subprocess.run(
            [serve, "deploy", str(self.config_path), "--address", self.dashboard.url], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {done.stderr.strip()[-2000:]}")

        def running():
            statuses = app_statuses(self.dashboard.applications())
            failed = {k: v for k, v in statuses.items() if "FAIL" in v}
            if failed:
                raise RuntimeError(f"applications failed: {failed}")
            names = {a["name"] for a in self.config["applications"]}
            return set(statuses) == names and all(v == "RUNNING" for v in statuses.values())

        wait_for(running, self.args.deploy_timeout, "applications RUNNING", poll_s=3)
        return time.monotonic() - start

    # -- the checks --

    def check_placement(self) -> list[str]:
        """What is wrong with where the replicas run (empty: all as it should be)."""
        problems = []
        apps = self.dashboard.applications() or {}
        not_running = {k: v for k, v in app_statuses(apps).items() if v != "RUNNING"}
        if not_running:
            problems.append(f"applications not RUNNING: {not_running}")
        reps = [r for r in replicas(apps, self.node_names()) if r.state == "RUNNING"]
        gpu = self.gpu_deployments()
        for r in reps:
            group = self.nodes[r.node].group if r.node in self.nodes else "?"
            if group == "head":
                problems.append(f"{r.deployment} has a replica on the head")
            elif (r.deployment in gpu) != (group == "gpu"):
                problems.append(f"{r.deployment} ({'GPU' if r.deployment in gpu else 'CPU'}) runs on {r.node}")
        for name in self.ingresses():
            nodes = {r.node for r in reps if r.deployment == name}
            if len(nodes) < 2:
                problems.append(f"ingress {name} runs on {sorted(nodes)}, not on two nodes")
        health = httpx.get(f"http://127.0.0.1:{self.client_port}/healthz", timeout=30).json()
        devices = {m: about.get("device") for m, about in health.get("models", {}).items()}
        log(f"/healthz: {health.get('status')}, model devices {devices}")
        if any(d != "cpu" for d in devices.values()):
            problems.append(f"a model on the logical GPU does not run on the CPU: {devices}")
        where: dict[str, list[str]] = {}
        for r in reps:
            where.setdefault(r.node, []).append(r.deployment)
        for node in sorted(where):
            log(f"  {node}: {', '.join(sorted(where[node]))}")
        return problems

    def wait_replaced(self, before: dict[str, int], lost: str, since: float) -> float | None:
        """Seconds from `since` until every deployment runs as many replicas as `before`
        on nodes other than `lost`; None if not within RECOVERY_LIMIT_S * 3."""

        def replaced():
            reps = self.replicas()
            if reps is None:
                return False
            now = running_by_deployment(reps, lost=lost)
            return all(now.get(d, 0) >= n for d, n in before.items())

        try:
            wait_for(replaced, RECOVERY_LIMIT_S * 3, "replacement replicas")
        except RuntimeError:
            return None
        return time.monotonic() - since

    def failed_between(self, t0: float, t1: float | None = None) -> str:
        return summary(self.load.since(t0, t1)) if self.load else ""

    # -- the phases --

    def lose_cpu_worker(self) -> None:
        victim = self.nodes["cpu-1"]
        reps = self.replicas() or []
        before = running_by_deployment(reps)
        on_victim = [r.deployment for r in reps if r.node == victim.name and r.state == "RUNNING"]
        log(f"killing {victim.name} ({len(on_victim)} replicas: {', '.join(sorted(on_victim))})")
        t0 = time.monotonic()
        self.runner.kill(victim.name)
        recovered = self.wait_replaced(before, victim.name, t0)
        took = "not within the limit" if recovered is None else f"after {recovered:.1f} s"
        log(f"replicas running again on the remaining nodes {took}; {self.failed_between(t0)}")
        wait_s = max(0.0, RESTART_AFTER_S - (time.monotonic() - t0))
        time.sleep(wait_s)
        t1 = time.monotonic()
        self.runner.start(victim.name)
        wait_for(lambda: self.up({victim.name}), 300, f"{victim.name} back")
        rejoined = time.monotonic() - t1
        log(f"{victim.name} restarted: rejoined after {rejoined:.1f} s")
        self.results.update(recovered_s=recovered, rejoined_s=rejoined)
        self.windows["a CPU worker lost"] = (t0, time.monotonic())

    def lose_head(self) -> None:
        reps = self.replicas() or []
        before = {r.replica_id for r in reps if r.state == "RUNNING"}
        log(f"killing the head ({len(before)} replicas running on the workers)")
        t0 = time.monotonic()
        self.runner.kill("head")
        time.sleep(RESTART_AFTER_S)
        down = self.load.since(t0)
        log(f"while the head was down {RESTART_AFTER_S} s: {summary(down)}")
        self.runner.start("head")
        wait_for(lambda: self.up({"head"}) and self.dashboard.applications() is not None, 300, "the head's dashboard")

        def all_running():
            statuses = app_statuses(self.dashboard.applications())
            return statuses if statuses and all(v == "RUNNING" for v in statuses.values()) else None

        statuses = wait_for(all_running, 180, "applications RUNNING on the new head")
        head_back = time.monotonic() - t0
        after = {r.replica_id for r in (self.replicas() or []) if r.state == "RUNNING"}
        kept = len(before & after)
        log(
            f"head back after {head_back:.1f} s: applications {statuses}; {kept} of {len(before)} replicas "
            f"kept (no redeploy); nodes alive {sorted(self.alive())}"
        )
        self.results.update(
            head_back_s=head_back,
            head_apps_running=all(v == "RUNNING" for v in statuses.values()),
            head_replicas_kept=kept == len(before),
        )
        self.windows["the head lost"] = (t0, time.monotonic())

    def batch_job(self) -> None:
        """The face-extract job over a folder every node mounts; the CPU worker holding
        the most replicas killed as soon as rows come in and one of the job's actors runs
        there."""
        src, out = self.work / "batch" / "in", self.work / "batch" / "out"
        photos = resolve("test-images-photos")
        inputs = []
        for k in range(BATCH_COPIES):
            (src / f"set{k}").mkdir(parents=True, exist_ok=True)
            for name in BATCH_PHOTOS:
                shutil.copyfile(photos / name, src / f"set{k}" / name)
                (src / f"set{k}" / name).chmod(0o644)  # the image's user reads them
                inputs.append(f"set{k}/{name}")
        out.mkdir(parents=True)
        for path in (self.work / "batch", out):
            path.chmod(0o777)  # the image's user writes the outputs
        # The victim is chosen first: the dashboard's answers take seconds on the loaded
        # machine, and the kill must land while the job runs.
        reps = self.replicas() or []
        counts = {n: sum(1 for r in reps if r.node == n and r.state == "RUNNING") for n in ("cpu-1", "cpu-2")}
        victim = max(counts, key=counts.get)
        other = "cpu-2" if victim == "cpu-1" else "cpu-1"
        before = running_by_deployment(reps)
        cpus = BATCH_ACTOR_CPUS * SCALE
        # Three actors: Ray Data spreads them over the worker nodes, so the kill takes one.
        job = ["face-extract", "--input", str(src), "--output", str(out), "--workers", "3"]
        job += ["--cpus-per-worker", str(cpus), "--batch-size", "2", "--serve-config", str(self.config_path)]
        ray = str(Path(sys.executable).with_name("ray"))
        submit = [ray, "job", "submit", "--address", self.dashboard.url, "--no-wait", "--"]
        started = time.monotonic()
        done = subprocess.run(
            [*submit, self.python, "-m", "serve_app.jobs.runner", *job], check=True, capture_output=True, text=True
        )
        job_id = next(line.split("'")[1] for line in done.stdout.splitlines() if "submitted successfully" in line)
        log(f"batch job {job_id}: {len(inputs)} inputs")
        results = out / "results.jsonl"
        rows = lambda: len(results.read_text().splitlines()) if results.exists() else 0  # noqa: E731
        job_actors: dict[str, int] = {}

        def under_way() -> bool:
            """Rows coming in, not all of them, and one of the job's actors (Ray Data's
            MapWorker) on the victim."""
            if rows() >= len(inputs):
                raise RuntimeError(f"the job ended before one of its actors ran on {victim}: not rehearsed")
            names = self.node_names()
            where = [
                names.get(a.get("node_id")) for a in self.dashboard.actors() if a["class_name"].startswith("MapWorker")
            ]
            job_actors.update({n: where.count(n) for n in self.nodes})
            return rows() >= 1 and job_actors[victim] > 0

        wait_for(under_way, 600, f"the job under way with an actor on {victim}", poll_s=0.2)
        log(f"{rows()} rows in: killing {victim} ({counts[victim]} replicas, {job_actors[victim]} of the job's actors)")
        t0 = time.monotonic()
        self.runner.kill(victim)
        time.sleep(RESTART_AFTER_S)
        self.runner.start(victim)
        replaced = self.wait_replaced(before, victim, t0)
        wait_for(lambda: self.up({victim}), 300, f"{victim} back")
        took_over = sum(1 for r in (self.replicas() or []) if r.node == other and r.state == "RUNNING")
        took = "not within the limit" if replaced is None else f"after {replaced:.1f} s"
        log(f"replicas replaced {took}; {other} (the worker that rejoined) runs {took_over} replicas")

        def finished():
            info = self.dashboard.job(job_id) or {}
            return info.get("status") in ("SUCCEEDED", "FAILED", "STOPPED") and info

        info = wait_for(finished, 900, "the batch job's end", poll_s=2)
        took = time.monotonic() - started
        lines = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        seen: dict[str, int] = {}
        for row in lines:
            seen[row["path"]] = seen.get(row["path"], 0) + 1
        errors = sum(1 for row in lines if row.get("error"))
        once = sorted(seen) == sorted(inputs) and all(n == 1 for n in seen.values())
        log(
            f"batch job {info['status']} after {took:.0f} s: {len(seen)} of {len(inputs)} inputs in results "
            f"({errors} errors), each once: {once}"
        )
        self.windows["a CPU worker lost mid-job"] = (t0, time.monotonic())
        self.results.update(
            # Complete: the job ended well with each input once, and none failed (the photos
            # all have faces: an error row here is the rehearsal's failure, not the input's).
            batch_complete=info["status"] == "SUCCEEDED" and once and errors == 0,
            rejoined_takes_replicas=took_over > 0,
            batch_replaced_s=replaced,
        )

    def run(self) -> int:
        self.start_redis()
        sizes = ", ".join(f"{n.name} ({n.cpus} CPU {n.gpus} GPU)" for n in self.nodes.values())
        log(f"{self.runner.kind}; nodes {sizes}")
        try:
            log(f"cluster up in {self.start_cluster():.0f} s; dashboard {self.dashboard.url}")
            log(f"applications RUNNING {self.deploy():.0f} s after `serve deploy`")
        except RuntimeError as exc:
            log(f"FAILED: {exc}")
            return self.report([], [str(exc)])
        self.load = Load(f"http://127.0.0.1:{self.client_port}", clients=self.args.clients).start()
        time.sleep(self.args.warmup)
        problems = self.check_placement()
        for p in problems:
            log(f"PLACEMENT: {p}")
        log(f"steady load: {summary(self.load.since(0))}")
        # Each phase needs the cluster the one before left: the first that fails ends them.
        for phase in (self.lose_cpu_worker, self.lose_head, self.batch_job):
            try:
                phase()
                time.sleep(self.args.steady)  # steady load again before the next failure
            except RuntimeError as exc:
                problems.append(f"{phase.__name__}: {exc}")
                log(f"FAILED: {problems[-1]}")
                break
        return self.report(self.load.stop(), problems)

    def report(self, outcomes, problems: list[str]) -> int:
        r = self.results
        n, f = len(outcomes), sum(1 for o in outcomes if not o.ok)
        pct = 100 * f / max(1, n)
        head_loss = self.load.since(*self.windows["the head lost"]) if "the head lost" in self.windows else []
        head_failed_pct = 100 * sum(1 for o in head_loss if not o.ok) / max(1, len(head_loss))
        head_ok = bool(r.get("head_apps_running") and r.get("head_replicas_kept")) and head_failed_pct <= MAX_FAILED_PCT
        recovered = r.get("recovered_s")
        batch = bool(r.get("batch_complete"))
        log(f"all: {summary(outcomes)}")
        for name, window in self.windows.items():
            log(f"{name}, from the kill until recovered: {summary(self.load.since(*window))}")
        ok = (
            not problems
            and pct <= MAX_FAILED_PCT
            and recovered is not None
            and recovered <= RECOVERY_LIMIT_S
            and head_ok
            and batch
            and r.get("rejoined_takes_replicas")
        )
        rec = "never" if recovered is None else f"{recovered:.0f}"
        print(
            f"cluster rehearsal: {n} requests, {f} failed ({pct:.2f} %), recovered in {rec} s, "
            f"head loss survived: {'yes' if head_ok else 'no'}, batch job complete: {'yes' if batch else 'no'}",
            flush=True,
        )
        return 0 if ok else 1

    def close(self) -> None:
        if self.load is not None:
            self.load.stop()
        self.runner.remove_all()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(10)


def image_exists(image: str) -> bool:
    if not shutil.which("podman"):
        return False
    return subprocess.run(["podman", "image", "exists", image], capture_output=True).returncode == 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facegraph cluster rehearse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--image", default=f"localhost/facegraph:{__version__}", help="the image the containers run")
    p.add_argument(
        "--runner",
        choices=("containers", "processes"),
        help="nodes as containers of --image (the default when it exists) or as plain processes of this venv",
    )
    p.add_argument(
        "--code-from-checkout",
        action="store_true",
        help="containers run this checkout's serve_app/ and deployments/ (mounted over the image's)",
    )
    p.add_argument("--cluster", default=str(REPO_ROOT / "cluster.gpu.yaml"), help="the RayService to play")
    p.add_argument("--clients", type=int, default=2, help="closed-loop clients of the steady load")
    p.add_argument("--warmup", type=float, default=30, help="seconds of load before the checks")
    p.add_argument("--steady", type=float, default=30, help="seconds of load after each recovery")
    p.add_argument("--deploy-timeout", type=float, default=900, help="seconds for every application to be RUNNING")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, config, batch outputs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.runner is None:
        args.runner = "containers" if image_exists(args.image) else "processes"
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server): GCS FT needs it")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the CLI's calls to the dashboard
    work = Path(tempfile.mkdtemp(prefix="fgr-", dir="/tmp"))  # short: Ray's socket paths
    work.chmod(0o755)
    log(f"work folder {work} ({'kept' if args.keep else 'removed'} at the end): logs, config, batch job")
    rehearsal = Rehearsal(args, work)
    try:
        return rehearsal.run()
    finally:
        rehearsal.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
