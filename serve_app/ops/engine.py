"""The container engine the image commands drive: Docker when a daemon answers, else
podman (as root, with deploy/podman/containers.conf). Every engine call goes through
`run` or `capture` so the command line is printed before it runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
# Every image and container these commands create carries this label, so they can be
# listed and removed without touching anyone else's (`podman ps -a --filter label=...`).
LABEL = os.environ.get("FACEGRAPH_CONTAINER_LABEL", "facegraph=helper")


def engine_env() -> dict[str, str]:
    """The environment for engine commands: podman reads its runtime (runc) and ulimits
    from our containers.conf unless the caller already chose one."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def docker_answers() -> bool:
    """True when a Docker daemon answers (`docker info` succeeds), not merely a client."""
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def pick(requested: str | None) -> str:
    """The engine to use: the one asked for, else docker with a daemon, else podman."""
    if requested:
        return requested
    if docker_answers():
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise SystemExit("no container engine: no Docker daemon answers and podman is not installed")


def show(command: list[str]) -> None:
    print("+ " + shlex.join(command), flush=True)


def run(command: list[str], **kwargs) -> None:
    """Run an engine (or other) command, echoed, failing loudly."""
    show(command)
    subprocess.run(command, check=True, env=engine_env(), **kwargs)


def capture(command: list[str], check: bool = True) -> str:
    """Run a command and return its stdout (stripped); not echoed: used for queries."""
    done = subprocess.run(command, check=check, env=engine_env(), capture_output=True, text=True)
    return done.stdout.strip()


def succeeds(command: list[str]) -> bool:
    """Whether a command exits 0 (output discarded): probes such as a health check."""
    return subprocess.run(command, capture_output=True, env=engine_env()).returncode == 0
