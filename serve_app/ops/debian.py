"""A Debian bookworm + Python 3.11 base image made from Debian's packages with
debootstrap, for sites (and this machine) with no reachable container registry:
`facegraph image base`. The Dockerfile takes it as BASE_IMAGE."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from serve_app.ops.engine import LABEL, engine_env, run, show

SUITE = "bookworm"
BASE_TAG = "localhost/facegraph-base:bookworm"
# python3.11-venv: the builder makes the venv with `python3.11 -m venv` (ensurepip); it
# depends on the virtual python3.11-distutils, which debootstrap's resolver cannot pick a
# provider for, so python3-distutils is named. ca-certificates: the image fetches https
# URLs (url_fetch) and pip verifies the index.
PACKAGES = ["python3.11", "python3.11-venv", "python3-distutils", "ca-certificates"]
# Downloaded .debs are kept here: a second `image base` needs no mirror traffic.
DEB_CACHE = Path.home() / ".cache" / "facegraph" / "debootstrap"
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]


def apt_mirror(sources: list[Path] = APT_SOURCES) -> str:
    """The Debian mirror apt uses for the main suite: the first `deb` entry (one-line or
    deb822 format) whose suites include bookworm itself (not bookworm-security)."""
    for path in sources:
        if not path.is_file() or path.suffix not in {".list", ".sources", ""}:
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
                if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[.*?\]", "", line).split()  # drop [signed-by=...] options
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise SystemExit(f"no apt source for Debian {SUITE} in {', '.join(map(str, sources))}")


def debootstrap(rootfs: Path, mirror: str) -> None:
    """A minbase bookworm tree with Python 3.11 in `rootfs` (~30 s with a near mirror)."""
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={DEB_CACHE}",
            SUITE,
            str(rootfs),
            mirror,
        ]
    )
    # apt's package lists and the .deb cache are rebuilt by any stage that installs more.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()


def import_rootfs(rootfs: Path, tag: str) -> None:
    """`tar -C rootfs -c . | podman import` with the settings a Dockerfile's FROM expects."""
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"LABEL {LABEL}",
        'CMD ["/bin/bash"]',
    ]
    command = ["podman", "import", *(a for c in changes for a in ("--change", c)), "-", tag]
    show(["tar", "-C", str(rootfs), "-c", "."])
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    run(command, stdin=tar.stdout)
    tar.stdout.close()
    if tar.wait():
        raise SystemExit(f"tar of {rootfs} failed")


def make_base(tag: str = BASE_TAG, mirror: str | None = None) -> str:
    """Build the base image and tag it; returns the tag."""
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="facegraph-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        debootstrap(rootfs, mirror)
        import_rootfs(rootfs, tag)
    print(subprocess.run(["podman", "images", tag], env=engine_env(), capture_output=True, text=True).stdout)
    return tag
