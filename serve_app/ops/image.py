"""`facegraph image base|build|smoke`: make the base image from Debian's packages, build
the CPU or GPU image from the one Dockerfile with Docker or podman, and check that an
image serves (serve_app/ops/smoke.py).

    facegraph image base  [--tag localhost/facegraph-base:bookworm] [--mirror URL]
    facegraph image build [--target cpu|gpu] [--engine podman|docker] [--base-image IMAGE]
                          [--ca-bundle FILE] [--wheelhouse DIR ...] [--assets-mirror DIR] [--tag TAG]
    facegraph image smoke [--image TAG] [--engine podman|docker] [--timeout S]

Build inputs the Dockerfile keeps out of the image: the wheelhouse and the asset mirror
(named build contexts) and the site CA bundle (a build secret). Defaults: the folders and
CA bundle this machine's pip and scripts/setup.sh use (pip's find-links and cert,
../shared/wheels, ../shared/assets), when they exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_app import __version__
from serve_app.ops import debian, engine

OFFICIAL_BASE = "python:3.11-slim-bookworm"
SHARED = engine.ROOT.parent / "shared"


def default_tag(target: str) -> str:
    """The tag cluster.yaml and cluster.gpu.yaml run."""
    return f"facegraph:{__version__}" + ("-gpu" if target == "gpu" else "")


def pip_setting(key: str) -> str | None:
    """A value of this machine's pip configuration (`pip config list`), e.g. find-links."""
    env = os.environ.get(f"PIP_{key.upper().replace('-', '_')}")
    if env:
        return env
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        name, _, value = line.partition("=")
        if name.endswith(f".{key}"):
            return value.strip().strip("'\"")
    return None


def default_wheelhouses() -> list[Path]:
    """pip's find-links folders (the CPU torch wheel here) and ../shared/wheels (PyTorch3D)."""
    found = [Path(p) for p in (pip_setting("find-links") or "").split() if not p.startswith(("http:", "https:"))]
    found.append(SHARED / "wheels")
    return [p for p in found if p.is_dir()]


def stage_wheelhouse(folders: list[Path], into: Path) -> Path | None:
    """One folder with every wheel of `folders` (hard links where the filesystem allows):
    a named build context is one directory. None when there are no wheels."""
    wheels = [w for folder in folders for w in sorted(folder.glob("*.whl"))]
    if not wheels:
        return None
    into.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        target = into / wheel.name
        try:
            os.link(wheel, target)
        except OSError:  # another filesystem
            shutil.copy2(wheel, target)
    print(f"wheelhouse: {', '.join(w.name for w in wheels)}")
    return into


def image_exists(eng: str, ref: str) -> bool:
    command = [eng, "image", "exists", ref] if eng == "podman" else [eng, "image", "inspect", ref]
    return subprocess.run(command, capture_output=True, env=engine.engine_env()).returncode == 0


def pick_base(eng: str, requested: str | None) -> str:
    """The base image: the one asked for; else the official Python image when the engine has
    it or can pull it; else (no registry, as here) the Debian base `image base` made."""
    if requested:
        return requested
    if image_exists(eng, OFFICIAL_BASE) or not image_exists(eng, debian.BASE_TAG):
        return OFFICIAL_BASE
    print(f"base image: {OFFICIAL_BASE} is not here; using {debian.BASE_TAG} (facegraph image base)")
    return debian.BASE_TAG


def image_size_bytes(eng: str, ref: str) -> int:
    return int(engine.capture([eng, "image", "inspect", "--format", "{{.Size}}", ref]))


def build_command(args: argparse.Namespace, eng: str, wheelhouse: Path | None) -> list[str]:
    """The engine's build command line for the one Dockerfile."""
    command = [eng, "build", "--target", args.target, "--tag", args.tag, "--label", engine.LABEL]
    if eng == "podman":
        # docker format keeps HEALTHCHECK (OCI images have no such field); host networking:
        # the build reaches the package index the way this host does.
        command += ["--format", "docker", "--network", "host"]
    command += ["--build-arg", f"BASE_IMAGE={args.base_image}"]
    command += ["--build-arg", f"ALLOW_STAND_INS={1 if args.allow_stand_ins else 0}"]
    if args.pytorch3d_cuda:
        command += ["--build-arg", "PYTORCH3D=cuda"]
    if wheelhouse:
        command += ["--build-context", f"wheelhouse={wheelhouse}"]
        if any(wheelhouse.glob("torch-*+cpu-*.whl")):
            command += ["--build-arg", "TORCH_INDEX_URL="]  # the wheelhouse has it: no other index
    if args.assets_mirror:
        command += ["--build-context", f"assets-mirror={args.assets_mirror.resolve()}"]
    if args.ca_bundle:
        command += ["--secret", f"id=site_ca,src={args.ca_bundle.resolve()}"]
    return [*command, "--file", str(engine.ROOT / "Dockerfile"), str(engine.ROOT)]


