"""Which store a gallery opens: SQLite, PostgreSQL, or whichever the environment
configures (`auto`). Its own module so that the store protocol (store.py) and the
backends that implement it (sqlite.py, postgres.py) import in one direction only."""

from __future__ import annotations

from deployments.face_gallery.errors import StoreUnavailable
from deployments.face_gallery.store import DSN_ENV, DSN_FILE_ENV, SqlStore, data_dir, database_url


def open_store(
    kind: str = "auto",
    *,
    data_dir_path: str | None = None,
    pg_schema: str = "facegraph",
    sqlite_synchronous: str = "FULL",
    busy_timeout_s: float = 5.0,
    connect_timeout_s: float = 5.0,
) -> SqlStore:
    """`kind`: sqlite, postgresql, or auto (PostgreSQL when a DSN is configured, else SQLite)."""
    if kind not in ("auto", "sqlite", "postgresql"):
        raise ValueError(f"gallery store {kind!r}: expected auto, sqlite or postgresql")
    url = database_url() if kind in ("auto", "postgresql") else None
    if kind == "postgresql" or (kind == "auto" and url):
        if not url:
            raise StoreUnavailable(f"the postgresql store needs {DSN_ENV} or {DSN_FILE_ENV}")
        from deployments.face_gallery.postgres import PostgresStore

        return PostgresStore(url, schema=pg_schema, lock_timeout_s=busy_timeout_s, connect_timeout_s=connect_timeout_s)
    from deployments.face_gallery.sqlite import SqliteStore

    return SqliteStore(data_dir(data_dir_path), synchronous=sqlite_synchronous, busy_timeout_s=busy_timeout_s)
