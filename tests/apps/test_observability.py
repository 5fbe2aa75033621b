"""Graph tests of what an operator watches: the Grafana dashboard in deploy/grafana
(every metric its queries name is on the node's metrics endpoint after traffic, and its
mean batch size is the replicas' own figure) and the replica logs (a request's id is on
the lines it causes, in the ingress and in the model deployments)."""

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.graph

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "facegraph.json").read_text())
MASK_APP, MASK_PREFIX = "obs_face_mask", "/obs/face-mask"
SAM2_APP, SAM2_PREFIX = "obs_face_mask_sam2", "/obs/face-mask-sam2"
JSON_LOGS = {"encoding": "JSON", "additional_log_standard_attrs": ["name"]}  # as serve_config.yaml


def queries() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] if p["type"] != "row" for t in p["targets"]]


def metric_names() -> set[str]:
    return {name for expr in queries() for name in re.findall(r"\b(ray_[a-z0-9_]+)\b", expr)}


@pytest.fixture(scope="module")
def apps(serve_url, model_tier):
    from ray import serve

    from serve_app.apps import face_mask, face_mask_sam2

    serve.run(face_mask.build(face_mask.FaceMaskArgs()), name=MASK_APP, route_prefix=MASK_PREFIX)
    # Nothing listens on this port: SAM2 is unreachable, so every face falls back and the
    # ingress logs why (a facegraph.sam2 line caused by the request).
    sam2 = {"url": f"http://127.0.0.1:{free_port()}/predict", "retries": 0, "breaker_failures": 0}
    serve.run(
        face_mask_sam2.build(face_mask_sam2.FaceMaskSam2Args(sam2=sam2)),
        name=SAM2_APP,
        route_prefix=SAM2_PREFIX,
        logging_config=JSON_LOGS,
    )
    yield {"mask": serve_url + MASK_PREFIX, "sam2": serve_url + SAM2_PREFIX}
    serve.delete(MASK_APP)
    serve.delete(SAM2_APP)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


def test_dashboard_is_a_grafana_dashboard_over_one_prometheus_source():
    assert DASHBOARD["uid"] == "facegraph" and DASHBOARD["title"]
    (source,) = DASHBOARD["templating"]["list"]
    assert (source["name"], source["type"], source["query"]) == ("datasource", "datasource", "prometheus")
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
    # What the issue asked to see: per endpoint, per model, per deployment.
    names = metric_names()
    assert {
        "ray_facegraph_requests_total",
        "ray_serve_num_http_error_requests_total",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_facegraph_model_items_total",
        "ray_facegraph_model_batches_total",
        "ray_serve_deployment_replica_healthy",
    } <= names
    (mean_batch,) = [p for p in DASHBOARD["panels"] if p["title"].startswith("Mean batch size")]
    assert mean_batch["targets"][0]["expr"] == (
        "sum by (model) (rate(ray_facegraph_model_items_total[$__rate_interval])) / "
        "sum by (model) (rate(ray_facegraph_model_batches_total[$__rate_interval]))"
    )