def build(args: argparse.Namespace) -> int:
    eng = engine.pick(args.engine)
    args.tag = args.tag or default_tag(args.target)
    args.base_image = pick_base(eng, args.base_image)
    folders = args.wheelhouse if args.wheelhouse is not None else default_wheelhouses()
    if args.assets_mirror is None and os.environ.get("FACEGRAPH_ASSETS_MIRROR"):
        args.assets_mirror = Path(os.environ["FACEGRAPH_ASSETS_MIRROR"])
    if args.assets_mirror is None and (SHARED / "assets").is_dir():
        args.assets_mirror = SHARED / "assets"
    if args.ca_bundle is None and pip_setting("cert"):
        args.ca_bundle = Path(pip_setting("cert"))
    with tempfile.TemporaryDirectory(prefix="facegraph-wheelhouse-") as tmp:
        wheelhouse = stage_wheelhouse(folders, Path(tmp) / "wheels")
        started = time.monotonic()
        env = {"DOCKER_BUILDKIT": "1"} if eng == "docker" else {}
        command = build_command(args, eng, wheelhouse)
        engine.show(command)
        subprocess.run(command, check=True, env={**engine.engine_env(), **env})
        took = time.monotonic() - started
    size = image_size_bytes(eng, args.tag)
    print(f"image build: {args.tag} ({args.target}, {eng}) in {took:.0f} s, size {size / 1e9:.2f} GB")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="facegraph image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("base", help="Debian bookworm + Python 3.11 base image from Debian's packages (debootstrap)")
    b.add_argument("--tag", default=debian.BASE_TAG, help="[default: %(default)s]")
    b.add_argument("--mirror", help="Debian mirror URL [default: the one apt uses here]")
    c = sub.add_parser("build", help="build the CPU or GPU image (Docker when a daemon answers, else podman)")
    c.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    c.add_argument("--engine", choices=["podman", "docker"], help="[default: docker if `docker info` works]")
    c.add_argument("--tag", help="[default: facegraph:VERSION, -gpu for the GPU image]")
    c.add_argument("--base-image", help=f"[default: {OFFICIAL_BASE}, else {debian.BASE_TAG} when only it is here]")
    c.add_argument("--ca-bundle", type=Path, help="CA bundle for pip in the build [default: pip's cert setting]")
    c.add_argument(
        "--wheelhouse",
        type=Path,
        action="append",
        help="folder of wheels no index serves; repeatable [default: pip's find-links, ../shared/wheels]",
    )
    c.add_argument("--assets-mirror", type=Path, help="asset mirror folder [default: ../shared/assets]")
    c.add_argument(
        "--no-stand-ins",
        dest="allow_stand_ins",
        action="store_false",
        help="fail the build unless every production asset is in (default: test stand-ins fill gaps)",
    )
    c.add_argument("--pytorch3d-cuda", action="store_true", help="gpu: build PyTorch3D with the CUDA toolkit")
    s = sub.add_parser("smoke", help="run an image, wait for healthy, one request per pipeline")
    s.add_argument("--image", help="[default: facegraph:VERSION]")
    s.add_argument("--engine", choices=["podman", "docker"])
    s.add_argument("--timeout", type=float, default=600, help="seconds to wait for healthy [default: %(default)s]")
    s.add_argument("--images-dir", type=Path, default=SHARED / "assets" / "test_images", help="test photos")
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra container environment")
    s.add_argument("--keep", action="store_true", help="leave the container running (its name is printed)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "base":
        debian.make_base(args.tag, args.mirror)
        return 0
    if args.command == "build":
        return build(args)
    from serve_app.ops import smoke

    return smoke.run(args)


if __name__ == "__main__":
    sys.exit(main())
