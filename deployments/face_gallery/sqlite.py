"""The embedded store: one SQLite file in WAL mode in the data directory.

WAL lets every gallery replica on the machine read while one writes. `synchronous`
FULL (the default) syncs each commit to disk: an acknowledged enrolment survives a
SIGKILL, a server restart and a power cut (NORMAL keeps the first two and is faster).
Files are created owner-only (0600, directory 0700): they hold biometric data.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from deployments.face_gallery.store import SCHEMA_VERSION, SINGLE, WRITE, SqlStore

DB_NAME = "gallery.sqlite3"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS people (id TEXT PRIMARY KEY, name TEXT, metadata TEXT NOT NULL, "
    "created_at_us INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS people_by_creation ON people (created_at_us, id)",
    "CREATE TABLE IF NOT EXISTS faces (id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people (id), "
    "embedding BLOB NOT NULL, weights TEXT NOT NULL, crop BLOB, created_at_us INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS faces_by_person ON faces (person_id)",
    "CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at_us INTEGER NOT NULL, "
    "actor TEXT NOT NULL, action TEXT NOT NULL, person_id TEXT NOT NULL, faces INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS changes (person_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_by_seq ON changes (seq)",
    "CREATE TABLE IF NOT EXISTS gallery_seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gallery_meta (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "schema_version INTEGER NOT NULL, weights TEXT, dim INTEGER)",
    "INSERT INTO gallery_seq (id, value) VALUES (1, 0) ON CONFLICT DO NOTHING",
    f"INSERT INTO gallery_meta (id, schema_version) VALUES (1, {SCHEMA_VERSION}) ON CONFLICT DO NOTHING",
)


class SqliteStore(SqlStore):
    backend = "sqlite"
    unavailable = (sqlite3.OperationalError,)  # locked past the timeout, I/O error, cannot open

    def __init__(self, directory: str, synchronous: str = "FULL", busy_timeout_s: float = 5.0):
        super().__init__()
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"sqlite synchronous {synchronous!r}: expected one of {', '.join(SYNCHRONOUS)}")
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.synchronous = synchronous.upper()
        self.busy_timeout_s = busy_timeout_s
        self._run(lambda tx: None, SINGLE)  # create the schema now: a bad data dir fails the replica's start

    def _connect(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created owner-only before SQLite opens it; SQLite gives its -wal and -shm
            # files the database file's permissions.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create {self.path}: {exc.strerror}") from None
        # isolation_level=None: no implicit transactions; every one is explicit (_transaction).
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed: a deleted face leaves no bytes
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")  # one replica creates the schema; the others wait, then find it
            try:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, mode: str):
        if mode == SINGLE:  # autocommit: the statement is its own transaction
            yield
            return
        # IMMEDIATE takes the write lock up front: two writers never both read and then
        # deadlock upgrading. A deferred BEGIN makes the reads one snapshot (WAL).
        conn.execute("BEGIN IMMEDIATE" if mode == WRITE else "BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _json_param(self, value: dict) -> str:
        return json.dumps(value, separators=(",", ":"))

    def _json_result(self, value: str) -> dict:
        return json.loads(value)

    def _after_delete(self, conn: sqlite3.Connection) -> None:
        # The zeroed pages are in the WAL; the deleted bytes may still be in the main
        # file and in older WAL frames until a checkpoint copies the pages back and the
        # WAL is truncated. A reader holding an old snapshot can keep part of the WAL
        # alive; the next checkpoint (SQLite runs them itself) completes the job. It
        # does not wait for them: a TRUNCATE checkpoint that waited would hold up every
        # other writer for as long.
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
