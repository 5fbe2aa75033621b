"""`facegraph image smoke`: run an image the way an operator would (non-root, read-only
root filesystem with a tmpfs for scratch, host networking, --init, a big /dev/shm), wait
until its own HEALTHCHECK passes, send one real request to every pipeline of the serve
config, and print start-up time and image size. The last line is

    image smoke: ok, healthy after S s, N of N pipelines answered, size X GB

The container serves on a free loopback port: the serve config is copied with that port
and mounted read-only. Everything it starts carries the ops label and is removed after.
podman schedules HEALTHCHECKs with systemd timers and logs an error where there is no
systemd (as here); the check itself is run here with `podman healthcheck run`.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from serve_app import __version__
from serve_app.ops import engine

CONFIG_IN_CONTAINER = "/config/serve_config.yaml"
DATA_DIR = "/data"  # the image's FACEGRAPH_DATA_DIR
REQUEST_TIMEOUT_S = 180  # a first request also warms its models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_config(source: Path, port: int, into: Path) -> Path:
    """The serve config with Serve's HTTP proxy on `port`, loopback only."""
    config = yaml.safe_load(source.read_text())
    config.setdefault("http_options", {}).update({"host": "127.0.0.1", "port": port})
    into.write_text(yaml.safe_dump(config, sort_keys=False))
    into.chmod(0o644)  # read by the container's non-root user
    return into


def run_command(eng: str, image: str, name: str, config: Path, env: list[str]) -> list[str]:
    """What Kubernetes does to a pod, as run options: read-only root, tmpfs scratch, and a
    volume for the people gallery (a folder beside the config: a tmpfs there is root's)."""
    data = config.parent / "data"
    command = [eng, "run", "--detach", "--name", name, "--label", engine.LABEL, "--init"]
    command += ["--network", "host", "--shm-size", "2g"]
    command += ["--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=4g"]
    command += ["--volume", f"{data}:{DATA_DIR}"]
    command += ["--volume", f"{config}:{CONFIG_IN_CONTAINER}:ro"]
    # The image's HEALTHCHECK asks :8000 unless told where this config serves.
    port = yaml.safe_load(config.read_text())["http_options"]["port"]
    command += ["--env", f"FACEGRAPH_HEALTH_URL=http://127.0.0.1:{port}/healthz"]
    command += ["--env", f"FACEGRAPH_API_KEY={API_KEY}"]
    for item in env:
        command += ["--env", item]
    return [*command, image, "facegraph", "serve", "--no-fetch", "--config", CONFIG_IN_CONTAINER]


def running(eng: str, name: str) -> bool:
    return engine.capture([eng, "inspect", "--format", "{{.State.Running}}", name], check=False) == "true"


def healthy(eng: str, name: str) -> bool:
    """The image's own HEALTHCHECK. podman runs it on demand (its timer needs systemd);
    Docker runs it on its interval and reports the result."""
    if eng == "podman":
        return engine.succeeds([eng, "healthcheck", "run", name])
    return engine.capture([eng, "inspect", "--format", "{{.State.Health.Status}}", name], check=False) == "healthy"


def failed_applications(base: str) -> list[str]:
    """Applications Serve gave up on (DEPLOY_FAILED): no point waiting for healthy then."""
    try:
        health = get_json(base + "/healthz", timeout=5)
    except (urllib.error.URLError, OSError, ValueError):
        return []  # not serving yet
    return [app for app, status in health.get("applications", {}).items() if status == "DEPLOY_FAILED"]


def wait_healthy(eng: str, name: str, base: str, timeout: float) -> float:
    """Seconds from now until the container is healthy; raises if it exits, an application
    fails to deploy, or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not running(eng, name):
            raise RuntimeError("the container exited before it was healthy")
        if healthy(eng, name):
            return time.monotonic() - started
        if failed := failed_applications(base):
            raise RuntimeError(f"application(s) failed to deploy: {', '.join(failed)}")
        time.sleep(3)
    raise RuntimeError(f"not healthy after {timeout:.0f} s")


def get_json(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


# The people gallery's Bearer key: given to the container (FACEGRAPH_API_KEY), as a secret
# would be on KubeRay, so the smoke can call /v1/people.
API_KEY = secrets.token_urlsafe(24)


def post(url: str, body: bytes, content_type: str, key: str | None = None) -> dict:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
        return json.load(resp)


def multipart(fields: dict[str, str], image: Path) -> tuple[bytes, str]:
    """A multipart/form-data body with `image` as the `image` file field."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + image.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def form_request(image: str, outputs: str) -> Callable[[str, Path], dict]:
    def send(url: str, images: Path) -> dict:
        return post(url, *multipart({"outputs": outputs}, images / image))

    return send


def extract_faces(url: str, images: Path) -> dict:
    photos = [images / "photos" / f"lfw_Rob_Lowe_000{i}.jpg" for i in (1, 2)]
    body = {"images": [{"image_base64": base64.b64encode(p.read_bytes()).decode()} for p in photos]}
    return post(url.rstrip("/") + "/extract-faces", json.dumps(body).encode(), "application/json")


def people(url: str, images: Path) -> dict:
    """Enrol one photo of a person, then search with another photo of them: the answer
    says whether the search found the person just enrolled."""
    photo = [base64.b64encode((images / "photos" / f"lfw_Rob_Lowe_000{i}.jpg").read_bytes()).decode() for i in (1, 2)]
    root = url.rstrip("/")
    body = {"name": "image smoke", "images": [{"image_base64": photo[0]}]}
    enrolled = post(root + "/", json.dumps(body).encode(), "application/json", API_KEY)
    query = json.dumps({"images": [{"image_base64": photo[1]}]}).encode()
    found = post(root + "/search", query, "application/json", API_KEY)
    matches = [m["person_id"] for face in found["faces"] for m in face["matches"]]
    return {"faces": found["faces"], "found_enrolled": enrolled["person_id"] in matches}


