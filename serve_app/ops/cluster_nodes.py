"""The Ray nodes of cluster.gpu.yaml played on one machine: what KubeRay would start in
each pod (`ray start` with the group's rayStartParams, its container's limits as the
node's resources, its env and labels), every figure scaled down by one factor, every node
on loopback (NODE_IP) with ports of its own (host networking only), and two ways to run a node:
a container of the FaceGraph image (podman) or the same command as a plain process.

KubeRay's part is played too: the head gets the GCS fault-tolerance settings
(RAY_REDIS_ADDRESS and the storage namespace of gcsFaultToleranceOptions, pointing at a
local redis-server), and the serve Service without the head (excludeHeadPodFromServeSvc)
is the workers' proxies sharing one port: Serve binds every proxy with SO_REUSEPORT, and
RAY_SERVE_WORKER_PROXY_HTTP_PORT gives the workers' proxies the client port while the
head's proxy keeps serve config's own.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from serve_app.config.settings import REPO_ROOT

# Every figure of the cluster divided by 8: a 16-CPU worker is a node of 2 logical CPUs,
# the 8-CPU GPU worker one of 1 (whole numbers, as `ray start --num-cpus` takes), and each
# replica asks for 1/8 of its cluster num_cpus, so replicas fill a rehearsal node as they
# fill a real one. Physically every node shares this machine's cores.
SCALE = 1 / 8
LABEL = "facegraph=rehearsal"  # on every container the rehearsal starts; it removes only those
PORT_STRIDE = 80  # ports per node: 10 fixed, 70 for its worker processes (replicas, actors)
GROUP_LABEL = "facegraph.io/node-group"  # as scripts/make_cluster_yaml.py writes it
# Every node's address: loopback, but not 127.0.0.1, which `ray start` replaces with the
# machine's network address (it takes 127.0.0.1 and localhost for "this machine"); Linux
# routes all of 127.0.0.0/8 to the loopback interface.
NODE_IP = "127.0.0.2"


@dataclass(frozen=True)
class Node:
    """One Ray node: a pod of a group, as a `ray start` command line and its env."""

    name: str  # head, cpu-1, cpu-2, gpu-1
    group: str  # "head" or the worker group's name
    cpus: int
    gpus: int
    memory_bytes: int
    port_base: int
    start_params: dict[str, str]  # rayStartParams, after the group's and ours
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_head(self) -> bool:
        return self.group == "head"

    @property
    def gcs_port(self) -> int:
        return self.port_base

    @property
    def dashboard_port(self) -> int:
        return self.port_base + 8

    def ray_start(self, head: Node, temp_dir: Path | None = None) -> list[str]:
        """`ray start` as KubeRay runs it in the pod, with this node's own ports."""
        b = self.port_base
        argv = ["ray", "start", "--block", "--node-ip-address", NODE_IP, "--node-name", self.name]
        argv += ["--num-cpus", str(self.cpus), "--num-gpus", str(self.gpus), "--memory", str(self.memory_bytes)]
        # Ray's object store takes 30 % of the memory it sees unless told: the machine's,
        # not the container's share (a plain process or a container without a memory limit).
        argv += ["--object-store-memory", str(min(self.memory_bytes * 3 // 10, 512 * 2**20))]
        argv += ["--node-manager-port", str(b + 1), "--object-manager-port", str(b + 2)]
        argv += ["--dashboard-agent-listen-port", str(b + 3), "--dashboard-agent-grpc-port", str(b + 4)]
        argv += ["--runtime-env-agent-port", str(b + 5), "--metrics-export-port", str(b + 6)]
        argv += ["--min-worker-port", str(b + 10), "--max-worker-port", str(b + PORT_STRIDE - 1)]
        argv += ["--disable-usage-stats"]
        if self.is_head:
            argv += ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(b + 7)]
            argv += ["--dashboard-port", str(self.dashboard_port)]
        else:
            argv += ["--address", f"{NODE_IP}:{head.gcs_port}"]
        for key, value in self.start_params.items():
            argv += [f"--{key}", value]
        if temp_dir is not None:
            argv += ["--temp-dir", str(temp_dir)]
        return argv


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def scaled_whole(value: float, what: str) -> int:
    scaled = value * SCALE
    if abs(scaled - round(scaled)) > 1e-9:
        raise ValueError(f"{what} {value} scaled by {SCALE} is {scaled}: not a whole number")
    return round(scaled)


def container_env(container: dict) -> dict[str, str]:
    """The container's literal env; secret references (valueFrom) are not played here."""
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def plan(
    service: dict,
    port_base: int,
    redis_address: str,
    http_port: int,
    workers: dict[str, int],
    env: dict[str, str] | None = None,
) -> list[Node]:
    """The nodes of a RayService: its head and `workers` pods per group ({"cpu": 2,
    "gpu": 1}), each container's limits scaled by SCALE as its resources, the group's
    labels, env and rayStartParams; KubeRay's GCS fault tolerance on the head; `env` on
    every node."""
    cluster = service["spec"]["rayClusterConfig"]
    ft = cluster.get("gcsFaultToleranceOptions")
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    nodes = []

    common = env or {}

    def node(name: str, group: str, spec: dict, env: dict[str, str]) -> Node:
        (container,) = spec["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        params = {k: str(v) for k, v in spec.get("rayStartParams", {}).items()}
        # Loopback only: the dashboard too.
        if "dashboard-host" in params:
            params["dashboard-host"] = "127.0.0.1"
        cpus = int(params.pop("num-cpus")) if "num-cpus" in params else scaled_whole(int(limits["cpu"]), "cpu")
        labels = spec.get("labels") or {}
        if labels:
            params["labels"] = ",".join(f"{k}={v}" for k, v in labels.items())
        return Node(
            name=name,
            group=group,
            cpus=cpus,
            gpus=int(limits.get("nvidia.com/gpu", 0)),  # a whole GPU stays one logical GPU
            memory_bytes=int(memory_bytes(limits["memory"]) * SCALE),
            port_base=port_base + len(nodes) * PORT_STRIDE,
            start_params=params,
            # As KubeRay sets it: Ray's own node-group label comes from it.
            env={**container_env(container), "RAY_NODE_TYPE_NAME": group, **common, **env},
        )

    head_env = {}
    if ft:
        head_env = {"RAY_REDIS_ADDRESS": redis_address}
        if ft.get("externalStorageNamespace"):
            head_env["RAY_external_storage_namespace"] = ft["externalStorageNamespace"]
    nodes.append(node("head", "head", cluster["headGroupSpec"], head_env))
    for group, count in workers.items():
        for i in range(1, count + 1):
            proxy_port = {"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(http_port)}
            nodes.append(node(f"{group}-{i}", group, groups[group], proxy_port))
    return nodes


def scaled_serve_config(service: dict, http_port: int) -> dict:
    """serveConfigV2 with every replica's num_cpus scaled by SCALE and Serve's HTTP
    options on loopback: `http_port` is the head's proxy (workers' proxies take the
    client port from RAY_SERVE_WORKER_PROXY_HTTP_PORT)."""
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": http_port}
    for app in config["applications"]:
        for dep in app.get("deployments", []):
            actor = dep.get("ray_actor_options", {})
            if "num_cpus" in actor:
                actor["num_cpus"] = actor["num_cpus"] * SCALE
    return config


def ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        for host in ("127.0.0.1", NODE_IP):
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True


def free_port_block(count: int, start: int = 21000, stop: int = 32000) -> int:
    """The first port of `count` consecutive free loopback ports (below the kernel's
    ephemeral range, so a client's outgoing port does not take one meanwhile)."""
    for first in range(start, stop - count, 500):
        if ports_free(first, count):
            return first
    raise RuntimeError(f"no {count} consecutive free ports between {start} and {stop}")


# ---- running a node --------------------------------------------------------------------


# A pod's CPUs are its own on KubeRay (requests = limits); here every node shares two cores
# with the others and whatever else runs, and a raylet whose dashboard agent has not written
# its port within 15 s (Ray's fixed wait) exits: on the loaded machine restarted nodes failed
# again and again. Ray's daemons (raylet, GCS, agents) run at a higher priority, standing in
# for the guaranteed CPUs; the replicas and job actors stay below everything else (Ray
# starts its workers 15 steps nicer than their raylet: 10 here).
NODE_PRIORITY = ["nice", "-n", "-5"]
NODE_ENV = "FACEGRAPH_REHEARSAL_NODE"  # in every process of a node run as processes: <work>/<node>


def pids_with_env(value: str) -> list[int]:
    """Processes whose environment has NODE_ENV=value: a node's processes, found even
    when they left its process group (Ray retitles its workers' command lines, not their env)."""
    wanted = f"{NODE_ENV}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Processes:
    """Each node as a `ray start --block` process in a session of its own (what a
    container holds); killed with SIGKILL to every process of the node at once."""

    kind = "processes"

    def __init__(self, work: Path):
        self.work = work
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def tag(self, name: str) -> str:
        return f"{self.work.name}/{name}"

    def create(self, node: Node, head: Node) -> None:
        env = {k: v for k, v in node.env.items() if k != "FACEGRAPH_ASSETS_CACHE"}  # the image's path
        env["PYTHONPATH"] = str(REPO_ROOT)
        env[NODE_ENV] = self.tag(node.name)
        # A temp dir per node, short: Ray's socket paths must fit AF_UNIX's 107 bytes.
        argv = node.ray_start(head, temp_dir=self.work / "ray" / node.name)
        argv[0] = str(Path(sys.executable).with_name("ray"))
        argv = [*NODE_PRIORITY, *argv]
        self.commands[node.name] = (argv, env)
        self.start(node.name)

    def start(self, name: str) -> None:
        argv, env = self.commands[name]
        # A restarted pod starts with a fresh /tmp; here the node's temp dir stays, and `ray
        # start --head` would take the address it wrote last time, still in the workers'
        # raylet command lines, for a GCS already running.
        (self.work / "ray" / name / "ray_current_cluster").unlink(missing_ok=True)
        with open(self.work / f"{name}.log", "a") as log:
            log.write(f"+ {shlex.join(argv)}\n")
            log.flush()
            self.procs[name] = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def running(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def kill(self, name: str) -> None:
        """The node's process group and any process that left it (found by NODE_ENV)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids_with_env(self.tag(name)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)

    def remove_all(self) -> None:
        for name in self.procs:
            self.kill(name)


class Containers:
    """Each node as a container of the FaceGraph image, host networking, labelled
    facegraph=rehearsal; `podman kill` is the lost pod, `podman start` the restarted one."""

    kind = "containers"

    def __init__(self, work: Path, image: str, prefix: str, code_from: Path | None = None):
        self.work, self.image, self.prefix = work, image, prefix
        # The image's own code, or this checkout's (read-only over it: a change rehearsed
        # before the image is rebuilt; the venv and assets stay the image's).
        self.volumes = [f"{work}:{work}"]
        if code_from is not None:
            self.volumes += [f"{code_from / pkg}:/app/{pkg}:ro" for pkg in ("serve_app", "deployments")]
        self.names: list[str] = []
        self.env = dict(os.environ)
        conf = REPO_ROOT / "deploy" / "podman" / "containers.conf"
        if conf.exists():
            self.env.setdefault("CONTAINERS_CONF", str(conf))

    def podman(self, *args: str, check: bool = True) -> str:
        # The container's processes inherit podman's priority (NODE_PRIORITY): run, start.
        command = [*NODE_PRIORITY, "podman", *args] if args[0] in ("run", "start") else ["podman", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:2])}: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def create(self, node: Node, head: Node) -> None:
        name = f"{self.prefix}-{node.name}"
        argv = ["run", "--detach", "--name", name, "--label", LABEL, "--network", "host", "--init"]
        # The image's HEALTHCHECK asks Serve's :8000 of a single-node server; KubeRay probes
        # its pods its own way (and podman's timer needs systemd).
        argv += ["--no-healthcheck"]
        # Ray's object store lives in /dev/shm: as large as the node's object store and then some.
        argv += ["--shm-size", str(min(node.memory_bytes * 3 // 10, 512 * 2**20) + 128 * 2**20)]
        # Ray's session folder on the host: every node's logs (Serve's replica logs among
        # them) outlive its container, as a log volume on KubeRay would.
        logs = self.work / "nodes" / node.name
        logs.mkdir(parents=True)
        logs.chmod(0o777)
        for volume in [*self.volumes, f"{logs}:/tmp/ray"]:
            argv += ["--volume", volume]
        for key, value in node.env.items():
            argv += ["--env", f"{key}={value}"]
        argv += [self.image, *node.ray_start(head)]
        (self.work / f"{node.name}.log").write_text(f"+ podman {shlex.join(argv)}\n")
        self.names.append(name)  # removed at the end even if `run` fails half-way
        self.podman(*argv)

    def start(self, name: str) -> None:
        self.podman("start", f"{self.prefix}-{name}")

    def running(self, name: str) -> bool:
        state = self.podman("inspect", "--format", "{{.State.Running}}", f"{self.prefix}-{name}", check=False)
        return state == "true"

    def kill(self, name: str) -> None:
        self.podman("kill", "--signal", "KILL", f"{self.prefix}-{name}")

    def remove_all(self) -> None:
        """Keep each container's last log lines in the work folder, then remove it (ours only: by name)."""
        for name in self.names:
            logs = self.podman("logs", "--tail", "300", name, check=False)
            (self.work / f"{name.removeprefix(self.prefix + '-')}.container.log").write_text(logs)
            self.podman("rm", "--force", "--time", "5", name, check=False)


def wait_port(port: int, timeout_s: float) -> float:
    """Seconds until something accepts connections on 127.0.0.1:port."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")
