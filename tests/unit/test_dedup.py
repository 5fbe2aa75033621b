"""De-duplication by embedding: first occurrence kept, merged into the most similar
earlier kept face, same result as the obvious sequential loop."""

import numpy as np

from serve_app.dedup import deduplicate


def at_degrees(*angles) -> np.ndarray:
    """Unit vectors in the plane: cosine between two = cos(angle difference)."""
    r = np.radians(angles)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def reference(emb: np.ndarray, threshold: float) -> list[int]:
    """The rule as written, one face at a time against the kept faces."""
    kept, leader = [], []
    for i, e in enumerate(emb):
        sims = [(float(emb[k] @ e), k) for k in kept]
        best = max(sims) if sims else None
        if best is not None and best[0] >= threshold:
            leader.append(best[1])
        else:
            kept.append(i)
            leader.append(i)
    return leader


def test_identical_faces_keep_the_first():
    d = deduplicate(at_degrees(10, 10, 10), 0.4)
    assert d.leader.tolist() == [0, 0, 0] and d.kept.tolist() == [0]
    assert np.allclose(d.similarity, 1.0)


def test_threshold_is_inclusive_and_distinct_faces_stay():
    emb = at_degrees(0, 60, 180)  # cos 0.5 between the first two
    assert deduplicate(emb, 0.5 - 1e-6).kept.tolist() == [0, 2]
    assert deduplicate(emb, 0.51).kept.tolist() == [0, 1, 2]


def test_no_chaining_through_a_duplicate():
    # b is like a, c is like b but not like a: c is compared with kept faces only.
    d = deduplicate(at_degrees(0, 50, 100), 0.6)
    assert d.leader.tolist() == [0, 0, 2]


def test_a_duplicate_joins_the_most_similar_earlier_kept_face():
    d = deduplicate(at_degrees(0, 90, 60), 0.4)  # 60 deg: cos 0.5 to the first, 0.87 to the second
    assert d.leader.tolist() == [0, 1, 1]
    assert d.similarity[2] == np.float32(np.cos(np.radians(30)))


def test_matches_the_sequential_rule_on_random_data():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, 16))
    emb = centres[rng.integers(0, 12, 300)] + rng.normal(scale=0.6, size=(300, 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    for threshold in (0.2, 0.5, 0.8):
        d = deduplicate(emb, threshold)
        assert d.leader.tolist() == reference(emb, threshold)
        kept = d.kept
        # No two kept faces reach the threshold; every duplicate does with its leader.
        sims = emb[kept] @ emb[kept].T
        assert (sims[~np.eye(len(kept), dtype=bool)] < threshold).all()
        dups = np.flatnonzero(d.leader != np.arange(300))
        assert (np.einsum("ij,ij->i", emb[dups], emb[d.leader[dups]]) >= threshold - 1e-6).all()


def test_empty_and_single():
    assert deduplicate(np.zeros((0, 128), np.float32), 0.4).kept.tolist() == []
    assert deduplicate(at_degrees(5), 0.4).kept.tolist() == [0]
