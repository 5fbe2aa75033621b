"""The `facegraph` command (pyproject.toml [project.scripts]): one entry point for what
the repo's scripts and modules do.

    facegraph serve [--config serve_config.yaml] [--no-fetch] [serve run options]
    facegraph batch <job> --input DIR --output OUT ...     (python -m serve_app.jobs.runner)
    facegraph assets fetch|list ...                        (python -m serve_app.config.assets)
    facegraph gallery reembed ...                          (python -m serve_app.jobs.gallery)
    facegraph image base|build|smoke ...                   (python -m serve_app.ops.image)
    facegraph bench --list | facegraph bench <name> [its options]   (python -m bench)

scripts/serve.sh is `scripts/setup.sh test` and then `facegraph serve`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from serve_app.config.settings import REPO_ROOT

ROOT = REPO_ROOT


def serve(args: argparse.Namespace, rest: list[str]) -> int:
    """What scripts/serve.sh does after setup: production weights where they can be had,
    test stand-ins (with a warning) where not, then `serve run` of the config."""
    from serve_app.config import assets

    if not args.no_fetch:
        mirror = os.environ.get("FACEGRAPH_ASSETS_MIRROR")
        if assets.main(["fetch", "--set", "production", *(["--mirror", mirror] if mirror else [])]):
            print(
                "WARNING: some production assets are missing; serving their test stand-ins "
                "(random SegFormer weights: masks are not meaningful).",
                file=sys.stderr,
            )
    os.environ.setdefault("FACEGRAPH_ALLOW_STAND_INS", "1")
    # The people gallery's data dir (SQLite, the generated API key), absolute before Ray
    # starts: Ray's workers run in other folders, and every replica must find the same one.
    os.environ["FACEGRAPH_DATA_DIR"] = str(Path(os.environ.get("FACEGRAPH_DATA_DIR") or ".facegraph").resolve())
    # The HTTP edge in every Serve proxy (serve_app/web/edge.py): read by the proxy
    # processes, so it must be in the environment Ray starts with.
    from serve_app.web.edge import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    # Local single-user cluster: no token auth on the dashboard (Ray 2.60 turns it on by default).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    serve_cli = Path(sys.executable).with_name("serve")
    command = [str(serve_cli), "run", str(args.config), *rest]
    os.execv(command[0], command)  # Ctrl-C reaches `serve run` itself
    return 0  # not reached


def bench(args: argparse.Namespace, rest: list[str]) -> int:
    """`python -m bench` in the repo root, which holds the one list of benchmarks
    (bench/registry.py; bench/ is the repo's, not part of the installed package)."""
    command = [sys.executable, "-m", "bench", *(["--list"] if args.list or not args.name else [args.name, *rest])]
    if args.name:
        return subprocess.call(command, cwd=ROOT)
    listing = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(listing.stdout, end="")  # through sys.stdout, where a caller (or a test) reads it
    print(listing.stderr, end="", file=sys.stderr)
    return listing.returncode


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="facegraph", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="serve every app of a serve config on a local Ray cluster (HTTP :8000)",
        description="Fetch the production assets (stand-ins where missing), then `serve run` the "
        "config. Options this command does not know go to `serve run`.",
    )
    s.add_argument(
        "--config",
        type=Path,
        default=ROOT / "serve_config.yaml",
        help="serve config [default: %(default)s; serve_config.gpu.yaml on a GPU]",
    )
    s.add_argument("--no-fetch", action="store_true", help="skip the asset fetch (an image has them baked in)")
    for name, (_, help_text) in PASS_THROUGH.items():  # their own parsers: listed here for --help only
        sub.add_parser(name, help=help_text, add_help=False)
    b = sub.add_parser(
        "bench",
        help="run a benchmark from bench/ (facegraph bench --list)",
        description="Run `python -m bench NAME` in the repo root; options after the name go to it.",
    )
    b.add_argument("--list", action="store_true", help="list the benchmarks")
    b.add_argument("name", nargs="?", help="a benchmark, as --list names it")
    return top


# Commands that are another module's own command line: everything after the word is theirs.
PASS_THROUGH = {
    "batch": ("serve_app.jobs.runner", "offline batch jobs on Ray Data (facegraph batch --help)"),
    "assets": ("serve_app.config.assets", "fetch or list the manifest's assets (facegraph assets --help)"),
    "gallery": ("serve_app.jobs.gallery", "people gallery maintenance (facegraph gallery reembed --help)"),
    "image": (
        "serve_app.ops.image",
        "build, smoke-test or make the base of the container image (facegraph image --help)",
    ),
    "cluster": ("serve_app.ops.cluster", "rehearse the KubeRay cluster as containers (facegraph cluster rehearse)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        import importlib

        logging.basicConfig(level=logging.WARNING)  # as `python -m <module>`
        rest = argv[2:] if argv[0] == "cluster" and argv[1:2] == ["rehearse"] else argv[1:]
        return importlib.import_module(PASS_THROUGH[argv[0]][0]).main(rest)
    if len(argv) > 1 and argv[0] == "bench" and not argv[1].startswith("-"):
        # Everything after the benchmark's name is its own (its --help included).
        return bench(argparse.Namespace(list=False, name=argv[1]), argv[2:])
    args, rest = parser().parse_known_args(argv)
    if args.command == "serve":
        return serve(args, rest)
    return bench(args, rest)


if __name__ == "__main__":
    sys.exit(main())
