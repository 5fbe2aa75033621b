"""Static checks of what we ship: serve_config.yaml, cluster.yaml (against KubeRay's
CRD schema from ../shared/schemas), the Dockerfile, and the README's commands."""

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT.parent / "shared" / "schemas"
SERVE_CONFIG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
MODEL_DEPLOYMENTS = {
    "LBPDetector",
    "SegFormerParser",
    "FaceMesh",
    "RetinaFace",
    "ArcFace",
    "TDDFA",
    "MeshRenderer",
    "FaceGallery",
}


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


def test_model_deployments_batch_and_fit_on_two_cores_scaled_up_too():
    cpus_at_min = cpus_at_max = 0.0
    for _, dep in deployments():
        actor = dep.get("ray_actor_options", {})
        assert 0 < actor.get("num_cpus", 1) < 1, f"{dep['name']}: give it a fractional num_cpus"
        scaling = dep.get("autoscaling_config")
        if scaling:
            assert scaling["min_replicas"] <= scaling["max_replicas"], dep["name"]
        cpus_at_min += actor["num_cpus"] * (scaling["min_replicas"] if scaling else dep.get("num_replicas", 1))
        cpus_at_max += actor["num_cpus"] * (scaling["max_replicas"] if scaling else dep.get("num_replicas", 1))
        if dep["name"] in MODEL_DEPLOYMENTS:
            batch = dep["user_config"]["max_batch_size"]
            assert dep["max_ongoing_requests"] >= batch, f"{dep['name']}: batches would never fill"
            assert dep["user_config"]["batch_wait_timeout_s"] > 0
    assert cpus_at_min <= 2.0, f"{cpus_at_min} CPUs at min replicas: will not schedule on 2 cores"
    # Every deployment's added replica must be placeable too, or the autoscaler asks for
    # it and Ray leaves it pending (measured: no second replica for any bottleneck).
    assert cpus_at_max <= 2.0, f"{cpus_at_max} CPUs at max replicas: a scale-up would stay pending on 2 cores"


def test_every_deployment_refuses_overload_and_survives_faults():
    """Issue 13's settings (rehearsed in tests/faults/): every queue bounded, refusals
    with Retry-After, a health check that finds a hung replica, a graceful shutdown that
    lets requests finish; a pipeline's first model refuses before the models after it."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(SERVE_CONFIG)  # every option is one Serve knows
    queue = {}
    for _, dep in deployments():
        name = dep["name"]
        queue[name] = dep["max_queued_requests"]
        assert 0 < queue[name] <= dep["max_ongoing_requests"] * 2, name
        assert dep["backpressure_config"]["retry_after_s"] >= 1, name
        assert dep["health_check_period_s"] < dep["health_check_timeout_s"] <= 30, name
        assert dep["graceful_shutdown_timeout_s"] >= 10, name
        # a router past a full-queue burst must not keep Serve's 0.5 s backoff (see the yaml)
        assert dep["request_router_config"]["max_backoff_s"] <= 0.1, name
    assert all(
        queue[first] < queue[later]
        for first in ("LBPDetector", "RetinaFace")
        for later in ("SegFormerParser", "FaceMesh", "ArcFace", "TDDFA", "MeshRenderer")
    )


def test_deployment_names_are_ingress_or_model_class_names():
    from ray import serve

    from serve_app.config.model_tier import MODEL_APP, MODELS

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
    from serve_app.config.model_tier import MODEL_APP, serve_config_models

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


@functools.cache
def crd_validator(name: str):
    """A validator for the CRD's v1 schema, built once (checking the large schema
    itself is the slow part of jsonschema.validate)."""
    crd = yaml.safe_load((SCHEMAS / name).read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def generator():
    """scripts/make_cluster_yaml.py, the one writer of everything generated from serve_config.yaml."""
    spec = importlib.util.spec_from_file_location("make_cluster_yaml", ROOT / "scripts" / "make_cluster_yaml.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GPU_MODELS = {"SegFormerParser", "RetinaFace", "ArcFace", "TDDFA", "MeshRenderer"}
CLUSTERS = {"cluster.yaml": "serve_config.yaml", "cluster.gpu.yaml": "serve_config.gpu.yaml"}


def test_generated_files_are_up_to_date():
    for name, text in generator().outputs().items():
        assert (ROOT / name).read_text() == text, f"{name} is stale: run python scripts/make_cluster_yaml.py"


def serve_config_v2(cluster_file: str) -> dict:
    return yaml.safe_load(yaml.safe_load((ROOT / cluster_file).read_text())["spec"]["serveConfigV2"])


def without_deployments(config: dict) -> dict:
    """A serve config with its applications' deployment blocks left out."""
    return {
        **config,
        "applications": [{k: v for k, v in a.items() if k != "deployments"} for a in config["applications"]],
    }


