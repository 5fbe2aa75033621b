"""FaceGallery: the people FaceGraph remembers between requests, as a model-tier
deployment. Enrol a person with face embeddings, add faces, get, list, delete, and
search probe embeddings for the best-matching people.

Items are small request dataclasses (`Enrol`, `AddFaces`, `GetPerson`, `ListPeople`,
`DeletePerson`, `Search`); `predict(items)` answers each in order with its result, or
with a `GalleryFailure` value for that item alone (errors.py says why values).

The one stateful model of the tier, by design: the store holds the truth (store.py),
and each replica holds an exact in-memory index of it (index.py), loaded at start and
brought up to date from the store's change sequence before every search, so a person
deleted through any replica is never returned by a search that starts after the
delete was acknowledged. A search while the store is down fails (StoreUnavailable)
rather than answer from an index that may still hold a deleted person.

Embeddings are only comparable when one recogniser's weights made them: every face is
stored with its weights' name, and the gallery refuses to store or search embeddings
from other weights than those it holds (WeightsMismatch).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deployments.base import Model
from deployments.face_gallery.backends import open_store
from deployments.face_gallery.errors import (
    GalleryError,
    GalleryFailure,
    InvalidRequest,
    PersonNotFound,
    StoreUnavailable,
    WeightsMismatch,
)
from deployments.face_gallery.index import EmbeddingIndex, Match, unit_rows
from deployments.face_gallery.store import FaceRows, NewFace, NewPerson, PersonRecord, SqlStore
from deployments.types import Placement

MAX_LIST_LIMIT = 1000
MAX_TOP_K = 100


@dataclass(frozen=True, kw_only=True)
class FaceGalleryConfig:
    store: str = "auto"  # auto (PostgreSQL when a DSN is configured, else SQLite) | sqlite | postgresql
    data_dir: str | None = None  # SQLite's directory; default FACEGRAPH_DATA_DIR, else .facegraph
    pg_schema: str = "facegraph"  # PostgreSQL schema holding the gallery's tables
    keep_crops: bool = False  # store the aligned face crops (lets a re-embed rebuild from them)
    sqlite_synchronous: str = "FULL"  # FULL: each commit reaches the disk before it is acknowledged
    busy_timeout_s: float = 5.0  # a write waits this long for another writer, then StoreUnavailable
    connect_timeout_s: float = 5.0


# --- items ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrol:
    """A new person with their faces. `embeddings` [K, D] from recogniser `weights`
    (K may be 0: the faces can be added later); `crops` (optional) one image file per
    face, kept only when the gallery is configured to keep crops."""

    embeddings: np.ndarray
    weights: str
    name: str | None = None
    metadata: dict = field(default_factory=dict)
    crops: Sequence[bytes] | None = None
    actor: str = "unknown"  # who asks, for the audit log (a key fingerprint, never a secret)


@dataclass(frozen=True)
class AddFaces:
    person_id: str
    embeddings: np.ndarray
    weights: str
    crops: Sequence[bytes] | None = None
    actor: str = "unknown"


@dataclass(frozen=True)
class GetPerson:
    person_id: str


@dataclass(frozen=True)
class ListPeople:
    limit: int = 50
    cursor: str | None = None  # from the previous page's PeoplePage.next_cursor


@dataclass(frozen=True)
class DeletePerson:
    person_id: str
    actor: str = "unknown"


@dataclass(frozen=True)
class Search:
    """Probe embeddings [P, D] from `weights`: for each, the people whose best face has
    cosine similarity >= threshold, best first, at most top_k."""

    embeddings: np.ndarray
    weights: str
    threshold: float
    top_k: int = 1


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeoplePage:
    people: list[PersonRecord]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True)
class Deleted:
    person_id: str
    faces_erased: int


@dataclass(frozen=True)
class SearchResult:
    matches: list[list[Match]]  # one list per probe, best first; empty: nobody matched
    weights: str | None  # the gallery's weights (None: nothing enrolled yet)


def encode_cursor(record: PersonRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.created_at_us}:{record.person_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, person_id = text.split(":", 1)
        return int(at), person_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("cursor: not a cursor this gallery gave out") from None


class FaceGallery(Model):
    def __init__(self, cfg: FaceGalleryConfig = FaceGalleryConfig(), placement: Placement = Placement()):
        super().__init__(cfg, placement)
        self.store: SqlStore = open_store(
            cfg.store,
            data_dir_path=cfg.data_dir,
            pg_schema=cfg.pg_schema,
            sqlite_synchronous=cfg.sqlite_synchronous,
            busy_timeout_s=cfg.busy_timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
        )
        # Concurrent callers in one process (a batch job's threads) share the index and
        # the store's one connection; Serve calls predict one batch at a time anyway.
        self._lock = threading.Lock()
        self.index: EmbeddingIndex | None = None
        self.weights: str | None = None
        self.seq = -1
        self._load()

    # --- keeping the index in step with the store -------------------------------------------
    def _load(self) -> None:
        rows = self.store.load()
        self.index = EmbeddingIndex(rows.dim) if rows.dim is not None else None
        if self.index is not None:
            self.index.load(rows.rows)  # the store's rows come grouped by person
        self.weights, self.seq = rows.weights, rows.seq

    def _apply(self, rows: FaceRows) -> None:
        if rows.dim is not None and (self.index is None or self.index.dim != rows.dim):
            # First faces ever, or an emptied gallery re-used with other weights: rebuild.
            if self.index is not None and len(self.index):
                return self._load()
            self.index = EmbeddingIndex(rows.dim)
        self.weights = rows.weights
        if self.index is not None:
            for person_id in rows.gone:
                self.index.remove_person(person_id)
            for person_id, name, embeddings in _grouped(rows.rows, self.index.dim):
                self.index.set_person(person_id, name, embeddings)
        self.seq = rows.seq

    def sync(self) -> None:
        """Bring the index up to the store's latest committed write (one cheap query
        when nothing changed)."""
        if self.store.current_seq() != self.seq:
            self._apply(self.store.changes_since(self.seq))

    # --- the model contract ---------------------------------------------------------------
    def predict(self, items: list) -> list:
        with self._lock:
            out: list = []
            i = 0
            while i < len(items):
                kind = type(items[i])
                j = i + 1
                if kind in (Search, Enrol):  # a run of these is answered together
                    while j < len(items) and type(items[j]) is kind:
                        j += 1
                if kind is Search:  # one sync, one product with the gallery
                    out.extend(self._searches(items[i:j]))
                elif kind is Enrol:  # one transaction: one commit, one disk sync
                    out.extend(self._enrolments(items[i:j]))
                else:
                    out.append(self._guarded(self._one, items[i]))
                i = j
            return out

    @staticmethod
    def _guarded(fn, item):
        try:
            return fn(item)
        except GalleryError as exc:
            return GalleryFailure.of(exc)
        except ValueError as exc:  # a malformed item (embeddings of the wrong shape, NaN)
            return GalleryFailure.of(InvalidRequest(str(exc)))

    def _enrolments(self, items: list[Enrol]) -> list:
        """Enrolments of one batch in one transaction when they can share it (same
        weights and width, each well formed); otherwise, or when the shared one is
        refused, one transaction each, so each item gets its own answer."""
        try:
            people = [self._new_person(item) for item in items]
        except (GalleryError, ValueError):
            people = None
        if people and len({(item.weights, self._dim(item.embeddings)) for item in items}) == 1:
            try:
                return self.store.create_people(people, items[0].weights, self._dim(items[0].embeddings))
            except GalleryError as exc:
                if isinstance(exc, StoreUnavailable) or len(items) == 1:
                    return [GalleryFailure.of(exc)] * len(items)
        return [self._guarded(self._enrol_one, item) for item in items]

    def _new_person(self, item: Enrol) -> NewPerson:
        return NewPerson(item.name, dict(item.metadata), self._new_faces(item.embeddings, item.crops), item.actor)

    def _enrol_one(self, item: Enrol) -> PersonRecord:
        (record,) = self.store.create_people([self._new_person(item)], item.weights, self._dim(item.embeddings))
        return record

    def _one(self, item):
        if isinstance(item, AddFaces):
            faces = self._new_faces(item.embeddings, item.crops)
            return self.store.add_faces(item.person_id, faces, item.weights, self._dim(item.embeddings), item.actor)
        if isinstance(item, GetPerson):
            record = self.store.get_person(item.person_id)
            if record is None:
                raise PersonNotFound(f"no person {item.person_id}")
            return record
        if isinstance(item, ListPeople):
            limit = min(max(1, int(item.limit)), MAX_LIST_LIMIT)
            after = decode_cursor(item.cursor) if item.cursor else None
            # One more than asked says whether another page follows.
            people = self.store.list_people(limit + 1, after)
            more = len(people) > limit
            people = people[:limit]
            return PeoplePage(people, encode_cursor(people[-1]) if more else None)
        if isinstance(item, DeletePerson):
            erased = self.store.delete_person(item.person_id, item.actor)
            # Drop the person from this replica's index now, not at its next search: the
            # embeddings leave memory with the acknowledgement.
            if self.index is not None:
                self.index.remove_person(item.person_id)
            return Deleted(item.person_id, erased)
        raise InvalidRequest(f"FaceGallery does not take {type(item).__name__} items")

    def _new_faces(self, embeddings: np.ndarray, crops: Sequence[bytes] | None) -> list[NewFace]:
        rows = unit_rows(embeddings) if len(embeddings) else np.zeros((0, 1), np.float32)
        if crops is not None and len(crops) != len(rows):
            raise InvalidRequest(f"{len(crops)} crops for {len(rows)} embeddings")
        keep = self.cfg.keep_crops and crops is not None
        return [NewFace(row.astype("<f4").tobytes(), bytes(crops[k]) if keep else None) for k, row in enumerate(rows)]

    @staticmethod
    def _dim(embeddings: np.ndarray) -> int:
        shape = np.shape(embeddings)
        return int(shape[-1]) if len(shape) else 0

    def _searches(self, items: list[Search]) -> list:
        try:
            self.sync()
        except GalleryError as exc:
            return [GalleryFailure.of(exc)] * len(items)
        out: list = []
        probes, owners = [], []
        for k, item in enumerate(items):
            try:
                rows = self._check_search(item)
            except GalleryError as exc:
                out.append(GalleryFailure.of(exc))
                continue
            except ValueError as exc:
                out.append(GalleryFailure.of(InvalidRequest(str(exc))))
                continue
            out.append(None)
            probes.append(rows)
            owners.append(k)
        if not owners:
            return out
        if self.index is None or len(self.index) == 0:
            for k, rows in zip(owners, probes):
                out[k] = SearchResult([[] for _ in rows], self.weights)
            return out
        # Every probe of the run in one product with the gallery; each item keeps its own k and threshold.
        stacked = np.concatenate(probes)
        scores_for = np.cumsum([0] + [len(p) for p in probes])
        for n, k in enumerate(owners):
            item = items[k]
            part = stacked[scores_for[n] : scores_for[n + 1]]
            top_k = min(max(1, int(item.top_k)), MAX_TOP_K)
            out[k] = SearchResult(self.index.search(part, top_k, float(item.threshold)), self.weights)
        return out

    def _check_search(self, item: Search) -> np.ndarray:
        rows = unit_rows(item.embeddings) if len(item.embeddings) else np.zeros((0, self._dim(item.embeddings)))
        if self.index is not None and len(self.index):
            if item.weights != self.weights:
                raise WeightsMismatch(
                    f"the gallery holds embeddings from {self.weights}; these probes come from {item.weights}"
                )
            if rows.shape[1] != self.index.dim:
                raise InvalidRequest(f"probes of {rows.shape[1]} dimensions in a gallery of {self.index.dim}")
        return rows

    def describe(self) -> dict[str, str | None]:
        """Health: no runtime of its own to name; the store it keeps people in."""
        return {"runtime": None, "backend": self.store.backend}

    def close(self) -> None:
        self.store.close()


def _grouped(rows: list[tuple[str, str | None, bytes]], dim: int):
    """(person id, name, unit embeddings [K, D]) per person of rows sorted by person id."""
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end][0] == rows[start][0]:
            end += 1
        blob = b"".join(r[2] for r in rows[start:end])
        yield rows[start][0], rows[start][1], np.frombuffer(blob, "<f4").reshape(-1, dim).copy()
        start = end
