"""Where the gallery's people live: one storage protocol, two backends.

* SQLite in WAL mode in a data directory (`FACEGRAPH_DATA_DIR`, default `.facegraph/`
  where the server starts): no server to run; every replica on one machine shares it.
* PostgreSQL (psycopg 3) for clusters; the DSN comes from `FACEGRAPH_DATABASE_URL` or
  from the file `FACEGRAPH_DATABASE_URL_FILE` names (a mounted secret), never from a
  config file.

Both run the same SQL (`SqlStore`); a backend supplies only its connection, its table
definitions and the exceptions that mean "the store is down". The tables:

  people       id, name, metadata (JSON), created_at_us
  faces        id, person_id, embedding (float32 bytes, unit length), weights, crop, created_at_us
  audit_log    who, when, which action on which person id, how many faces; never a
               name, an embedding or an image
  changes      person id -> the sequence number of the last write that touched them
  gallery_seq  the sequence itself: one row, bumped by every write
  gallery_meta the recogniser weights (and dimension) the stored embeddings come from

Every write is one transaction that first bumps `gallery_seq`. Taking that row's lock
first serialises writers, so sequence numbers commit in order: a replica that has read
the changes up to N never later finds a change below N appear (which is what a plain
SERIAL column would allow, its values being handed out before commit). A replica keeps
its in-memory index in step by reading the sequence before each search and, when it
moved, the faces of every person changed since.

Deletion is hard: the person's faces (embeddings and crops) and row are deleted in one
transaction; SQLite additionally runs with secure_delete (freed pages zeroed) and
checkpoints its WAL after a delete, so the bytes leave the files too.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from deployments.face_gallery.errors import InvalidRequest, PersonNotFound, StoreUnavailable, WeightsMismatch

T = TypeVar("T")
SCHEMA_VERSION = 1
# How a piece of store work runs (SqlStore._run):
WRITE = "write"  # one transaction holding the write lock
SNAPSHOT = "snapshot"  # several reads in one consistent snapshot
SINGLE = "single"  # one statement, its own transaction: one round trip
DATA_DIR_ENV = "FACEGRAPH_DATA_DIR"
DEFAULT_DATA_DIR = ".facegraph"
DSN_ENV = "FACEGRAPH_DATABASE_URL"
DSN_FILE_ENV = "FACEGRAPH_DATABASE_URL_FILE"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class NewFace:
    embedding: bytes  # float32 little-endian, unit length
    crop: bytes | None = None  # the aligned face as an image file, kept only on request


@dataclass(frozen=True)
class NewPerson:
    name: str | None
    metadata: dict
    faces: Sequence[NewFace]
    actor: str  # who asked, for the audit log


@dataclass(frozen=True)
class PersonRecord:
    person_id: str
    name: str | None
    metadata: dict
    faces: int
    created_at_us: int

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_us / 1e6, UTC)


@dataclass(frozen=True)
class AuditEntry:
    at_us: int
    actor: str
    action: str  # enrol | add_faces | delete | reembed
    person_id: str
    faces: int  # faces added or erased


@dataclass
class FaceRows:
    """Faces read from the store, as of sequence number `seq`: `rows` are (person id,
    name, embedding bytes) of the people present, `gone` the ids of people who are not
    (deleted since the caller last looked)."""

    seq: int
    weights: str | None
    dim: int | None
    rows: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


class GalleryStore(Protocol):
    backend: str

    def current_seq(self) -> int: ...
    def load(self) -> FaceRows:
        def work(tx: Tx) -> FaceRows:
            seq, weights, dim = self._meta(tx)
            # Two plain table scans, joined and grouped here: a JOIN ordered by person
            # walks the faces through their person index, one random lookup per face
            # (SQLite: 1.6 s for 20,000 faces, against 0.1 s for the scans).
            names = dict(tx.all("SELECT id, name FROM people"))
            rows = [(r[0], names[r[0]], bytes(r[1])) for r in tx.all("SELECT person_id, embedding FROM faces")]
            rows.sort(key=lambda r: r[0])
            return FaceRows(seq, weights, dim, rows)

        return self._run(work, SNAPSHOT)

    def changes_since(self, seq: int) -> FaceRows: ...
    def create_person(
        self, name: str | None, metadata: dict, faces: Sequence[NewFace], weights: str, dim: int, actor: str
    ) -> PersonRecord: ...
    def create_people(self, people: Sequence[NewPerson], weights: str, dim: int) -> list[PersonRecord]: ...
    def add_faces(
        self, person_id: str, faces: Sequence[NewFace], weights: str, dim: int, actor: str
    ) -> PersonRecord: ...
    def get_person(self, person_id: str) -> PersonRecord | None: ...
    def list_people(self, limit: int, after: tuple[int, str] | None) -> list[PersonRecord]: ...
    def delete_person(self, person_id: str, actor: str) -> int: ...
    def audit(self, person_id: str | None = None) -> list[AuditEntry]: ...
    def crops(self, person_id: str) -> list[bytes]: ...
    def face_crops(self) -> list[tuple[str, str, bytes | None]]: ...
    def reembed(self, embeddings: dict[str, bytes], weights: str, dim: int, actor: str) -> int: ...
    def close(self) -> None: ...


class Tx:
    """One transaction's statements, written with `?` placeholders for every backend."""

    def __init__(self, conn: Any, placeholder: str):
        self.conn, self.placeholder = conn, placeholder

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return list(self.conn.execute(self._sql(sql), params).fetchall())

    def one(self, sql: str, params: Sequence = ()) -> tuple | None:
        rows = self.all(sql, params)  # fetched to the end: SQLite cannot commit mid-statement
        return rows[0] if rows else None

    def run(self, sql: str, params: Sequence = ()) -> int:
        return self.conn.execute(self._sql(sql), params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence]) -> None:
        self.conn.cursor().executemany(self._sql(sql), rows)


