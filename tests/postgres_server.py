"""A throwaway PostgreSQL server for the gallery's tests and benchmark: Debian's
`postgresql` binaries, a fresh cluster in a temporary folder, listening on a free port
of 127.0.0.1 only, trust authentication (nothing else can reach it), stopped by its
pid's cluster and removed afterwards.

PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user
the Debian package creates, and its commands run through `runuser`.

    python -m tests.postgres_server start DIR   # prints the DSN; DIR must not exist yet
    python -m tests.postgres_server stop DIR
(scripts/start_test_postgres.sh wraps these for CI.)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port

SERVER_USER = "postgres"  # the account Debian's package creates; used when we are root
DB_USER = "facegraph"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here (not installed, no account to run it as)."""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (apt-get install postgresql: scripts/start_test_postgres.sh)"
        )
    return Path(versions[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SERVER_USER!r} account to run PostgreSQL as"
        ) from None
    return ["runuser", "-u", SERVER_USER, "--", *argv]


class ThrowawayPostgres:
    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="facegraph-pg-"))
        self.data = self.dir / "data"
        self.port: int | None = None
        self.bin = bin_dir()

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        done = subprocess.run(
            _as_server_user([str(self.bin / argv[0]), *argv[1:]]), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            log = (self.dir / "server.log").read_text()[-2000:] if (self.dir / "server.log").exists() else ""
            raise PostgresUnavailable(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-1000:]} {log}")

    def start(self) -> ThrowawayPostgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", DB_USER, "-E", "UTF8", "--no-sync")
        self.port = free_port()
        self.restart_server()
        (self.dir / "dsn").write_text(self.dsn)
        return self

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop_server(self) -> None:
        """Stop the server, keep its files (a later `restart_server` serves the same data)."""
        pid = self.pid()
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            if pid is not None:  # ours, by its pid
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)

    def restart_server(self) -> None:
        """Start the server on its port (again): loopback only, its socket in our folder."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir}"
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if self.pid() is not None:
            self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if argv[0] == "start":
        if directory.exists():
            print(f"{directory} exists: give a new folder", file=sys.stderr)
            return 2
        try:
            server = ThrowawayPostgres(directory).start()
        except PostgresUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(server.dsn)
        return 0
    server = ThrowawayPostgres(directory)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