def deployment_blocks(config: dict) -> dict[str, dict]:
    return {d["name"]: d for app in config["applications"] for d in app.get("deployments", [])}


@pytest.mark.skipif(not SCHEMAS.exists(), reason="../shared/schemas not beside the repo")
@pytest.mark.parametrize("cluster_file", sorted(CLUSTERS))
def test_cluster_yaml_is_a_valid_rayservice_serving_its_serve_config(cluster_file):
    from ray.serve.schema import ServeDeploySchema

    cluster = yaml.safe_load((ROOT / cluster_file).read_text())
    crd_validator("ray.io_rayservices.yaml").validate(cluster)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayService")
    # serveConfigV2 is its serve config with the node groups' resources: every option
    # Serve knows, the same applications, args and settings; per deployment only the
    # resources, the group's label and the ingresses' replica floor differ.
    served = serve_config_v2(cluster_file)
    ServeDeploySchema.model_validate(served)
    source = yaml.safe_load((ROOT / CLUSTERS[cluster_file]).read_text())
    assert without_deployments(served) == without_deployments(source)
    fitted = ("ray_actor_options", "autoscaling_config", "num_replicas")
    ours, theirs = deployment_blocks(served), deployment_blocks(source)
    assert set(ours) == set(theirs)
    for name, dep in ours.items():
        assert {k: v for k, v in dep.items() if k not in fitted} == {
            k: v for k, v in theirs[name].items() if k not in fitted
        }, name
    ray_cluster = cluster["spec"]["rayClusterConfig"]
    # Replicas land on workers; worker groups grow with the replicas Serve asks for.
    assert ray_cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert ray_cluster["enableInTreeAutoscaling"] is True
    # A deliberately broken copy fails, so the check above can fail too.
    cluster["spec"]["rayClusterConfig"]["headGroupSpec"] = "not an object"
    with pytest.raises(jsonschema.ValidationError):
        crd_validator("ray.io_rayservices.yaml").validate(cluster)


def worker_groups(cluster_file: str) -> dict[str, dict]:
    cluster = yaml.safe_load((ROOT / cluster_file).read_text())
    return {g["groupName"]: g for g in cluster["spec"]["rayClusterConfig"]["workerGroupSpecs"]}


def group_size(group: dict) -> tuple[float, float]:
    """(CPUs, GPUs) of one pod of a worker group: its container's limits, which Ray advertises."""
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    return float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0))


def test_gpu_cluster_schedules_gpu_replicas_on_gpu_nodes_from_zero():
    gen = generator()
    groups = worker_groups("cluster.gpu.yaml")
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == gpu["replicas"] == 0 < gpu["maxReplicas"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["image"] == gen.GPU_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"][
        "tolerations"
    ]
    (cpu_container,) = groups["cpu"]["template"]["spec"]["containers"]
    assert cpu_container["image"] == gen.IMAGE and "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    # The CPU-only variant has no GPU group: nothing in serve_config.yaml asks for one.
    assert set(worker_groups("cluster.yaml")) == {"cpu"}
    assert not [d["name"] for _, d in deployments() if d.get("ray_actor_options", {}).get("num_gpus")]


