"""Shared fixtures. Graph tests share one local Ray cluster, one Serve HTTP proxy (on a
free port of 127.0.0.1) and one model tier (the `models` application with the test
weights) for the whole session; each app module deploys its thin ingress app once and
deletes it when done."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import free_port

# Settings read by every process, Ray workers included: set before Ray starts so the
# workers inherit them. Small limits let graph tests build oversize inputs cheaply.
TEST_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "MAX_IMAGE_BYTES": str(3_000_000),
    "MAX_IMAGE_PIXELS": str(12_000_000),
    "RAY_SERVE_LOG_TO_STDERR": "0",
    # /extract-faces graph tests fetch image_url inputs from a loopback server they start.
    "URL_FETCH_ALLOWLIST": "127.0.0.1",
    # One CORS origin, so the tests see it allowed and every other origin refused.
    "ALLOWED_ORIGINS": "https://app.example",
    # The HTTP edge (serve_app/web/edge.py) in every Serve proxy, as scripts/serve.sh installs it.
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.web.edge:proxy_middlewares",
    # Small edge limits, so tests/apps/test_edges.py reaches them cheaply: a 30 MiB body
    # is over the request limit, a trickling body times out in seconds, a few large
    # images are over one request's pixel budget.
    "MAX_REQUEST_BYTES": str(16 * 1024 * 1024),
    "BODY_TIMEOUT": "5",
    "MAX_REQUEST_PIXELS": str(20_000_000),
    # The gallery's SQLite store and the generated API key (tests/apps/test_people.py
    # reads it there), one throwaway folder per test session.
    "FACEGRAPH_DATA_DIR": tempfile.mkdtemp(prefix="facegraph-test-data-"),
}
os.environ.update(TEST_ENV)
atexit.register(shutil.rmtree, TEST_ENV["FACEGRAPH_DATA_DIR"], True)


# The model tier the graph tests share: test weights where the production ones are
# not here, small fractions of a CPU each.
TEST_MODELS = {
    "LBPDetector": {"asset": "lbp-detector-cascade"},
    "SegFormerParser": {"asset": "segformer-parser-tiny"},
    "FaceMesh": {"config": {"max_num_faces": 5}},
    "RetinaFace": {"asset": "retinaface-det-500m"},
    "ArcFace": {"asset": "arcface-mobilefacenet-128d"},
    "TDDFA": {"asset": "tddfa-mb05-120"},
    "MeshRenderer": {"config": {"backend": "auto"}},
    "FaceGallery": {"config": {"store": "sqlite"}},
}


@pytest.fixture(scope="session")
def asset():
    """asset("name") -> Path, through the project's resolver (fetched by scripts/setup.sh)."""
    from serve_app.config.assets import resolve

    return resolve


@pytest.fixture(scope="session")
def cartoon_dir(asset) -> Path:
    return asset("test-images-cartoon")


@pytest.fixture(scope="session")
def photos_dir(asset) -> Path:
    return asset("test-images-photos")


@pytest.fixture(scope="session")
def load_photo(photos_dir):
    """load_photo("name.jpg") -> uint8 RGB of a shared photo, decoded once per session."""
    from serve_app.imaging import decode_image

    cache = {}

    def load(name: str):
        if name not in cache:
            cache[name] = decode_image((photos_dir / name).read_bytes())
        return cache[name]

    return load


@pytest.fixture
def settings_env(monkeypatch):
    """settings_env(NAME=value, ...): set environment variables for this test and drop
    the cached settings() (read once per process), so the app sees them; both undone
    after the test."""
    from serve_app.config.settings import settings

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        settings.cache_clear()

    yield set_env
    monkeypatch.undo()
    settings.cache_clear()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the session: {"metrics_url": the node's Prometheus
    endpoint, the one the Ray dashboard reads}."""
    import ray

    metrics_port = free_port()
    # Logical CPUs above the 2 physical cores: replicas ask for fractions and several
    # apps may be up at once; the work itself is small.
    ray.init(
        address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port
    )
    yield {"metrics_url": f"http://127.0.0.1:{metrics_port}/metrics"}
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster) -> str:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def model_tier(serve_url) -> dict:
    """The `models` application (every model deployment, shared by the apps under
    test), up for the whole session. -> {"healthz": its URL}"""
    from ray import serve

    from serve_app.apps.models import ModelsArgs, build
    from serve_app.config.model_tier import MODEL_APP

    serve.run(build(ModelsArgs(models=TEST_MODELS)), name=MODEL_APP, route_prefix="/healthz")
    for name in TEST_MODELS:
        handle = serve.get_deployment_handle(name, MODEL_APP)
        handle.describe.remote().result(timeout_s=120)
    yield {"healthz": f"{serve_url}/healthz"}
    serve.delete(MODEL_APP)
