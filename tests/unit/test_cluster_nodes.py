"""The cluster rehearsal's plan (serve_app/ops/cluster_nodes.py), without starting it:
cluster.gpu.yaml's pods as Ray nodes scaled to this machine, each with ports of its own,
KubeRay's GCS fault tolerance on the head, and replicas that still fit when a CPU
worker is lost (what `facegraph cluster rehearse` then checks for real)."""

import re
from pathlib import Path

import pytest
import yaml

from serve_app.ops import cluster_nodes
from serve_app.ops.cluster_nodes import NODE_IP, SCALE

ROOT = Path(__file__).resolve().parents[2]
SERVICE = yaml.safe_load((ROOT / "cluster.gpu.yaml").read_text())
PORT_FLAGS = re.compile(r"--(port|(?!m..-worker).*-port)$")  # every port flag but the worker range's


def nodes():
    planned = cluster_nodes.plan(SERVICE, 30000, "127.0.0.1:6390", 30900, {"cpu": 2, "gpu": 1}, env={"X": "1"})
    return {n.name: n for n in planned}


def group_limits(name: str) -> dict:
    groups = {g["groupName"]: g for g in SERVICE["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    (container,) = groups[name]["template"]["spec"]["containers"]
    return container["resources"]["limits"]


def test_each_pod_is_a_node_of_its_group_scaled_down():
    plan = nodes()
    assert list(plan) == ["head", "cpu-1", "cpu-2", "gpu-1"]
    head = plan["head"]
    assert (head.cpus, head.gpus) == (0, 0)  # rayStartParams num-cpus 0: no replica on the head
    for name, group in (("cpu-1", "cpu"), ("cpu-2", "cpu"), ("gpu-1", "gpu")):
        limits = group_limits(group)
        node = plan[name]
        assert node.cpus == int(limits["cpu"]) * SCALE and node.gpus == int(limits.get("nvidia.com/gpu", 0))
        assert node.memory_bytes == cluster_nodes.memory_bytes(limits["memory"]) * SCALE
        assert node.start_params["labels"] == f"facegraph.io/node-group={group}"
        assert node.env["RAY_NODE_TYPE_NAME"] == group and node.env["X"] == "1"
        # The workers' proxies answer the clients' port (the serve Service without the head).
        assert node.env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] == "30900"
    assert plan["gpu-1"].gpus == 1 and plan["cpu-1"].gpus == 0
    # KubeRay's gcsFaultToleranceOptions: the head's GCS keeps its tables in the Redis given.
    ft = SERVICE["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert head.env["RAY_REDIS_ADDRESS"] == "127.0.0.1:6390"
    assert head.env["RAY_external_storage_namespace"] == ft["externalStorageNamespace"]
    assert "RAY_SERVE_WORKER_PROXY_HTTP_PORT" not in head.env and "RAY_REDIS_ADDRESS" not in plan["cpu-1"].env
    # Secrets are not played: only literal values reach a node.
    assert "FACEGRAPH_DATABASE_URL" not in head.env


def test_every_node_has_its_own_ports_on_loopback():
    plan = nodes()
    head = plan["head"]
    taken: dict[int, str] = {}
    for node in plan.values():
        argv = node.ray_start(head)
        assert argv[argv.index("--node-ip-address") + 1] == NODE_IP and NODE_IP.startswith("127.")
        if node.is_head:
            assert "--head" in argv and argv[argv.index("--dashboard-host") + 1] == "127.0.0.1"
        else:
            assert argv[argv.index("--address") + 1] == f"{NODE_IP}:{head.gcs_port}"
        ports = [int(argv[i + 1]) for i, flag in enumerate(argv) if PORT_FLAGS.match(flag)]
        low, high = int(argv[argv.index("--min-worker-port") + 1]), int(argv[argv.index("--max-worker-port") + 1])
        ports += range(low, high + 1)
        for port in ports:
            assert port not in taken, f"{node.name} and {taken.get(port)} share port {port}"
            taken[port] = node.name


def test_replicas_ask_the_scaled_cpus_and_fit_when_a_cpu_worker_is_lost():
    config = cluster_nodes.scaled_serve_config(SERVICE, 30800)
    assert config["http_options"]["host"] == "127.0.0.1" and config["http_options"]["port"] == 30800
    cluster = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])
    theirs = {d["name"]: d for a in cluster["applications"] for d in a.get("deployments", [])}
    plan = nodes()
    on_cpu = 0.0
    for app in config["applications"]:
        for dep in app.get("deployments", []):
            actor = dep["ray_actor_options"]
            assert actor["num_cpus"] == pytest.approx(theirs[dep["name"]]["ray_actor_options"]["num_cpus"] * SCALE)
            if actor["label_selector"] == {"facegraph.io/node-group": "cpu"}:
                scaling = dep.get("autoscaling_config")
                on_cpu += actor["num_cpus"] * (scaling["min_replicas"] if scaling else dep.get("num_replicas", 1))
    # The rehearsal's first failure: one CPU worker holds every CPU replica at its minimum.
    assert 0 < on_cpu <= plan["cpu-2"].cpus


def test_a_scale_that_splits_a_cpu_is_refused():
    assert cluster_nodes.scaled_whole(32, "cpu") == 32 * SCALE
    with pytest.raises(ValueError, match="not a whole number"):
        cluster_nodes.scaled_whole(3, "cpu")
