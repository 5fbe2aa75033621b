"""De-duplication of faces by embedding: one identity, one kept face.

Rule: faces are taken in order (image order, then detection order), one image at a
time. A face joins the kept face (the first face of a person) it is most similar to,
if that cosine similarity is >= threshold; otherwise it is kept, a new person.
Comparisons are with kept faces only, so similarity never chains through a duplicate.

Two constraints make the rule safe on group photos:
- Cannot-link: faces of one image (`groups`) are never the same person. A person holds
  at most one face per image, so the faces of an image are matched to the kept faces
  one-to-one, most similar pair first: a face similar to two kept faces joins the
  more similar one only, and a kept face already taken by a closer face of this image
  is not offered to the others.
- Quality floor: a face that is not `eligible` (too small or too uncertain to be
  identity evidence) is kept on its own; it joins no one and no one joins it.

Cost: per image, one [faces x kept] product, so O(faces x kept x dim) in all with no
faces x faces matrix in memory (the batch job de-duplicates a whole dataset with the
same function).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dedup:
    leader: np.ndarray  # [N] int: index of the kept face each face belongs to (itself if kept)
    similarity: np.ndarray  # [N] float32: cosine to its leader (1.0 for kept faces)

    @property
    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.leader == np.arange(len(self.leader)))


def _runs(groups: np.ndarray) -> list[np.ndarray]:
    """Indices of the runs of equal consecutive group values, in order."""
    if not len(groups):
        return []
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return np.split(np.arange(len(groups)), starts[1:])


def _match(sims: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs at or above threshold, most similar first (ties:
    earlier row, then earlier column)."""
    rows, cols = np.nonzero(sims >= threshold)
    order = np.lexsort((cols, rows, -sims[rows, cols]))
    taken_rows, taken_cols, pairs = set(), set(), []
    most = min(sims.shape)
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in taken_rows and c not in taken_cols:
            taken_rows.add(r)
            taken_cols.add(c)
            pairs.append((r, c))
            if len(pairs) == most:
                break
    return pairs


def deduplicate(
    embeddings: np.ndarray, threshold: float, groups: np.ndarray | None = None, eligible: np.ndarray | None = None
) -> Dedup:
    """`embeddings` [N, D], L2-normalised rows, in first-occurrence order.
    `groups` [N]: faces with the same value (their image) are never merged; default:
    every face its own group. `eligible` [N] bool: faces that may merge; default: all."""
    emb = np.asarray(embeddings, np.float32)
    n = len(emb)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    leader = np.arange(n)
    similarity = np.ones(n, np.float32)
    pool = np.empty((int(eligible.sum()), emb.shape[1] if emb.ndim == 2 else 0), np.float32)
    pool_face: list[int] = []  # the kept face behind each row of pool
    rows_of: dict = {}  # group -> the pool rows (people) that already hold a face of it
    for run in _runs(groups):
        faces = run[eligible[run]]
        if not len(faces):
            continue
        group = groups[faces[0]]
        k = len(pool_face)
        sims = emb[faces] @ pool[:k].T
        rows = rows_of.setdefault(group, [])
        # A group seen before (input not grouped by image): its people are off limits.
        sims[:, rows] = -np.inf
        joined = set()
        for r, c in _match(sims, threshold):
            face = int(faces[r])
            leader[face], similarity[face] = pool_face[c], sims[r, c]
            rows.append(c)
            joined.add(face)
        for face in faces.tolist():
            if face not in joined:
                rows.append(len(pool_face))
                pool[len(pool_face)] = emb[face]
                pool_face.append(face)
    return Dedup(leader, np.clip(similarity, -1.0, 1.0))
