"""De-duplication by embedding: first occurrence kept, merged into the most similar
earlier kept face, same result as the obvious sequential loop; faces of one image never
merged (cannot-link), matched one-to-one most similar first; faces under the quality
floor never merged."""

import numpy as np

from serve_app.faces.dedup import deduplicate


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


def test_faces_of_one_image_are_never_merged():
    d = deduplicate(at_degrees(10, 10, 10), 0.4, groups=np.array([0, 0, 0]))
    assert d.kept.tolist() == [0, 1, 2] and np.allclose(d.similarity, 1.0)


def test_a_face_like_two_kept_faces_of_one_image_joins_the_most_similar_only():
    # P and Q (one image) are alike but stay two people; X (next image) is closer to Q.
    d = deduplicate(at_degrees(0, 40, 25), 0.5, groups=np.array([0, 0, 1]))
    assert d.leader.tolist() == [0, 1, 1]
    assert d.similarity[2] == np.float32(np.cos(np.radians(15)))
    # The old rule, without cannot-link, would have merged Q into P.
    assert deduplicate(at_degrees(0, 40, 25), 0.5).leader.tolist() == [0, 0, 0]


def test_an_image_is_matched_one_to_one_most_similar_pair_first():
    # Kept P (0 deg), Q (60 deg); the next image has X (20 deg) then Y (5 deg). X is closer
    # to P than to Q, but Y is closer still: Y takes P, X takes Q, never both P.
    d = deduplicate(at_degrees(0, 60, 20, 5), 0.5, groups=np.array([0, 0, 1, 1]))
    assert d.leader.tolist() == [0, 1, 1, 0]
    # With only one kept face in reach, the second face of the image becomes a new person.
    d = deduplicate(at_degrees(0, 150, 20, 5), 0.5, groups=np.array([0, 0, 1, 1]))
    assert d.leader.tolist() == [0, 1, 2, 0]


def test_a_face_under_the_quality_floor_joins_no_one_and_no_one_joins_it():
    eligible = np.array([True, False, True, True])
    d = deduplicate(at_degrees(0, 0, 0, 0), 0.5, groups=np.arange(4), eligible=eligible)
    assert d.leader.tolist() == [0, 1, 0, 0]
    d = deduplicate(at_degrees(0, 0, 0), 0.5, groups=np.arange(3), eligible=np.array([False, True, True]))
    assert d.leader.tolist() == [0, 1, 1]


def test_an_image_seen_again_later_still_cannot_link():
    # Input not grouped by image: the second face of image 7 may not join the person
    # who already holds a face of image 7.
    d = deduplicate(at_degrees(0, 0, 0), 0.5, groups=np.array([7, 8, 7]))
    assert d.leader.tolist() == [0, 0, 2]


def test_constraints_hold_on_random_data():
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(10, 16))
    n = 400
    emb = centres[rng.integers(0, 10, n)] + rng.normal(scale=0.5, size=(n, 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    groups = np.sort(rng.integers(0, 60, n))
    eligible = rng.random(n) > 0.2
    for threshold in (0.2, 0.5, 0.8):
        d = deduplicate(emb, threshold, groups=groups, eligible=eligible)
        leader = d.leader
        assert (leader <= np.arange(n)).all() and (leader[leader] == leader).all()  # leaders lead themselves
        for lead in d.kept:  # at most one face per image in a person
            members = np.flatnonzero(leader == lead)
            assert len(set(groups[members].tolist())) == len(members)
        dups = np.flatnonzero(leader != np.arange(n))
        assert eligible[dups].all() and eligible[leader[dups]].all()
        assert np.allclose(d.similarity[dups], np.einsum("ij,ij->i", emb[dups], emb[leader[dups]]), atol=1e-6)
        assert (d.similarity[dups] >= threshold - 1e-6).all()
        # A face kept although eligible had no free kept face of an earlier image in reach.
        for i in d.kept[eligible[d.kept]]:
            earlier = d.kept[(d.kept < i) & eligible[d.kept] & (groups[d.kept] != groups[i])]
            taken = {leader[j] for j in np.flatnonzero((groups == groups[i]) & (np.arange(n) != i))}
            free = [k for k in earlier if k not in taken]
            assert not free or (emb[free] @ emb[i]).max() < threshold