@pytest.mark.parametrize("cluster_file", sorted(CLUSTERS))
def test_replicas_ask_what_they_use_and_fit_their_groups_nodes(cluster_file):
    """Each deployment is placed on one worker group by a label_selector the group's
    nodes carry; there a replica asks for a real CPU (not serve_config.yaml's laptop
    fraction), GPU models only on a group with GPUs, and the replicas at their minimum
    fit the group's minimum pods, at their maximum its maximum pods."""
    gen = generator()
    groups = worker_groups(cluster_file)
    need = {name: [0.0, 0.0, 0.0, 0.0] for name in groups}
    for name, dep in deployment_blocks(serve_config_v2(cluster_file)).items():
        actor = dep["ray_actor_options"]
        (group_name,) = actor["label_selector"].values()
        assert actor["label_selector"] == {gen.GROUP_LABEL: group_name}, name
        group = groups[group_name]
        assert group["labels"] == {gen.GROUP_LABEL: group_name}
        cpus, gpus = group_size(group)
        assert bool(actor.get("num_gpus")) == bool(gpus), f"{name}: GPU models on the GPU group, the rest off it"
        assert actor["num_cpus"] >= (0.1 if name == "ModelTier" else 1), f"{name}: a laptop share on a {cpus}-CPU node"
        low, high = gen.replica_range(dep)
        for i, amount in enumerate((low * actor["num_cpus"], high * actor["num_cpus"])):
            need[group_name][i] += amount
        need[group_name][2] += low * actor.get("num_gpus", 0)
        need[group_name][3] += high * actor.get("num_gpus", 0)
    for name, (cpus_min, cpus_max, gpus_min, gpus_max) in need.items():
        cpus, gpus = group_size(groups[name])
        pods = groups[name]["minReplicas"]
        # N+1: with two or more pods, one pod fewer still holds every replica at its minimum.
        usable = pods - 1 if pods >= 2 else pods
        assert cpus_min <= cpus * usable or pods == 0, f"{name}: {cpus_min} CPUs at the minimum on {usable} pods"
        assert gpus_min <= gpus * usable or pods == 0, name
        assert cpus_max <= cpus * groups[name]["maxReplicas"] and gpus_max <= gpus * groups[name]["maxReplicas"], name
    # The fit is checked where the files are written, too: a node group too small fails,
    # and so does one whose second pod is needed for the minimum (no spare for a lost pod).
    with pytest.raises(SystemExit, match="group cpu"):
        gen.fit_to_groups(SERVE_CONFIG, (dataclasses.replace(gen.CPU_GROUP, cpus=4),))
    with pytest.raises(SystemExit, match="not N\\+1"):
        gen.fit_to_groups(SERVE_CONFIG, (dataclasses.replace(gen.CPU_GROUP, cpus=16),))


