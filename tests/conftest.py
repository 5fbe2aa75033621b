"""Shared fixtures. Graph tests share one local Ray cluster and one Serve HTTP proxy
(on a free port of 127.0.0.1) for the whole session; each app module deploys its app
once and deletes it when done."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

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
}
os.environ.update(TEST_ENV)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def asset():
    """asset("name") -> Path, through the project's resolver (fetched by scripts/setup.sh)."""
    from serve_app.assets import resolve

    return resolve


@pytest.fixture(scope="session")
def cartoon_dir(asset) -> Path:
    return asset("test-images-cartoon")


@pytest.fixture(scope="session")
def photos_dir(asset) -> Path:
    return asset("test-images-photos")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the session: {"metrics_url": the node's Prometheus
    endpoint, the one the Ray dashboard reads}."""
    import ray

    metrics_port = free_port()
    # Logical CPUs above the 2 physical cores: replicas ask for fractions and several
    # apps may be up at once; the work itself is small.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)
    yield {"metrics_url": f"http://127.0.0.1:{metrics_port}/metrics"}
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster) -> str:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
