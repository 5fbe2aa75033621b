"""The cluster store: PostgreSQL through psycopg 3, in a schema of its own
(`facegraph` by default) so the gallery's tables never meet an application's.

The connection is autocommit with explicit transactions: nothing is left "idle in
transaction" between calls. Reads of several statements are one REPEATABLE READ,
READ ONLY snapshot (the sequence number and the faces read with it agree); a
one-statement read (the sequence check before every search) is one round trip. A
writer that waits longer than `lock_timeout_s` for another gives up, so a stuck
writer becomes a 503, not a hang.
"""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from deployments.face_gallery.store import SCHEMA_VERSION, SINGLE, WRITE, SqlStore

SCHEMA_LOCK_KEY = 0x46474C59  # advisory lock: replicas starting together create the tables once

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS people (id TEXT PRIMARY KEY, name TEXT, metadata JSONB NOT NULL, "
    "created_at_us BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS people_by_creation ON people (created_at_us, id)",
    "CREATE TABLE IF NOT EXISTS faces (id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people (id), "
    "embedding BYTEA NOT NULL, weights TEXT NOT NULL, crop BYTEA, created_at_us BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS faces_by_person ON faces (person_id)",
    "CREATE TABLE IF NOT EXISTS audit_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "at_us BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, person_id TEXT NOT NULL, "
    "faces INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS changes (person_id TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_by_seq ON changes (seq)",
    "CREATE TABLE IF NOT EXISTS gallery_seq (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS gallery_meta (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "schema_version INTEGER NOT NULL, weights TEXT, dim INTEGER)",
    "INSERT INTO gallery_seq (id, value) VALUES (1, 0) ON CONFLICT DO NOTHING",
    f"INSERT INTO gallery_meta (id, schema_version) VALUES (1, {SCHEMA_VERSION}) ON CONFLICT DO NOTHING",
)


class PostgresStore(SqlStore):
    backend = "postgresql"
    placeholder = "%s"
    # Connection refused or lost, server shutting down, a lock or statement timeout.
    unavailable = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(
        self, url: str, schema: str = "facegraph", lock_timeout_s: float = 5.0, connect_timeout_s: float = 5.0
    ):
        super().__init__()
        self._url = url  # holds the password: never logged, never in an error message
        self.schema = schema
        self.lock_timeout_s = lock_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._run(lambda tx: None, SINGLE)  # create the schema now: a bad DSN fails the replica's start

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            application_name="facegraph-gallery",
        )
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(self.lock_timeout_s * 1000)}ms")))
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.schema)))
                for statement in SCHEMA:
                    conn.execute(statement)
            # SET inside the transaction lasts past its commit (it is not SET LOCAL).
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: psycopg.Connection, mode: str):
        if mode == SINGLE:  # autocommit: the statement is its own transaction, one round trip
            yield
        elif mode == WRITE:
            with conn.transaction():
                yield
        else:  # one statement opens the snapshot (conn.transaction() would need a second)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _json_param(self, value: dict) -> Jsonb:
        return Jsonb(value)

    def _json_result(self, value) -> dict:
        return value  # psycopg turns jsonb into Python objects

    def drop_schema(self) -> None:
        """Remove every table of this gallery (tests; `facegraph gallery` tooling)."""
        with self._lock:
            conn = self._connection()
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
            self._drop_connection()
