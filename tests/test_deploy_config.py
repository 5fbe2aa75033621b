"""Static checks of what we ship: serve_config.yaml, cluster.yaml (against KubeRay's
CRD schema from ../shared/schemas), the Dockerfile, and the README's commands."""

import importlib
import inspect
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT.parent / "shared" / "schemas"
SERVE_CONFIG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
MODEL_DEPLOYMENTS = {"LBPDetector", "SegFormerParser", "FaceMesh", "RetinaFace", "ArcFace", "TDDFA", "MeshRenderer"}


def deployments():
    for app in SERVE_CONFIG["applications"]:
        for dep in app.get("deployments", []):
            yield app, dep


def test_every_app_builder_is_importable_and_typed():
    for app in SERVE_CONFIG["applications"]:
        module, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attr)
        args_type = inspect.signature(builder).parameters["args"].annotation
        assert not isinstance(args_type, str), f"{module}: the builder's annotation must be a real class"
        args_type(**app.get("args", {}))  # the yaml args validate


def test_model_deployments_batch_and_fit_on_two_cores():
    cpus_at_min = 0.0
    for app, dep in deployments():
        actor = dep.get("ray_actor_options", {})
        assert 0 < actor.get("num_cpus", 1) < 1, f"{dep['name']}: give it a fractional num_cpus"
        scaling = dep.get("autoscaling_config")
        if scaling:
            assert scaling["min_replicas"] <= scaling["max_replicas"], dep["name"]
        cpus_at_min += actor["num_cpus"] * (scaling["min_replicas"] if scaling else dep.get("num_replicas", 1))
        if dep["name"] in MODEL_DEPLOYMENTS:
            batch = dep["user_config"]["max_batch_size"]
            assert dep["max_ongoing_requests"] >= batch, f"{dep['name']}: batches would never fill"
            assert dep["user_config"]["batch_wait_timeout_s"] > 0
    assert cpus_at_min <= 2.0, f"{cpus_at_min} CPUs at min replicas: will not schedule on 2 cores"


def test_deployment_names_are_ingress_or_model_class_names():
    from ray import serve

    from serve_app.model_tier import MODEL_APP, MODELS

    for app in SERVE_CONFIG["applications"]:
        mod = importlib.import_module(app["import_path"].partition(":")[0])
        ingresses = {o.name for o in vars(mod).values() if isinstance(o, serve.Deployment)}
        models = set(MODELS) if app["name"] == MODEL_APP else set()
        configured = {d["name"] for d in app.get("deployments", [])}
        assert configured <= ingresses | models, f"{app['name']}: {configured - ingresses - models} match no class"


def test_one_model_tier_serves_every_pipeline():
    """Every model is configured once, in the `models` application, with a deployment
    block; pipeline applications hold only their ingress; every model a pipeline's
    spec names is served there."""
    from serve_app.model_tier import MODEL_APP, serve_config_models

    apps = {a["name"]: a for a in SERVE_CONFIG["applications"]}
    served = serve_config_models(ROOT / "serve_config.yaml")
    model_blocks = {d["name"] for d in apps[MODEL_APP]["deployments"]} & MODEL_DEPLOYMENTS
    assert set(served) == model_blocks, "every served model needs its deployments block, and vice versa"
    for name, app in apps.items():
        if name == MODEL_APP:
            continue
        assert not {d["name"] for d in app.get("deployments", [])} & MODEL_DEPLOYMENTS, f"{name} binds its own model"
        spec = importlib.import_module(f"serve_app.pipelines.{name}").SPEC
        assert spec.name == name and set(spec.models.values()) <= set(served), name


def crd_schema(name: str) -> dict:
    crd = yaml.safe_load((SCHEMAS / name).read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.mark.skipif(not SCHEMAS.exists(), reason="../shared/schemas not beside the repo")
def test_cluster_yaml_is_a_valid_rayservice_serving_serve_config():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(cluster, crd_schema("ray.io_rayservices.yaml"))
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayService")
    assert yaml.safe_load(cluster["spec"]["serveConfigV2"]) == SERVE_CONFIG, \
        "cluster.yaml is stale: run python scripts/make_cluster_yaml.py"
    # A deliberately broken copy fails, so the check above can fail too.
    cluster["spec"]["rayClusterConfig"]["headGroupSpec"] = "not an object"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, crd_schema("ray.io_rayservices.yaml"))


def test_dockerfile_runs_the_ci_install_and_fetches_assets():
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", docker, re.M)
    assert "RUN scripts/setup.sh production" in docker
    for path in ("requirements.txt", "constraints.txt", "scripts", "assets", "serve_app", "deployments", "serve_config.yaml"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", docker, re.M), f"Dockerfile does not copy {path}"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci == ["scripts/test.sh"]
    assert "scripts/test.sh" in readme and "scripts/serve.sh" in readme


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "serve_app" / "settings.py").read_text()
    names = set(re.findall(r'_(?:str|int|float|csv)\("([A-Z0-9_]+)"', source))
    from serve_app.sam2_config import Sam2Config

    names |= set(Sam2Config.env_names().values())
    assert names and not [n for n in sorted(names) if f"`{n}`" not in readme]


def test_one_opencv_with_cascades():
    from importlib.metadata import distributions

    import cv2

    opencvs = sorted({d.metadata["Name"].lower() for d in distributions() if d.metadata["Name"].lower().startswith("opencv")})
    assert opencvs == ["opencv-python-headless"] and hasattr(cv2, "CascadeClassifier")