# One real request per pipeline (application name in the serve config): how to send it,
# and what an answer that did the work looks like (faces found in a photo that has them).
PIPELINES: dict[str, tuple[Callable[[str, Path], dict], Callable[[dict], bool]]] = {
    "face_extract": (extract_faces, lambda r: r["total_faces_detected"] >= 2),
    "face_mask": (form_request("cartoon/kanosawa_anime_5faces.png", "mask"), lambda r: len(r["boxes"]) >= 1),
    "face_mask_sam2": (form_request("photos/3ddfa_trump_hillary.jpg", "mask"), lambda r: len(r["faces"]) >= 2),
    "mask_augment": (form_request("photos/3ddfa_trump_hillary.jpg", "crops"), lambda r: len(r["faces"]) >= 2),
    "anonymize": (form_request("photos/3ddfa_trump_hillary.jpg", "anonymized"), lambda r: len(r["faces"]) >= 2),
    "people": (people, lambda r: r["found_enrolled"]),
}


def ask_pipelines(config: dict, base: str, images: Path) -> tuple[int, int]:
    """(answered, pipelines): every application but the model tier gets one request."""
    apps = [a for a in config["applications"] if a["name"] != "models"]
    answered = 0
    for app in apps:
        name, prefix = app["name"], app.get("route_prefix", "/")
        url = base + (prefix.rstrip("/") or "/")
        if name not in PIPELINES:
            print(f"  {name}: no smoke request for this application")
            continue
        send, good = PIPELINES[name]
        started = time.monotonic()
        try:
            answer = send(url, images)
            ok = good(answer)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            answer, ok = {"error": repr(exc)}, False
        took = time.monotonic() - started
        print(f"  {name}: {'ok' if ok else 'FAILED'} in {took:.1f} s {summary(answer)}")
        answered += ok
    return answered, len(apps)


def summary(answer: dict) -> str:
    keys = ("total_faces_detected", "unique_faces", "boxes", "faces", "found_enrolled", "error", "message")
    short = {k: (len(v) if isinstance(v, list) else v) for k, v in answer.items() if k in keys}
    return json.dumps(short)


def container_checks(eng: str, name: str) -> None:
    """Runs as non-root; the root filesystem refuses writes; /tmp takes them."""
    uid = engine.capture([eng, "exec", name, "id", "-u"], check=False)
    root_writable = engine.succeeds([eng, "exec", name, "touch", "/app/.probe"])
    tmp_writable = engine.succeeds([eng, "exec", name, "touch", "/tmp/.probe"])
    print(f"  user id {uid}; root fs writable: {root_writable}; /tmp writable: {tmp_writable}")
    if uid in ("", "0") or root_writable or not tmp_writable:
        raise RuntimeError("the container runs as root or its root filesystem is writable")


def show_health(base: str) -> None:
    health = get_json(base + "/healthz")
    print(f"  /healthz: {health['status']}, applications {health['applications']}")
    for model, about in health["models"].items():
        print(f"    {model}: {about.get('weights')} on {about.get('device')}")


def show_logs(eng: str, name: str) -> None:
    """The container's last lines, errors first: what an operator reads when it fails."""
    done = subprocess.run([eng, "logs", "--tail", "300", name], capture_output=True, text=True, env=engine.engine_env())
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if "Error" in line or "error" in line][-15:]
    print("\n".join(["  container errors:", *errors, "  container log tail:", *lines[-15:]]))


def run(args: argparse.Namespace) -> int:
    eng = engine.pick(args.engine)
    image = args.image or f"facegraph:{__version__}"
    size_gb = int(engine.capture([eng, "image", "inspect", "--format", "{{.Size}}", image])) / 1e9
    port = free_port()
    name = f"facegraph-smoke-{port}"
    source = engine.ROOT / "serve_config.yaml"
    with tempfile.TemporaryDirectory(prefix="facegraph-smoke-") as tmp:
        Path(tmp).chmod(0o755)
        config_file = smoke_config(source, port, Path(tmp) / "serve_config.yaml")
        (Path(tmp) / "data").mkdir(mode=0o777)
        (Path(tmp) / "data").chmod(0o777)  # written by the image's user, whatever its uid
        engine.run(run_command(eng, image, name, config_file, args.env), stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            took = wait_healthy(eng, name, base, args.timeout)
            print(f"  healthy after {took:.0f} s (the image's HEALTHCHECK)")
            show_health(base)
            container_checks(eng, name)
            answered, total = ask_pipelines(yaml.safe_load(config_file.read_text()), base, args.images_dir)
        except RuntimeError as exc:
            show_logs(eng, name)
            print(f"image smoke: FAILED, {exc}, size {size_gb:.2f} GB")
            return 1
        finally:
            if not args.keep:
                engine.succeeds([eng, "stop", "--time", "30", name])
                engine.succeeds([eng, "rm", "--force", name])
    status = "ok" if answered == total else "FAILED"
    counts = f"{answered} of {total} pipelines answered"
    print(f"image smoke: {status}, healthy after {took:.0f} s, {counts}, size {size_gb:.2f} GB")
    return 0 if status == "ok" else 1