@pytest.mark.parametrize("cluster_file", sorted(CLUSTERS))
def test_cluster_survives_a_lost_node_and_a_lost_head(cluster_file):
    """The HA settings `facegraph cluster rehearse` plays: GCS fault tolerance on an
    external Redis (password from a secret), the serve Service on the workers' proxies
    only, every ingress and CPU model twice (Serve spreads them over nodes), workers that wait for a
    restarting head, requests = limits, the gallery's DSN from a secret, and no /dev/shm
    of our own (KubeRay mounts a memory-backed one)."""
    gen = generator()
    cluster = yaml.safe_load((ROOT / cluster_file).read_text())
    spec = cluster["spec"]
    ft = spec["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] and ft["externalStorageNamespace"]
    assert set(ft["redisPassword"]["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    assert spec["excludeHeadPodFromServeSvc"] is True
    served = serve_config_v2(cluster_file)
    groups = worker_groups(cluster_file)
    assert groups["cpu"]["minReplicas"] >= 2, "two replicas on two nodes need two CPU nodes"
    for name, dep in deployment_blocks(served).items():
        (group,) = dep["ray_actor_options"]["label_selector"].values()
        low, _ = gen.replica_range(dep)
        if name in gen.ingresses(served) or groups[group]["minReplicas"] >= 2:
            assert low >= 2, f"{name}: one replica, on one node"
            source = deployment_blocks(yaml.safe_load((ROOT / CLUSTERS[cluster_file]).read_text()))[name]
            if "autoscaling_config" in source:  # the autoscaler keeps its room to grow
                was_low, was_high = gen.replica_range(source)
                assert gen.replica_range(dep)[1] * was_low >= was_high * low, name
    ray_cluster = spec["rayClusterConfig"]
    for group in [ray_cluster["headGroupSpec"], *ray_cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]
        env = {e["name"]: e for e in container["env"]}
        assert env["FACEGRAPH_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "facegraph-postgres",
            "key": "dsn",
        }
        if group is not ray_cluster["headGroupSpec"]:
            assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]["value"]) >= 300
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert "/dev/shm" not in mounts and not pod.get("volumes"), "KubeRay mounts /dev/shm itself"


def test_gpu_serve_config_puts_the_gpu_models_on_gpus_with_larger_batches():
    gpu_config = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())
    cpu_deps = {d["name"]: d for _, d in deployments()}
    gpu_deps = {d["name"]: d for app in gpu_config["applications"] for d in app.get("deployments", [])}
    assert set(gpu_deps) == set(cpu_deps)
    gpus_at_min = 0.0
    for name, dep in gpu_deps.items():
        num_gpus = dep.get("ray_actor_options", {}).get("num_gpus", 0)
        if name not in GPU_MODELS:  # LBPDetector, FaceMesh, every ingress: as on the CPU
            assert dep == cpu_deps[name], name
            continue
        assert 0 < num_gpus <= 1, name
        gpus_at_min += num_gpus * dep["autoscaling_config"]["min_replicas"]
        batch = dep["user_config"]["max_batch_size"]
        assert batch > cpu_deps[name]["user_config"]["max_batch_size"], name
        assert dep["max_ongoing_requests"] >= batch and dep["user_config"]["batch_wait_timeout_s"] > 0, name
    assert gpus_at_min <= 1, f"{gpus_at_min} GPUs at min replicas: the GPU models do not share one GPU"
    # Apart from the deployments, the same applications, args and settings.
    assert without_deployments(gpu_config) == without_deployments(SERVE_CONFIG)


def test_serve_build_of_the_apps_is_equivalent_to_serve_config(tmp_path, monkeypatch):
    """`serve build` (Serve's own CLI) over serve_app.apps.configured's Applications.
    Equivalent means: the same applications in the same order, each built by the
    builder serve_config.yaml names with its args, holding exactly the deployments
    serve_config.yaml configures for it. `serve build` cannot know names and route
    prefixes (it writes app1.. and /app1..) nor our options (it writes the code's
    defaults); given serve_config.yaml's names, prefixes and deployment options, the
    result is serve_config.yaml's applications."""
    from click.testing import CliRunner
    from ray.serve.schema import ServeDeploySchema
    from ray.serve.scripts import build

    from serve_app.apps import configured
    from serve_app.config.settings import settings

    monkeypatch.setenv("FACEGRAPH_ALLOW_STAND_INS", "1")  # production weights are not on every machine
    settings.cache_clear()  # settings are read once per process: re-read with the variable set
    wanted = SERVE_CONFIG["applications"]
    out = tmp_path / "built.yaml"
    try:
        result = CliRunner().invoke(
            build, [f"serve_app.apps.configured:{a['name']}" for a in wanted] + ["-o", str(out)]
        )
    finally:
        monkeypatch.delenv("FACEGRAPH_ALLOW_STAND_INS")
        settings.cache_clear()
    assert result.exit_code == 0, result.output + repr(result.exception)
    built = yaml.safe_load(out.read_text())["applications"]
    assert [a["import_path"] for a in built] == [f"serve_app.apps.configured:{a['name']}" for a in wanted]
    renamed = []
    for ours, theirs in zip(wanted, built):
        assert configured.applications()[ours["name"]] == (ours["import_path"], ours.get("args") or {})
        options = {d["name"]: d for d in ours["deployments"]}
        assert {d["name"] for d in theirs["deployments"]} == set(options), ours["name"]
        renamed.append(
            {
                **theirs,
                "name": ours["name"],
                "route_prefix": ours["route_prefix"],
                "deployments": [{**d, **options[d["name"]]} for d in theirs["deployments"]],
            }
        )
    ServeDeploySchema.model_validate({"applications": renamed})
    for ours, theirs in zip(wanted, renamed):
        assert (theirs["name"], theirs["route_prefix"]) == (ours["name"], ours["route_prefix"])
        assert sorted(theirs["deployments"], key=lambda d: d["name"]) == sorted(
            ours["deployments"], key=lambda d: d["name"]
        )