def _samples(text: str, name: str, model: str) -> float:
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+-]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_every_dashboard_metric_is_exported_and_mean_batch_is_right(client, apps, cartoon_dir, photos_dir, ray_cluster):
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    cartoon = (cartoon_dir / "kanosawa_anime_5faces.png").read_bytes()
    photo = (photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes()

    def mask(_):
        return client.post(apps["mask"], files={"image": ("a.png", cartoon)}, data={"outputs": "mask"}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(mask, range(60)))
    assert statuses == [200] * 60
    assert client.post(apps["sam2"], files={"image": ("r.jpg", photo)}, data={"outputs": "mask"}).status_code == 200
    # Errors, so the error series exist: an empty upload (400), a route nobody serves
    # (404), and a model failing on an item (a deployment error, ModelError).
    assert client.post(apps["mask"], files={"image": ("e.png", b"")}).status_code == 400
    assert client.get(apps["mask"] + "/no-such-route").status_code == 404
    with pytest.raises(Exception, match="failed on this item"):
        serve.get_deployment_handle("ArcFace", MODEL_APP).remote(np.zeros((2, 2), np.uint8)).result(timeout_s=60)

    def batch_stats(model):
        return serve.get_deployment_handle(model, MODEL_APP).batch_stats.remote().result(timeout_s=60)

    wanted, text, deadline = metric_names(), "", time.time() + 90
    while time.time() < deadline:
        text = httpx.get(ray_cluster["metrics_url"], timeout=10).text
        exported = set(re.findall(r"^(ray_[a-z0-9_]+)\{", text, re.M))
        settled = all(
            _samples(text, "ray_facegraph_model_batches_total", m) == sum(batch_stats(m).values())
            for m in ("LBPDetector", "SegFormerParser")
        )
        if wanted <= exported and settled:
            break
        time.sleep(3)
    exported = set(re.findall(r"^(ray_[a-z0-9_]+)\{", text, re.M))
    assert not wanted - exported, f"named by the dashboard, not exported: {sorted(wanted - exported)}"
    # The dashboard's mean batch (items / batches, summed over replicas) is the replicas'
    # own record of their batch sizes, for every model the traffic reached.
    for model in ("LBPDetector", "SegFormerParser"):
        seen = batch_stats(model)
        truth = sum(size * n for size, n in seen.items()) / sum(seen.values())
        items = _samples(text, "ray_facegraph_model_items_total", model)
        batches = _samples(text, "ray_facegraph_model_batches_total", model)
        assert batches == sum(seen.values()) and items / batches == pytest.approx(truth), (model, seen)
    assert sum(batch_stats("SegFormerParser").values()) < _samples(
        text, "ray_facegraph_model_items_total", "SegFormerParser"
    ), "no batching happened"


def serve_logs_dir() -> Path:
    import ray

    # This test cluster's own session (not /tmp/ray/session_latest: another cluster may
    # have started since).
    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"


def replica_lines(app: str, deployment: str, needle: str, until=bool, deadline_s: float = 30) -> list[str]:
    """Lines of every replica log of `deployment` that contain `needle`, once `until(lines)`
    holds (lines are written as the request goes: its access line comes last)."""
    deadline, found = time.time() + deadline_s, []
    while time.time() < deadline:
        found = [
            line
            for path in serve_logs_dir().glob(f"replica_{app}_{deployment}_*.log")
            for line in path.read_text(errors="replace").splitlines()
            if needle in line
        ]
        if until(found):
            return found
        time.sleep(1)
    return found


def test_a_request_id_is_on_every_line_the_request_causes(client, apps, photos_dir):
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    rid = f"obs-{uuid.uuid4().hex}"
    photo = (photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes()
    resp = client.post(
        apps["sam2"], files={"image": ("r.jpg", photo)}, data={"outputs": "mask"}, headers={"X-Request-ID": rid}
    )
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == rid
    assert [f["fallback_reason"] for f in resp.json()["faces"]] == ["unreachable"]

    # The ingress (JSON logs, as serve_config.yaml sets): our own logger's line about the
    # SAM2 fallback carries the id, like Serve's access line does.
    with_access_line = lambda lines: any('"name": "ray.serve"' in line for line in lines)
    lines = [json.loads(line) for line in replica_lines(SAM2_APP, "FaceMaskSam2Ingress", rid, with_access_line)]
    ours = [r for r in lines if r.get("name") == "facegraph.sam2"]
    assert ours and all(r["request_id"] == rid for r in ours), lines
    assert any("SAM2 fallback (unreachable)" in r["message"] for r in ours), ours
    assert any(r.get("name") == "ray.serve" for r in lines), "no Serve access line with the id"
    every_fallback = [json.loads(line) for line in replica_lines(SAM2_APP, "FaceMaskSam2Ingress", "SAM2 fallback")]
    assert all(r.get("request_id") for r in every_fallback), "a fallback line without its request id"

    # The model deployments the ingress called got the same id (text logs in the test tier).
    for model in ("RetinaFace", "FaceMesh"):
        assert replica_lines(MODEL_APP, model, rid), f"{model}'s replica log never names {rid}"

    # Our own line inside a model deployment's batch: the item that failed names its request.
    pending = serve.get_deployment_handle("ArcFace", MODEL_APP).remote(np.zeros((2, 2), np.uint8))
    with pytest.raises(Exception, match="failed on this item"):
        pending.result(timeout_s=60)
    failed = replica_lines(MODEL_APP, "ArcFace", pending.request_id)
    assert any("ArcFace failed on one item" in line for line in failed), failed
