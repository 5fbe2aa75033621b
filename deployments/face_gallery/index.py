"""Exact cosine search over every enrolled face, in memory.

One float32 matrix of unit rows (the raw embeddings and nothing more per face but a
4-byte owner), so 100,000 faces of 128 dimensions are one 51 MB matrix-vector product
per probe. Rows of a removed person are freed at once and reused by later faces; the
matrix grows by an eighth at a time, so memory stays close to the raw embeddings.

A person's similarity to a probe is their best face's: one good enrolment photo is
enough, and adding faces only ever helps recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROWTH = 1.125  # capacity grows by an eighth: little slack, copies still amortised
MIN_GROWTH_ROWS = 1024


@dataclass(frozen=True)
class Match:
    person_id: str
    name: str | None
    similarity: float


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """float32 [N, D] with every row scaled to length 1 (a zero row is refused: it has
    no direction, and it would match nobody and everybody the same)."""
    rows = np.asarray(embeddings, np.float32)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or not np.isfinite(rows).all():
        raise ValueError("embeddings must be a finite [N, D] array")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if rows.size and (norms <= 1e-12).any():
        raise ValueError("an embedding has length zero")
    return rows / np.maximum(norms, 1e-12)


class EmbeddingIndex:
    def __init__(self, dim: int):
        self.dim = dim
        self.matrix = np.zeros((0, dim), np.float32)
        self.owner = np.zeros(0, np.int32)  # row -> person slot; -1: free row
        self.used = 0  # rows [0, used) have been handed out (live or free)
        self.free_rows: list[int] = []
        self.people: list[tuple[str, str | None] | None] = []  # slot -> (person id, name)
        self.slot_of: dict[str, int] = {}
        self.free_slots: list[int] = []

    def __len__(self) -> int:
        """Live faces."""
        return self.used - len(self.free_rows)

    @property
    def person_count(self) -> int:
        return len(self.slot_of)

    @property
    def nbytes(self) -> int:
        """Bytes of the numpy arrays (the per-person Python objects are not counted here;
        the benchmark measures the process as a whole)."""
        return self.matrix.nbytes + self.owner.nbytes

    def set_person(self, person_id: str, name: str | None, embeddings: np.ndarray) -> None:
        """The person's faces are exactly `embeddings` (unit rows) from now on."""
        self.remove_person(person_id)
        if len(embeddings) == 0:
            return
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings of {embeddings.shape[1]} dimensions in a gallery of {self.dim}")
        slot = self.free_slots.pop() if self.free_slots else len(self.people)
        if slot == len(self.people):
            self.people.append(None)
        self.people[slot] = (person_id, name)
        self.slot_of[person_id] = slot
        rows = self._take_rows(len(embeddings))
        self.matrix[rows] = embeddings
        self.owner[rows] = slot

    def remove_person(self, person_id: str) -> None:
        slot = self.slot_of.pop(person_id, None)
        if slot is None:
            return
        rows = np.flatnonzero(self.owner[: self.used] == slot)
        self.owner[rows] = -1
        self.matrix[rows] = 0.0  # no copy of a forgotten face stays in memory
        self.free_rows.extend(rows.tolist())
        self.people[slot] = None
        self.free_slots.append(slot)

    def _take_rows(self, n: int) -> np.ndarray:
        reused = [self.free_rows.pop() for _ in range(min(n, len(self.free_rows)))]
        fresh = n - len(reused)
        if self.used + fresh > len(self.matrix):
            self._grow(self.used + fresh)
        rows = np.array(reused + list(range(self.used, self.used + fresh)), np.int64)
        self.used += fresh
        return rows

    def _grow(self, needed: int) -> None:
        capacity = max(needed, int(len(self.matrix) * GROWTH), len(self.matrix) + MIN_GROWTH_ROWS)
        matrix = np.zeros((capacity, self.dim), np.float32)
        matrix[: self.used] = self.matrix[: self.used]
        owner = np.full(capacity, -1, np.int32)
        owner[: self.used] = self.owner[: self.used]
        self.matrix, self.owner = matrix, owner

    def load(self, rows: list[tuple[str, str | None, bytes]]) -> None:
        """An empty index filled at once from (person id, name, unit float32 bytes) rows
        grouped by person: one matrix of exactly their size, no per-face work."""
        if self.used:
            raise ValueError("load() fills an empty index")
        if not rows:
            return
        self.matrix = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(-1, self.dim).copy()
        starts = [k for k in range(len(rows)) if k == 0 or rows[k][0] != rows[k - 1][0]]
        counts = np.diff(starts + [len(rows)])
        if len(set(rows[k][0] for k in starts)) != len(starts):
            raise ValueError("load() needs the rows grouped by person")
        self.people = [(rows[k][0], rows[k][1]) for k in starts]
        self.slot_of = {person_id: slot for slot, (person_id, _) in enumerate(self.people)}
        self.owner = np.repeat(np.arange(len(starts), dtype=np.int32), counts)
        self.used = len(rows)

    def search(self, probes: np.ndarray, top_k: int, threshold: float) -> list[list[Match]]:
        """For each probe (unit rows [P, D]): the people whose best face has cosine
        similarity >= threshold, best first, at most top_k."""
        if len(probes) == 0:
            return []
        if probes.shape[1] != self.dim:
            raise ValueError(f"probes of {probes.shape[1]} dimensions in a gallery of {self.dim}")
        if len(self) == 0:
            return [[] for _ in probes]
        scores = self.matrix[: self.used] @ probes.T  # [N, P]
        live = None if not self.free_rows else self.owner[: self.used] >= 0
        return [self._best_people(scores[:, j], live, top_k, threshold) for j in range(len(probes))]

    def _best_people(self, scores: np.ndarray, live: np.ndarray | None, top_k: int, threshold: float) -> list[Match]:
        hits = scores >= threshold
        if live is not None:
            hits &= live
        rows = np.flatnonzero(hits)
        if len(rows) == 0:
            return []
        # The top_k people are among the best rows: look at the best few rows first and
        # only widen while they hold fewer than top_k distinct people.
        want = top_k * 4
        while True:
            if len(rows) > want:
                part = rows[np.argpartition(-scores[rows], want)[:want]]
            else:
                part = rows
            ordered = part[np.argsort(-scores[part], kind="stable")]
            found: dict[int, float] = {}
            for row in ordered.tolist():
                slot = int(self.owner[row])
                if slot not in found:
                    found[slot] = float(scores[row])
                    if len(found) == top_k:
                        break
            if len(found) == top_k or len(part) == len(rows):
                break
            want *= 4
        out = []
        for slot, similarity in found.items():
            person_id, name = self.people[slot]
            out.append(Match(person_id, name, similarity))
        return out