def dockerfile_stages() -> dict[str, str]:
    """{stage name: its text} of the Dockerfile."""
    docker = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^(?=FROM )", docker, flags=re.M)
    return {re.match(r"FROM \S+ AS (\S+)", p).group(1): p for p in parts if p.startswith("FROM ")}


def test_dockerfile_builds_slim_cpu_and_gpu_images():
    """The text promises `facegraph image build` keeps (serve_app/ops/image.py builds and
    `facegraph image smoke` runs the real image): base image as an argument, build inputs
    that never reach the runtime stages, no compiler and no dev tools in the runtime."""
    docker = (ROOT / "Dockerfile").read_text()
    stages = dockerfile_stages()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", docker, re.M)
    for name in ("builder-common", "runtime"):
        assert stages[name].startswith("FROM ${BASE_IMAGE} AS"), name
    assert stages["cpu"].startswith("FROM runtime AS") and stages["gpu"].startswith("FROM runtime AS")
    # Build inputs: empty stand-in stages, mounted by RUN steps, never copied into an image.
    for name in ("wheelhouse", "assets-mirror"):
        assert stages[name].startswith(f"FROM scratch AS {name}\n")
        assert not re.search(r"^(RUN|COPY)", stages[name], re.M)
        assert not re.search(rf"COPY --from={name}\b", docker), name
    assert "--mount=type=secret,id=site_ca" in stages["builder-cpu"]
    # The runtime: the venv and assets from the builders, no compiler, no dev requirements.
    runtime = stages["runtime"] + stages["cpu"] + stages["gpu"]
    assert "apt-get" not in runtime and "-r requirements-dev" not in docker
    assert "COPY --from=builder-cpu /app/.venv" in stages["cpu"]
    assert "COPY --from=builder-gpu /app/.venv" in stages["gpu"]
    users = re.findall(r"^USER (\S+)", runtime, re.M)
    assert users and users[-1] not in ("root", "0")
    (check,) = re.findall(r"^HEALTHCHECK (?:.*\\\n)*.*", stages["runtime"], re.M)
    assert "http://127.0.0.1:8000/healthz" in check
    # CPU torch pinned with its local version (pip fails rather than take PyPI's CUDA build).
    assert "ARG TORCH_VERSION=2.13.0+cpu" in stages["builder-cpu"]
    assert "assert not torch.version.cuda" in stages["builder-cpu"]
    assert "onnxruntime-gpu" in stages["builder-gpu"] and "CUDAExecutionProvider" in stages["builder-gpu"]
    # PyTorch3D with CUDA kernels: an optional stage, off by default (torch renderer).
    assert re.search(r"^ARG PYTORCH3D=none$", docker, re.M) and "FROM pytorch3d-${PYTORCH3D} AS" in docker
    assert "FORCE_CUDA=1" in stages["pytorch3d-cuda"] and "facebookresearch/pytorch3d" in stages["pytorch3d-cuda"]
    assert "serve_config.gpu.yaml" in stages["gpu"]
    # Exactly one OpenCV, the version scripts/setup.sh keeps, checked where it is installed.
    (opencv,) = re.findall(r"opencv-python-headless==([0-9.]+)", (ROOT / "scripts" / "setup.sh").read_text())
    assert f"ARG OPENCV_VERSION={opencv}" in docker
    for name in ("builder-cpu", "builder-gpu"):
        assert 'pip install -q --no-deps "opencv-python-headless==${OPENCV_VERSION}"' in stages[name], name
    assert "CascadeClassifier" in stages["builder-cpu"]


