"""Node lost: the single-machine rehearsal of a KubeRay worker pod loss.

A real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster, as Ray's own
tests build one): a head with no CPUs for replicas (the Serve controller and the HTTP
proxy live there, as on KubeRay), an "app" worker node (the face_extract ingress, the
ModelTier and ArcFace) and a "model" worker node holding both RetinaFace replicas
(pinned by a custom resource: the model worker group). The apps are deployed from
serve_config.yaml. Under steady load on POST /extract-faces, the model node is killed
(raylet and all its workers, no graceful shutdown); --replace-after s later a new node
of the same group joins, as KubeRay would start a new pod. Nothing is redeployed: Serve
reschedules the lost replicas on the new node by itself.

Figures: failed requests (and why), the time from the kill until throughput is back,
the time from the new node's arrival until then, and the time until Serve runs the
replacement replicas.

    python -m bench node_lost [--clients 4] [--before 12] [--replace-after 10] [--json OUT]
"""

from __future__ import annotations

import json
import os
import time

from bench.faults.common import argument_parser, write_json
from bench.harness import cluster, figures, procs
from bench.harness.endpoints import extract_faces_request
from bench.harness.load import ClosedLoop

MODEL = "RetinaFace"
NODE_ARGS = {"num_cpus": 2, "object_store_memory": 200 * 2**20}


def main(argv=None) -> int:
    p = argument_parser(__doc__)
    p.add_argument("--images", type=int, default=1, help="images per request")
    p.add_argument("--before", type=float, default=12, help="seconds of load before the node is killed")
    p.add_argument("--replace-after", type=float, default=10, help="seconds until a new model node joins")
    p.add_argument("--after", type=float, default=60, help="seconds of load after the kill, at most")
    args = p.parse_args(argv)

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    os.environ.update(cluster.REHEARSAL_ENV)
    ray_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 200 * 2**20})
    try:
        ray_cluster.add_node(**NODE_ARGS, resources={"app_node": 100})
        model_node = ray_cluster.add_node(**NODE_ARGS, resources={"model_node": 100})
        ray.init(address=ray_cluster.address, log_to_driver=False)
        pin = lambda group, cpus: {"ray_actor_options": {"num_cpus": cpus, "resources": {group: 1}}}  # noqa: E731
        config = cluster.app_config(
            ["face_extract"],
            overrides={
                MODEL: {"num_replicas": 2, **pin("model_node", 0.25)},
                "ArcFace": pin("app_node", 0.2),
                "ModelTier": pin("app_node", 0.05),
                "FaceExtractIngress": pin("app_node", 0.05),
            },
        )
        start = time.monotonic()
        url = cluster.deploy(config, location="HeadOnly")
        cluster.wait_running(config)
        print(f"deployed in {time.monotonic() - start:.0f} s on {len(ray.nodes())} nodes: {url}", flush=True)
        nodes = {p.name: p.node_id for p in procs.serve_processes()}
        assert nodes[f"models:{MODEL}"] == model_node.node_id, nodes

        load = ClosedLoop(
            [extract_faces_request(url, args.images)],
            args.clients,
            max_seconds=args.before + args.after + 10,
            max_requests=20_000,
        ).start()
        time.sleep(args.before)
        ray_cluster.remove_node(model_node, allow_graceful=False)
        fault_at = time.monotonic()
        print(f"model node {model_node.node_id[:8]} killed", flush=True)
        time.sleep(args.replace_after)
        new_node = ray_cluster.add_node(**NODE_ARGS, resources={"model_node": 100})
        joined_at = time.monotonic()
        print(f"new model node {new_node.node_id[:8]} joined after {joined_at - fault_at:.1f} s", flush=True)
        replaced_s = None
        while time.monotonic() - fault_at < args.after:
            if replaced_s is None and procs.healthy_replicas("models", MODEL) >= 2:
                replaced_s = round(time.monotonic() - fault_at, 1)
                # Enough: the run goes on for 15 s of recovered traffic.
                args.after = min(args.after, replaced_s + 15)
            time.sleep(0.5)
        outcomes = load.stop()
        on_new = [p for p in procs.replicas("models", MODEL) if p.node_id == new_node.node_id]
        failed = [o for o in outcomes if not o.ok]
        recovery = figures.recovery_s(outcomes, fault_at, baseline_s=min(10, args.before - 2), horizon_s=args.after)
        result = {
            "scenario": "node-lost",
            "nodes": "head (0 CPUs) + app node + model node",
            "clients": args.clients,
            "images_per_request": args.images,
            "requests": len(outcomes),
            "failed": len(failed),
            "failed_pct": round(100 * len(failed) / max(1, len(outcomes)), 2),
            "failures": figures.failures(outcomes),
            "new_node_after_s": round(joined_at - fault_at, 1),
            "recovery_s": recovery,
            "recovery_after_new_node_s": None if recovery is None else round(recovery - (joined_at - fault_at), 1),
            "replicas_replaced_s": replaced_s,
            "replicas_on_new_node": len(on_new),
            "calls_sent_again": cluster.count_in_logs("sending the call again"),
            "latency_ms": figures.percentiles([o.latency_s for o in outcomes if o.ok]),
            "ok_per_second": figures.per_second(outcomes, load.t0, int(max(o.end for o in outcomes) - load.t0) + 1),
            "fault_at_s": round(fault_at - load.t0, 1),
        }
        print(json.dumps(result), flush=True)
        write_json(args.json, result)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            ray_cluster.shutdown()
    return 0
