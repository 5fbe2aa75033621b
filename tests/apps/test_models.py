"""Graph tests: the model tier (the `models` application, tests/conftest.py
`model_tier`) with every pipeline app deployed beside it, called over real HTTP on
127.0.0.1. GET /healthz reports every application and every model; each model is ONE
deployment, in the `models` application, shared by every endpoint that calls it."""

import base64

import httpx
import pytest

pytestmark = pytest.mark.graph

# The weights tests/conftest.py's TEST_MODELS serve (FaceMesh's are bundled with mediapipe).
WEIGHTS = {
    "LBPDetector": "lbp-detector-cascade",
    "SegFormerParser": "segformer-parser-tiny",
    "RetinaFace": "retinaface-det-500m",
    "ArcFace": "arcface-mobilefacenet-128d",
    "TDDFA": "tddfa-mb05-120",
}


def _apps() -> dict[str, tuple[str, str, set[str]]]:
    """Every pipeline app: {application: (route prefix, its ingress deployment, the
    models its spec calls)}."""
    from serve_app.pipelines import face_extract, face_mask, face_mask_sam2

    return {
        face_mask.SPEC.name: ("/v1/face-mask", "FaceMaskIngress", set(face_mask.SPEC.models.values())),
        face_mask_sam2.SPEC.name: (
            "/v1/face-mask-sam2",
            "FaceMaskSam2Ingress",
            set(face_mask_sam2.SPEC.models.values()),
        ),
        face_extract.SPEC.name: ("/", "FaceExtractIngress", set(face_extract.SPEC.models.values())),
    }


APPS = _apps()


@pytest.fixture(scope="module")
def apps(serve_url, model_tier):
    """Every pipeline app's thin ingress, up at once against the one model tier."""
    from ray import serve

    from serve_app.apps import face_extract, face_mask, face_mask_sam2

    # SAM2 explicitly unset (whatever the environment says): faces get the polygon.
    builds = {
        "face_mask": face_mask.build(face_mask.FaceMaskArgs()),
        "face_mask_sam2": face_mask_sam2.build(face_mask_sam2.FaceMaskSam2Args(sam2={"url": ""})),
        "face_extract": face_extract.build(
            face_extract.FaceExtractArgs(max_concurrent_images=8, request_timeout_s=None)
        ),
    }
    for name, app in builds.items():
        serve.run(app, name=name, route_prefix=APPS[name][0])
    yield {name: serve_url + prefix.rstrip("/") for name, (prefix, _, _) in APPS.items()}
    for name in builds:
        serve.delete(name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


def batches_seen(name: str) -> int:
    """Predict calls the model tier's `name` deployment has run so far."""
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    return sum(serve.get_deployment_handle(name, app_name=MODEL_APP).batch_stats.remote().result().values())


def test_healthz_lists_every_application_and_every_model(client, apps, model_tier):
    from serve_app.config.model_tier import MODEL_APP

    resp = client.get(model_tier["healthz"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok" and body["version"] and body["timestamp"].endswith("+00:00")
    assert body["applications"] == {MODEL_APP: "RUNNING", **{name: "RUNNING" for name in APPS}}
    assert set(body["models"]) == {*WEIGHTS, "FaceMesh", "MeshRenderer", "FaceGallery"}
    # `runtime`: what each model really runs on (the torch device; the ONNX Runtime
    # provider actually in use), beside where Ray placed it.
    runtimes = {
        "SegFormerParser": "cpu",  # TEST_MODELS keeps the default runtime (torch); serve_config.yaml says auto
        "TDDFA": "cpu",
        "RetinaFace": "CPUExecutionProvider",
        "ArcFace": "OpenVINO CPU",  # runtime auto on a CPU replica
    }
    for name, weights in WEIGHTS.items():
        want = {"weights": weights, "device": "cpu", **({"runtime": runtimes[name]} if name in runtimes else {})}
        assert body["models"][name] == want, (name, body["models"][name])
    mesh = body["models"]["FaceMesh"]
    assert set(mesh) == {"weights", "device"} and mesh["device"] == "cpu"
    assert mesh["weights"].startswith("mediapipe ") and "face_mesh" in mesh["weights"]
    renderer = body["models"]["MeshRenderer"]
    assert renderer["device"] == renderer["runtime"] == "cpu", renderer
    assert renderer["backend"] in ("pytorch3d", "torch"), renderer
    gallery = body["models"]["FaceGallery"]  # no runtime of its own: the store it keeps people in
    assert gallery["device"] == "cpu" and gallery["backend"] in ("sqlite", "postgresql"), gallery


def test_each_model_is_one_deployment_shared_by_the_apps(client, apps, photos_dir):
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP

    mesh_before, det_before, emb_before = (batches_seen(n) for n in ("FaceMesh", "RetinaFace", "ArcFace"))
    photo = (photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes()
    masked = client.post(apps["face_mask_sam2"], files={"image": ("rob.jpg", photo)}, data={"outputs": "mask"})
    assert masked.status_code == 200, masked.text
    assert [(f["mask_source"], f["fallback_reason"]) for f in masked.json()["faces"]] == [("polygon", "not_configured")]
    extracted = client.post(
        apps["face_extract"] + "/extract-faces", json={"images": [{"image_base64": base64.b64encode(photo).decode()}]}
    )
    assert extracted.status_code == 200, extracted.text
    assert extracted.json()["unique_faces"] == 1
    # The calls ran on the model tier's deployments...
    assert batches_seen("FaceMesh") > mesh_before
    assert batches_seen("RetinaFace") > det_before and batches_seen("ArcFace") > emb_before

    # ... and those are the only copies: one deployment per model, all in `models`;
    # the pipeline apps hold nothing but their ingress.
    status = serve.status().applications
    where = {}
    for app_name, app_status in status.items():
        for deployment in app_status.deployments:
            where.setdefault(deployment, []).append(app_name)
    for model in (*WEIGHTS, "FaceMesh"):
        assert where.get(model) == [MODEL_APP], (model, where.get(model))
    for name, (_, ingress, _) in APPS.items():
        assert set(status[name].deployments) == {ingress}, (name, set(status[name].deployments))


@pytest.mark.parametrize("app", list(APPS))
def test_every_pipeline_app_is_ready_and_names_its_weights(client, apps, app):
    _, _, models = APPS[app]
    health = client.get(apps[app] + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    resp = client.get(apps[app] + "/ready")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok" and body["checks"] == {name: "ok" for name in models}
    served = {name: weights for name, weights in body["models"].items() if name != "SAM2"}
    assert set(served) == models
    for name in models:
        if name == "FaceMesh":
            assert served[name].startswith("mediapipe "), served
        else:
            assert served[name] == WEIGHTS[name], served
    if app == "face_mask_sam2":
        assert body["models"]["SAM2"] == "not configured (polygon fallback)"