def test_requirements_split_runtime_from_dev_tools():
    runtime = (ROOT / "requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    for tool in ("pytest", "ruff", "playwright"):
        assert not re.search(rf"^{tool}\b", runtime, re.M) and re.search(rf"^{tool}==", dev, re.M), tool
    assert "-r requirements.txt" in dev
    assert "-r requirements-dev.txt" in (ROOT / "scripts" / "setup.sh").read_text()


def test_readme_builds_the_images_the_clusters_run():
    readme = (ROOT / "README.md").read_text()
    gen = generator()
    assert f"docker build --target cpu -t {gen.IMAGE} ." in readme
    assert f"docker build --target gpu -t {gen.GPU_IMAGE} ." in readme


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["scripts/test.sh"]
    assert "scripts/test.sh" in readme and "scripts/serve.sh" in readme


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "serve_app" / "config" / "settings.py").read_text()
    names = set(re.findall(r'_(?:str|int|float|csv)\("([A-Z0-9_]+)"', source))
    from serve_app.config.settings import Sam2Config

    names |= set(Sam2Config.env_names().values())
    # The people gallery's: its store (deployments/face_gallery/store.py) and its API key.
    from deployments.face_gallery import store
    from serve_app.web import auth

    names |= {store.DATA_DIR_ENV, store.DSN_ENV, store.DSN_FILE_ENV, auth.KEY_ENV}
    assert names and not [n for n in sorted(names) if f"`{n}`" not in readme]


def test_one_opencv_with_cascades():
    from importlib.metadata import distributions

    import cv2

    names = {d.metadata["Name"].lower() for d in distributions()}
    opencvs = sorted(n for n in names if n.startswith("opencv"))
    assert opencvs == ["opencv-python-headless"] and hasattr(cv2, "CascadeClassifier")


def test_every_way_of_serving_installs_the_http_edge(monkeypatch):
    """serve_app/web/edge.py runs in Serve's proxies only where Ray starts with the callback
    in its environment: `facegraph serve` (scripts/serve.sh), the images, both clusters'
    pods, and the tests' cluster all set it."""
    from serve_app import cli
    from serve_app.web.edge import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    for name in (PROXY_CALLBACK_ENV, "FACEGRAPH_ALLOW_STAND_INS", "RAY_AUTH_MODE"):
        # setenv first so teardown removes what `serve` sets (a bare delenv of an unset
        # variable records nothing, and the value would leak into later tests).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    ran = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: ran.append(argv))
    cli.serve(cli.parser().parse_args(["serve", "--no-fetch"]), [])
    assert ran and ran[0][1:3] == ["run", str(ROOT / "serve_config.yaml")]
    assert cli.os.environ[PROXY_CALLBACK_ENV] == PROXY_CALLBACK

    assert f"{PROXY_CALLBACK_ENV}={PROXY_CALLBACK}" in (ROOT / "Dockerfile").read_text()
    for cluster_file in sorted(ROOT.glob("cluster*.yaml")):
        cluster = yaml.safe_load(cluster_file.read_text())["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        for group in groups:
            for container in group["template"]["spec"]["containers"]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert env.get(PROXY_CALLBACK_ENV) == PROXY_CALLBACK, f"{cluster_file.name}: {container['name']}"
    assert f'"{PROXY_CALLBACK_ENV}": "{PROXY_CALLBACK}"' in (ROOT / "tests" / "conftest.py").read_text()
    module, _, attr = PROXY_CALLBACK.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