PERSON_COLUMNS = "p.id, p.name, p.metadata, (SELECT count(*) FROM faces f WHERE f.person_id = p.id), p.created_at_us"


class SqlStore:
    """The gallery's SQL, shared by both backends. Thread-safe: one connection, used
    under a lock (the gallery replica serialises its work anyway)."""

    backend = "sql"
    placeholder = "?"
    unavailable: tuple[type[BaseException], ...] = ()  # the backend's "store is down" exceptions

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conn: Any = None

    # --- what a backend supplies -------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _transaction(self, conn: Any, mode: str):
        """A context manager around `mode`'s work (WRITE, SNAPSHOT or SINGLE):
        committed on success, rolled back on error."""
        raise NotImplementedError

    def _json_param(self, value: dict) -> Any:
        raise NotImplementedError

    def _json_result(self, value: Any) -> dict:
        raise NotImplementedError

    def _after_delete(self, conn: Any) -> None:
        """Physical erasure beyond the committed delete, where the backend can do it."""

    # --- plumbing -------------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection may fail too; it is gone either way
                pass

    def _run(self, work: Callable[[Tx], T], mode: str) -> T:
        """`work` in one transaction. A read that fails on a connection that broke
        since its last use (a restarted server) is tried once more on a fresh one; a
        write is not (it may have committed), and the caller gets StoreUnavailable."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    conn = self._connection()
                    with self._transaction(conn, mode):
                        return work(Tx(conn, self.placeholder))
                except self.unavailable as exc:
                    self._drop_connection()
                    if mode == WRITE or attempt:
                        # The driver's message names the failure, never a parameter value.
                        raise StoreUnavailable(f"the {self.backend} store is unavailable: {_first_line(exc)}") from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    # --- writes ---------------------------------------------------------------------------
    @staticmethod
    def _bump(tx: Tx) -> int:
        # First statement of every write: takes the sequence row's lock (see the module's docstring).
        return int(tx.one("UPDATE gallery_seq SET value = value + 1 WHERE id = 1 RETURNING value")[0])

    @staticmethod
    def _claim_weights(tx: Tx, weights: str, dim: int) -> None:
        """The embeddings about to be stored come from `weights`: refuse them when the
        gallery holds faces from other weights; an empty gallery takes the new ones."""
        stored_weights, stored_dim = tx.one("SELECT weights, dim FROM gallery_meta WHERE id = 1")
        if stored_weights == weights and stored_dim == dim:
            return
        if stored_weights is not None and tx.one("SELECT EXISTS (SELECT 1 FROM faces)")[0]:
            raise WeightsMismatch(
                f"the gallery holds embeddings from {stored_weights} ({stored_dim}-d); "
                f"these come from {weights} ({dim}-d)"
            )
        tx.run("UPDATE gallery_meta SET weights = ?, dim = ? WHERE id = 1", (weights, dim))

    @staticmethod
    def _insert_faces(tx: Tx, faces: Sequence[tuple[str, NewFace]], weights: str, at: int) -> None:
        """faces: (person id, face) pairs."""
        if faces:
            tx.many(
                "INSERT INTO faces (id, person_id, embedding, weights, crop, created_at_us) VALUES (?, ?, ?, ?, ?, ?)",
                [(uuid.uuid4().hex, pid, f.embedding, weights, f.crop, at) for pid, f in faces],
            )

    @staticmethod
    def _changed(tx: Tx, person_id: str, seq: int) -> None:
        tx.run(
            "INSERT INTO changes (person_id, seq) VALUES (?, ?) "
            "ON CONFLICT (person_id) DO UPDATE SET seq = excluded.seq",
            (person_id, seq),
        )

    @staticmethod
    def _audit(tx: Tx, at: int, actor: str, action: str, person_id: str, faces: int) -> None:
        tx.run(
            "INSERT INTO audit_log (at_us, actor, action, person_id, faces) VALUES (?, ?, ?, ?, ?)",
            (at, actor, action, person_id, faces),
        )

    def _person(self, tx: Tx, person_id: str) -> PersonRecord | None:
        row = tx.one(f"SELECT {PERSON_COLUMNS} FROM people p WHERE p.id = ?", (person_id,))
        return self._record(row) if row else None

    def _record(self, row: tuple) -> PersonRecord:
        return PersonRecord(row[0], row[1], self._json_result(row[2]), int(row[3]), int(row[4]))

    def create_person(
        self, name: str | None, metadata: dict, faces: Sequence[NewFace], weights: str, dim: int, actor: str
    ) -> PersonRecord:
        return self.create_people([NewPerson(name, metadata, faces, actor)], weights, dim)[0]

    def create_people(self, people: Sequence[NewPerson], weights: str, dim: int) -> list[PersonRecord]:
        """Several people in ONE transaction (one commit, one disk sync): a replica's
        batch of enrolments, or a dataset imported in blocks. All or none."""
        ids = [uuid.uuid4().hex for _ in people]

        def work(tx: Tx) -> list[PersonRecord]:
            seq = self._bump(tx)
            if any(p.faces for p in people):
                self._claim_weights(tx, weights, dim)
            at = now_us()
            tx.many(
                "INSERT INTO people (id, name, metadata, created_at_us) VALUES (?, ?, ?, ?)",
                [(pid, p.name, self._json_param(p.metadata), at) for pid, p in zip(ids, people)],
            )
            self._insert_faces(tx, [(pid, f) for pid, p in zip(ids, people) for f in p.faces], weights, at)
            tx.many("INSERT INTO changes (person_id, seq) VALUES (?, ?)", [(pid, seq) for pid in ids])
            tx.many(
                "INSERT INTO audit_log (at_us, actor, action, person_id, faces) VALUES (?, ?, ?, ?, ?)",
                [(at, p.actor, "enrol", pid, len(p.faces)) for pid, p in zip(ids, people)],
            )
            return [PersonRecord(pid, p.name, dict(p.metadata), len(p.faces), at) for pid, p in zip(ids, people)]

        return self._run(work, WRITE)

    def add_faces(self, person_id: str, faces: Sequence[NewFace], weights: str, dim: int, actor: str) -> PersonRecord:
        def work(tx: Tx) -> PersonRecord:
            seq = self._bump(tx)
            if tx.one("SELECT 1 FROM people WHERE id = ?", (person_id,)) is None:
                raise PersonNotFound(f"no person {person_id}")  # rolls the transaction back
            if faces:
                self._claim_weights(tx, weights, dim)
            at = now_us()
            self._insert_faces(tx, [(person_id, f) for f in faces], weights, at)
            self._changed(tx, person_id, seq)
            self._audit(tx, at, actor, "add_faces", person_id, len(faces))
            return self._person(tx, person_id)

        return self._run(work, WRITE)

    def delete_person(self, person_id: str, actor: str) -> int:
        """-> faces erased. Unknown id: PersonNotFound."""

        def work(tx: Tx) -> int:
            seq = self._bump(tx)
            erased = tx.run("DELETE FROM faces WHERE person_id = ?", (person_id,))
            if tx.run("DELETE FROM people WHERE id = ?", (person_id,)) == 0:
                raise PersonNotFound(f"no person {person_id}")
            self._changed(tx, person_id, seq)
            self._audit(tx, now_us(), actor, "delete", person_id, erased)
            return erased

        erased = self._run(work, WRITE)
        with self._lock:
            try:
                self._after_delete(self._connection())
            except self.unavailable:  # the delete itself is committed; erasure completes at the next checkpoint
                pass
        return erased

    # --- reads ----------------------------------------------------------------------------
    def current_seq(self) -> int:
        return self._run(lambda tx: int(tx.one("SELECT value FROM gallery_seq WHERE id = 1")[0]), SINGLE)

    def _meta(self, tx: Tx) -> tuple[int, str | None, int | None]:
        seq, weights, dim = tx.one(
            "SELECT s.value, m.weights, m.dim FROM gallery_seq s, gallery_meta m WHERE s.id = 1 AND m.id = 1"
        )
        return int(seq), weights, dim

    def load(self) -> FaceRows:
        def work(tx: Tx) -> FaceRows:
            seq, weights, dim = self._meta(tx)
            rows = tx.all(
                "SELECT f.person_id, p.name, f.embedding FROM faces f JOIN people p ON p.id = f.person_id "
                "ORDER BY f.person_id"
            )
            return FaceRows(seq, weights, dim, [(r[0], r[1], bytes(r[2])) for r in rows])

        return self._run(work, SNAPSHOT)

    def changes_since(self, seq: int) -> FaceRows:
        def work(tx: Tx) -> FaceRows:
            now, weights, dim = self._meta(tx)
            if now == seq:
                return FaceRows(now, weights, dim)
            rows = tx.all(
                "SELECT c.person_id, p.id, p.name, f.embedding FROM changes c "
                "LEFT JOIN people p ON p.id = c.person_id LEFT JOIN faces f ON f.person_id = c.person_id "
                "WHERE c.seq > ?",
                (seq,),
            )
            # Grouped here, not by ORDER BY: sorting by person id in SQL leads SQLite's
            # planner to walk the whole changes table in id order instead of the few
            # recent rows by seq (100 ms at 20,000 people instead of under 1).
            rows.sort(key=lambda r: r[0])
            out = FaceRows(now, weights, dim)
            for person_id, present, name, embedding in rows:
                if present is None:
                    out.gone.append(person_id)
                elif embedding is None:  # a person with no faces: nothing to search, but not gone
                    out.gone.append(person_id)
                else:
                    out.rows.append((person_id, name, bytes(embedding)))
            return out

        return self._run(work, SNAPSHOT)

    def get_person(self, person_id: str) -> PersonRecord | None:
        return self._run(lambda tx: self._person(tx, person_id), SINGLE)

    def list_people(self, limit: int, after: tuple[int, str] | None) -> list[PersonRecord]:
        """Oldest first; `after` = (created_at_us, id) of the last one seen (keyset
        paging: a delete between pages skips nobody and repeats nobody)."""

        def work(tx: Tx) -> list[PersonRecord]:
            if after is None:
                rows = tx.all(f"SELECT {PERSON_COLUMNS} FROM people p ORDER BY p.created_at_us, p.id LIMIT ?", (limit,))
            else:
                rows = tx.all(
                    f"SELECT {PERSON_COLUMNS} FROM people p WHERE (p.created_at_us, p.id) > (?, ?) "
                    "ORDER BY p.created_at_us, p.id LIMIT ?",
                    (after[0], after[1], limit),
                )
            return [self._record(r) for r in rows]

        return self._run(work, SINGLE)

    def audit(self, person_id: str | None = None) -> list[AuditEntry]:
        sql = "SELECT at_us, actor, action, person_id, faces FROM audit_log"
        params: tuple = ()
        if person_id is not None:
            sql, params = sql + " WHERE person_id = ?", (person_id,)
        return self._run(lambda tx: [AuditEntry(*r) for r in tx.all(sql + " ORDER BY id", params)], SINGLE)

    def crops(self, person_id: str) -> list[bytes]:
        rows = self._run(
            lambda tx: tx.all("SELECT crop FROM faces WHERE person_id = ? AND crop IS NOT NULL", (person_id,)),
            SINGLE,
        )
        return [bytes(r[0]) for r in rows]

    def face_crops(self) -> list[tuple[str, str, bytes | None]]:
        """(face id, person id, its kept crop or None) of every face: what a re-embed reads."""
        rows = self._run(lambda tx: tx.all("SELECT id, person_id, crop FROM faces ORDER BY id"), SNAPSHOT)
        return [(r[0], r[1], None if r[2] is None else bytes(r[2])) for r in rows]

    def reembed(self, embeddings: dict[str, bytes], weights: str, dim: int, actor: str) -> int:
        """Every face's embedding replaced by one from other recogniser `weights`, in ONE
        transaction (the gallery never holds two recognisers' embeddings at once):
        `embeddings` maps each face id to its new unit float32 bytes. A face it lacks (one
        enrolled since its crops were read, or one without a crop) refuses the whole
        re-embed (InvalidRequest), nothing changed. Every person is marked changed, so
        replicas reload them; each gets a `reembed` audit entry. -> faces re-embedded."""

        def work(tx: Tx) -> int:
            seq = self._bump(tx)
            counts = dict(tx.all("SELECT person_id, count(*) FROM faces GROUP BY person_id"))
            present = {r[0] for r in tx.all("SELECT id FROM faces")}
            lacking = present - embeddings.keys()
            if lacking:
                raise InvalidRequest(
                    f"{len(lacking)} faces of the gallery have no new embedding "
                    "(no kept crop, or enrolled during the re-embed): nothing was changed"
                )
            # Faces erased during the re-embed are simply not there to update.
            tx.many(
                "UPDATE faces SET embedding = ?, weights = ? WHERE id = ?",
                [(embeddings[f], weights, f) for f in sorted(present)],
            )
            tx.run("UPDATE gallery_meta SET weights = ?, dim = ? WHERE id = 1", (weights, dim))
            at = now_us()
            for person_id, faces in counts.items():
                self._changed(tx, person_id, seq)
                self._audit(tx, at, actor, "reembed", person_id, int(faces))
            return len(present)

        return self._run(work, WRITE)

    def face_count(self) -> int:
        return self._run(lambda tx: int(tx.one("SELECT count(*) FROM faces")[0]), SINGLE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def database_url() -> str | None:
    """The PostgreSQL DSN from the environment or the secret file it names; None when neither is set."""
    url = os.environ.get(DSN_ENV, "").strip()
    if url:
        return url
    path = os.environ.get(DSN_FILE_ENV, "").strip()
    if path:
        try:
            return open(path, encoding="utf-8").read().strip() or None
        except OSError as exc:
            raise StoreUnavailable(f"{DSN_FILE_ENV} names {path}, which cannot be read: {exc.strerror}") from None
    return None


def data_dir(configured: str | None) -> str:
    return configured or os.environ.get(DATA_DIR_ENV, "").strip() or DEFAULT_DATA_DIR
