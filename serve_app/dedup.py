"""De-duplication of faces by embedding: one identity, one kept face.

Rule: faces are taken in order (image order, then detection order); a face whose cosine
similarity to an already kept face is >= threshold is a duplicate, else it is kept.
A duplicate is merged into the most similar of the kept faces that came before it.

Vectorised: one pass per *kept* face, each a matrix-vector product over the faces after
it, so the cost is O(kept x faces x dim) with no faces x faces matrix in memory (the
batch job de-duplicates a whole dataset with the same function).
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


def deduplicate(embeddings: np.ndarray, threshold: float) -> Dedup:
    """`embeddings` [N, D], L2-normalised rows, in first-occurrence order."""
    emb = np.asarray(embeddings, np.float32)
    n = len(emb)
    leader = np.arange(n)
    best = np.full(n, -np.inf, np.float32)  # best similarity to a kept face seen so far
    current = 0
    while current < n:
        # `current` is kept: no earlier kept face reached the threshold for it.
        leader[current], best[current] = current, 1.0
        rest = slice(current + 1, n)
        sims = emb[rest] @ emb[current]
        closer = sims > best[rest]
        best[rest] = np.where(closer, sims, best[rest])
        leader[rest] = np.where(closer, current, leader[rest])
        # The next kept face: the first later face no kept face has claimed.
        unclaimed = np.flatnonzero(best[rest] < threshold)
        current = current + 1 + int(unclaimed[0]) if len(unclaimed) else n
    return Dedup(leader, np.clip(best, -1.0, 1.0))
