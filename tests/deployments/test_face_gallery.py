"""FaceGallery: the same suite on both stores, SQLite (a temporary data dir) and
PostgreSQL (a throwaway server from Debian's package, tests/postgres_server.py, or
the one FACEGRAPH_TEST_DATABASE_URL names; each test gets a schema of its own).
Without PostgreSQL the postgresql half skips and says why.

Embeddings are random unit vectors where the test is about storage (128-d random
vectors are near-orthogonal: cosine about +-0.1, far below any threshold), and the real
128-d ArcFace's where it is about recognising people."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from deployments.face_gallery.errors import (
    GalleryFailure,
    InvalidRequest,
    PersonNotFound,
    StoreUnavailable,
    WeightsMismatch,
    unwrap,
)
from deployments.face_gallery.model import (
    AddFaces,
    Deleted,
    DeletePerson,
    Enrol,
    FaceGallery,
    FaceGalleryConfig,
    GetPerson,
    ListPeople,
    PeoplePage,
    Search,
)
from deployments.face_gallery.store import DSN_ENV, DSN_FILE_ENV

REPO = Path(__file__).resolve().parents[2]
W = "test-weights-128d"
DIM = 128
THRESHOLD = 0.5


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def near(base: np.ndarray, rng, noise: float = 0.3) -> np.ndarray:
    """Another 'photo' of the same person: the base direction plus a random one `noise`
    as long (cosine ~0.96 to the base)."""
    return unit(base + noise * unit(rng.normal(size=base.shape)))


def one(gallery: FaceGallery, item):
    (result,) = gallery.predict([item])
    return unwrap(result)


def enrol(gallery: FaceGallery, embeddings, name=None, **kw):
    return one(gallery, Enrol(np.atleast_2d(embeddings), kw.pop("weights", W), name=name, **kw))


def search(gallery: FaceGallery, probes, top_k=3, threshold=THRESHOLD, weights=W):
    return one(gallery, Search(np.atleast_2d(probes), weights, threshold, top_k)).matches


# --- the two stores ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session: FACEGRAPH_TEST_DATABASE_URL's, or our own."""
    url = os.environ.get("FACEGRAPH_TEST_DATABASE_URL")
    if url:
        yield None, url
        return
    from tests.postgres_server import PostgresUnavailable, ThrowawayPostgres

    try:
        server = ThrowawayPostgres().start()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"PostgreSQL cannot be started here: {exc}")
    yield server, server.dsn
    server.stop()


class Backend:
    """One store under test: builds galleries (replicas) on it and can make it stall."""

    def __init__(self, name: str, cfg: FaceGalleryConfig, server=None, dsn: str | None = None):
        self.name, self.cfg, self.server, self.dsn = name, cfg, server, dsn
        self.galleries: list[FaceGallery] = []

    def gallery(self, **changes) -> FaceGallery:
        from dataclasses import replace

        g = FaceGallery(replace(self.cfg, **changes))
        self.galleries.append(g)
        return g

    @contextlib.contextmanager
    def write_lock_held(self):
        """Another client holds the store's write lock (a long transaction, a backup):
        writers wait busy_timeout_s, then give up."""
        if self.name == "sqlite":
            conn = sqlite3.connect(Path(self.cfg.data_dir) / "gallery.sqlite3", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.dsn) as conn:
                conn.execute(f'SELECT value FROM "{self.cfg.pg_schema}".gallery_seq FOR UPDATE')
                yield
                conn.rollback()

    def close(self) -> None:
        for g in self.galleries:
            g.close()
        if self.name == "postgresql":
            from deployments.face_gallery.postgres import PostgresStore

            with contextlib.suppress(Exception):
                PostgresStore(self.dsn, schema=self.cfg.pg_schema).drop_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path, monkeypatch):
    monkeypatch.delenv(DSN_ENV, raising=False)
    monkeypatch.delenv(DSN_FILE_ENV, raising=False)
    if request.param == "sqlite":
        b = Backend("sqlite", FaceGalleryConfig(store="sqlite", data_dir=str(tmp_path / "data")))
    else:
        server, dsn = request.getfixturevalue("postgres")
        monkeypatch.setenv(DSN_ENV, dsn)
        schema = "t_" + uuid.uuid4().hex[:12]
        b = Backend("postgresql", FaceGalleryConfig(store="postgresql", pg_schema=schema), server, dsn)
    yield b
    b.close()


# --- semantics ---------------------------------------------------------------------------------


def test_enrol_then_search_finds_the_person(backend):
    rng = np.random.default_rng(1)
    g = backend.gallery()
    bases = unit(rng.normal(size=(3, DIM)))
    people = [
        enrol(g, np.stack([near(b, rng), near(b, rng)]), name=f"person {i}", metadata={"i": i})
        for i, b in enumerate(bases)
    ]
    assert [p.faces for p in people] == [2, 2, 2]

    probes = np.stack([near(b, rng) for b in bases] + [unit(rng.normal(size=DIM))])  # the last: a stranger
    matches = search(g, probes, top_k=3)
    for i, person in enumerate(people):
        assert [m.person_id for m in matches[i]] == [person.person_id], matches[i]
        assert matches[i][0].name == f"person {i}" and 0.9 < matches[i][0].similarity <= 1.0001
    assert matches[3] == []

    # With the threshold at -1 everyone matches: best first, at most top_k.
    everyone = search(g, probes[:1], top_k=2, threshold=-1.0)[0]
    assert len(everyone) == 2 and everyone[0].person_id == people[0].person_id
    assert everyone[0].similarity >= everyone[1].similarity

    record = one(g, GetPerson(people[1].person_id))
    assert (record.name, record.metadata, record.faces) == ("person 1", {"i": 1}, 2)
    assert abs(record.created_at.timestamp() - time.time()) < 60
    assert [(a.action, a.faces) for a in g.store.audit(people[1].person_id)] == [("enrol", 2)]


def test_add_faces(backend):
    rng = np.random.default_rng(2)
    g = backend.gallery()
    young, old = unit(rng.normal(size=(2, DIM)))  # two looks of one person, unlike each other
    person = enrol(g, young[None], name="ada")
    assert search(g, near(old, rng))[0] == []
    grown = one(g, AddFaces(person.person_id, np.stack([old, near(old, rng)]), W, actor="tester"))
    assert grown.faces == 3 and grown.name == "ada"
    assert [m.person_id for m in search(g, near(old, rng))[0]] == [person.person_id]
    assert [(a.action, a.faces, a.actor) for a in g.store.audit(person.person_id)][-1] == ("add_faces", 2, "tester")
    with pytest.raises(PersonNotFound):
        one(g, AddFaces("no-such-person", old[None], W))


def test_delete_is_hard_and_final(backend):
    rng = np.random.default_rng(3)
    g = backend.gallery(keep_crops=True)
    other_replica = backend.gallery()  # loaded before the delete: must catch up by itself
    a, b = unit(rng.normal(size=(2, DIM)))
    ada = enrol(g, np.stack([a, near(a, rng)]), name="ada", crops=[b"crop-a1", b"crop-a2"], actor="key:1")
    bob = enrol(g, b[None], name="bob", crops=[b"crop-b"])
    assert [m.person_id for m in search(other_replica, a)[0]] == [ada.person_id]
    assert sorted(g.store.crops(ada.person_id)) == [b"crop-a1", b"crop-a2"]

    deleted = one(g, DeletePerson(ada.person_id, actor="key:2"))
    assert deleted == Deleted(ada.person_id, 2)
    with pytest.raises(PersonNotFound):
        one(g, GetPerson(ada.person_id))
    with pytest.raises(PersonNotFound):
        one(g, DeletePerson(ada.person_id))
    for replica in (g, other_replica):
        assert ada.person_id not in {m.person_id for m in search(replica, a, threshold=-1.0, top_k=10)[0]}
        assert [m.person_id for m in search(replica, b)[0]] == [bob.person_id]
    page = one(g, ListPeople(limit=10))
    assert [p.person_id for p in page.people] == [bob.person_id]
    # Gone from the store, not hidden: no face row, no crop.
    assert g.store.crops(ada.person_id) == [] and g.store.face_count() == 1
    # The audit log keeps who did what to which id, and nothing of the person.
    log = g.store.audit(ada.person_id)
    assert [(e.action, e.actor, e.faces) for e in log] == [("enrol", "key:1", 2), ("delete", "key:2", 2)]
    assert all("ada" not in repr(e) for e in log)
    # A fresh replica never sees them either.
    fresh = backend.gallery()
    assert ada.person_id not in {m.person_id for m in search(fresh, a, threshold=-1.0, top_k=10)[0]}


def test_sqlite_delete_leaves_no_bytes_in_the_files(tmp_path):
    """Erasure you can prove: the deleted embedding and crop are in the database files
    before the delete and nowhere in them after it (secure_delete + WAL checkpoint)."""
    data = tmp_path / "data"
    g = FaceGallery(FaceGalleryConfig(store="sqlite", data_dir=str(data), keep_crops=True))
    rng = np.random.default_rng(4)
    vector = unit(rng.normal(size=DIM))
    crop = b"CROP-" + uuid.uuid4().hex.encode() * 8
    person = enrol(g, vector[None], name="erase me", crops=[crop])
    enrol(g, unit(rng.normal(size=DIM))[None], name="stays")
    blob = vector.astype("<f4").tobytes()

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(data.iterdir()))

    assert blob in on_disk() and crop in on_disk()
    one(g, DeletePerson(person.person_id))
    contents = on_disk()
    assert blob not in contents and crop not in contents and b"erase me" not in contents
    g.close()


def test_files_are_owner_only(tmp_path):
    data = tmp_path / "data"
    g = FaceGallery(FaceGalleryConfig(store="sqlite", data_dir=str(data)))
    enrol(g, unit(np.ones(DIM))[None])
    assert data.stat().st_mode & 0o777 == 0o700
    for path in data.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    g.close()


def test_list_pages(backend):
    g = backend.gallery()
    rng = np.random.default_rng(5)
    ids = [enrol(g, unit(rng.normal(size=DIM))[None], name=f"p{i}").person_id for i in range(7)]
    page = one(g, ListPeople(limit=3))
    seen = [p.person_id for p in page.people]
    one(g, DeletePerson(ids[4]))  # between pages: nobody skipped, nobody repeated
    while page.next_cursor:
        page = one(g, ListPeople(limit=3, cursor=page.next_cursor))
        seen += [p.person_id for p in page.people]
    assert seen == [i for i in ids if i != ids[4]]  # oldest first
    assert isinstance(one(g, ListPeople(limit=100)), PeoplePage)
    (bad,) = g.predict([ListPeople(cursor="not a cursor!")])
    assert isinstance(bad, GalleryFailure) and bad.code == InvalidRequest.code


def test_replicas_stay_in_step(backend):
    rng = np.random.default_rng(6)
    first, second = backend.gallery(), backend.gallery()
    v = unit(rng.normal(size=DIM))
    person = enrol(first, v[None], name="seen everywhere")
    assert [m.person_id for m in search(second, v)[0]] == [person.person_id]
    extra = unit(rng.normal(size=DIM))
    one(second, AddFaces(person.person_id, extra[None], W))
    assert [m.person_id for m in search(first, extra)[0]] == [person.person_id]


def test_searches_and_writes_in_one_batch_keep_their_order(backend):
    """Serve hands the replica a batch of mixed items: each answered in order, a search
    sees the writes before it in the batch, a bad item fails alone."""
    rng = np.random.default_rng(7)
    g = backend.gallery()
    v, u = unit(rng.normal(size=(2, DIM)))
    out = g.predict(
        [
            Search(v[None], W, THRESHOLD),
            Enrol(v[None], W, name="v"),
            Search(np.stack([v, u]), W, THRESHOLD),
            Search(np.ones((1, 64), np.float32), W, THRESHOLD),  # wrong width
            Search(np.full((1, DIM), np.nan, np.float32), W, THRESHOLD),
            GetPerson("nobody"),
        ]
    )
    assert out[0].matches == [[]]
    assert [m.name for m in out[2].matches[0]] == ["v"] and out[2].matches[1] == []
    assert [type(r) for r in out[3:]] == [GalleryFailure] * 3
    assert [r.code for r in out[3:]] == [InvalidRequest.code, InvalidRequest.code, PersonNotFound.code]


def test_a_batch_of_enrolments_commits_together_and_fails_alone(backend):
    """A batch of enrolments is one transaction; an item the gallery refuses (other
    weights, a malformed embedding) fails alone and the rest are enrolled."""
    rng = np.random.default_rng(13)
    g = backend.gallery()
    enrol(g, unit(rng.normal(size=DIM))[None], name="first")
    vectors = unit(rng.normal(size=(4, DIM)))
    seq_before = g.store.current_seq()
    together = g.predict([Enrol(v[None], W, name=f"b{i}") for i, v in enumerate(vectors[:3])])
    assert [r.name for r in together] == ["b0", "b1", "b2"]
    assert g.store.current_seq() == seq_before + 1  # one transaction for the three
    mixed = g.predict(
        [
            Enrol(vectors[3][None], W, name="ok"),
            Enrol(unit(rng.normal(size=(1, DIM))), "another-128d", name="other weights"),
            Enrol(np.full((1, DIM), np.inf, np.float32), W, name="not finite"),
        ]
    )
    assert mixed[0].name == "ok"
    assert [r.code for r in mixed[1:]] == [WeightsMismatch.code, InvalidRequest.code]
    names = {m.name for m in search(g, vectors, top_k=1) for m in m}
    assert names == {"b0", "b1", "b2", "ok"} and g.store.face_count() == 5


# --- durability ------------------------------------------------------------------------------


def test_enrolments_survive_a_restart(backend):
    rng = np.random.default_rng(8)
    g = backend.gallery()
    vectors = unit(rng.normal(size=(5, DIM)))
    ids = [enrol(g, v[None], name=f"p{i}", metadata={"tag": i}).person_id for i, v in enumerate(vectors)]
    one(g, DeletePerson(ids[2]))
    g.close()
    restarted = backend.gallery()
    found = search(restarted, vectors, top_k=1)
    assert [m[0].person_id if m else None for m in found] == [ids[0], ids[1], None, ids[3], ids[4]]
    assert one(restarted, GetPerson(ids[4])).metadata == {"tag": 4}


SIGKILL_CLIENT = """
import os, sys
import numpy as np
from deployments.face_gallery.model import Enrol, FaceGallery, FaceGalleryConfig
from deployments.face_gallery.errors import unwrap
cfg = FaceGalleryConfig(store=sys.argv[1], data_dir=sys.argv[2] or None, pg_schema=sys.argv[3])
g = FaceGallery(cfg)
rng = np.random.default_rng(9)
while True:
    v = rng.normal(size=(1, 128)).astype(np.float32)
    (r,) = g.predict([Enrol(v, "test-weights-128d", name="k")])
    print(unwrap(r).person_id, flush=True)  # printed only after the commit returned: acknowledged
"""


def test_acknowledged_enrolments_survive_sigkill(backend):
    """A gallery process enrolling as fast as it can is SIGKILLed: every enrolment it
    acknowledged is in the store afterwards."""
    backend.gallery()  # create the schema first, so the child starts writing at once
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", SIGKILL_CLIENT, backend.name, backend.cfg.data_dir or "", backend.cfg.pg_schema],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    acked = []
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 30 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert len(acked) == 30, "the child stopped before 30 enrolments"
    after = backend.gallery()
    for person_id in acked:
        assert one(after, GetPerson(person_id)).faces == 1


# --- weights -----------------------------------------------------------------------------------


def test_other_weights_are_refused(backend):
    rng = np.random.default_rng(10)
    g = backend.gallery()
    v = unit(rng.normal(size=DIM))
    person = enrol(g, v[None], name="a")
    other = "other-weights-512d"
    with pytest.raises(WeightsMismatch):
        enrol(g, unit(rng.normal(size=512))[None], weights=other)
    with pytest.raises(WeightsMismatch):
        one(g, Search(unit(rng.normal(size=(1, 512))), other, THRESHOLD))
    with pytest.raises(WeightsMismatch):  # same width, other weights: still meaningless together
        one(g, Search(v[None], "another-128d", THRESHOLD))
    with pytest.raises(WeightsMismatch):
        one(g, AddFaces(person.person_id, v[None], "another-128d"))
    assert g.store.face_count() == 1
    # An emptied gallery takes new weights (nothing left to mix with).
    one(g, DeletePerson(person.person_id))
    new = enrol(g, unit(rng.normal(size=512))[None], weights=other)
    assert g.store.load().weights == other
    with pytest.raises(WeightsMismatch):
        one(g, Search(v[None], W, THRESHOLD))
    probe = g.store.load().rows[0][2]
    assert [m.person_id for m in search(g, np.frombuffer(probe, "<f4"), weights=other)[0]] == [new.person_id]


# --- concurrency ---------------------------------------------------------------------------------

CLIENTS = 8
OPS_PER_CLIENT = 40


def test_concurrent_clients_lose_nothing(backend):
    """8 clients over 2 replicas enrol, search and delete at once: every acknowledged
    enrolment is there at the end, every acknowledged delete is gone, a search that
    starts after a delete was acknowledged never returns that person, and a search
    for a person nobody deleted always finds them."""
    replicas = [backend.gallery(), backend.gallery()]
    lock = threading.Lock()
    alive: dict[str, np.ndarray] = {}
    deleted_at: dict[str, float] = {}
    deleted_vec: dict[str, np.ndarray] = {}
    problems: list[str] = []
    counts = {"enrol": 0, "delete": 0, "search": 0}

    def client(k: int) -> None:
        rng = np.random.default_rng(100 + k)
        g = replicas[k % 2]
        mine: list[str] = []
        for step in range(OPS_PER_CLIENT):
            roll = rng.random()
            if roll < 0.4 or not mine:
                v = unit(rng.normal(size=DIM))
                pid = enrol(g, v[None], name=f"c{k}s{step}", actor=f"client{k}").person_id
                with lock:
                    alive[pid] = v
                    counts["enrol"] += 1
                mine.append(pid)
            elif roll < 0.6:
                pid = mine.pop(int(rng.integers(len(mine))))
                with lock:  # the vector stays findable-to-check after the delete
                    deleted_vec[pid] = alive[pid]
                one(g, DeletePerson(pid, actor=f"client{k}"))
                with lock:
                    deleted_at[pid] = time.monotonic()
                    del alive[pid]
                    counts["delete"] += 1
            else:
                with lock:
                    pool = list(alive.items()) + list(deleted_vec.items())
                pid, v = pool[int(rng.integers(len(pool)))]
                started = time.monotonic()
                found = {m.person_id for m in search(g, v, top_k=5)[0]}
                with lock:
                    counts["search"] += 1
                    for other in found:
                        if other in deleted_at and deleted_at[other] < started:
                            problems.append(f"search returned {other}, deleted before it started")
                    if pid not in found and pid not in deleted_vec:
                        problems.append(f"search lost {pid}, which nobody deleted")

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client, k) for k in range(CLIENTS)]:
            future.result()
    assert problems == []
    print(f"\n{backend.name}: {counts}")
    assert counts["search"] > 50 and counts["delete"] > 20

    fresh = backend.gallery()
    assert fresh.store.face_count() == len(alive)
    ids = list(alive)
    found = search(fresh, np.stack([alive[i] for i in ids]), top_k=1)
    assert [m[0].person_id if m else None for m in found] == ids
    for pid in deleted_at:
        with pytest.raises(PersonNotFound):
            one(fresh, GetPerson(pid))
    actions = [e.action for e in fresh.store.audit()]
    assert (actions.count("enrol"), actions.count("delete")) == (counts["enrol"], counts["delete"])


# --- a store that is down ---------------------------------------------------------------------------


def test_a_stalled_store_refuses_writes_then_recovers(backend):
    """A writer that cannot get the store's write lock within busy_timeout_s gets
    StoreUnavailable (the ingress's 503), nothing half-written; once the lock is free
    the same write succeeds."""
    rng = np.random.default_rng(11)
    g = backend.gallery(busy_timeout_s=0.5)
    v = unit(rng.normal(size=DIM))
    with backend.write_lock_held():
        start = time.monotonic()
        (result,) = g.predict([Enrol(v[None], W, name="waits")])
        assert isinstance(result, GalleryFailure) and result.code == StoreUnavailable.code, result
        assert time.monotonic() - start < 5
    assert g.store.face_count() == 0 and one(g, ListPeople()).people == []
    person = enrol(g, v[None], name="waits")
    assert [m.person_id for m in search(g, v)[0]] == [person.person_id]


def test_an_unreachable_store_fails_at_start(backend, tmp_path, monkeypatch):
    if backend.name == "sqlite":
        (tmp_path / "a-file").write_text("not a directory")
        cfg = FaceGalleryConfig(store="sqlite", data_dir=str(tmp_path / "a-file" / "data"))
    else:
        from tests.helpers import free_port

        monkeypatch.setenv(DSN_ENV, f"postgresql://facegraph@127.0.0.1:{free_port()}/postgres")
        cfg = FaceGalleryConfig(store="postgresql", connect_timeout_s=2)
    with pytest.raises(StoreUnavailable):
        FaceGallery(cfg)


def test_postgres_down_then_back(backend):
    """The PostgreSQL server stops: every call is StoreUnavailable (searches too: the
    index might hold someone deleted meanwhile); it comes back: the same gallery
    reconnects and has everything."""
    if backend.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to stop")
    if backend.server is None:
        pytest.skip("the server is FACEGRAPH_TEST_DATABASE_URL's, not ours to stop")
    rng = np.random.default_rng(12)
    g = backend.gallery(connect_timeout_s=2)
    v = unit(rng.normal(size=DIM))
    person = enrol(g, v[None], name="kept")
    backend.server.stop_server()
    try:
        for item in (Search(v[None], W, THRESHOLD), Enrol(v[None], W), GetPerson(person.person_id)):
            (result,) = g.predict([item])
            assert isinstance(result, GalleryFailure) and result.code == StoreUnavailable.code, (item, result)
            assert "facegraph@" not in result.message  # the DSN never leaks into a message
    finally:
        backend.server.restart_server()
    assert [m.person_id for m in search(g, v)[0]] == [person.person_id]
    assert one(g, GetPerson(person.person_id)).name == "kept"


def test_dsn_from_a_mounted_secret_file(backend, tmp_path, monkeypatch):
    if backend.name != "postgresql":
        pytest.skip("PostgreSQL only")
    secret = tmp_path / "database-url"
    secret.write_text(backend.dsn + "\n")
    monkeypatch.delenv(DSN_ENV)
    monkeypatch.setenv(DSN_FILE_ENV, str(secret))
    g = backend.gallery(store="auto")
    assert g.describe()["backend"] == "postgresql"
    enrol(g, unit(np.ones(DIM))[None])


# --- real faces ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arcface_embeddings(asset, photos_dir):
    """{name: 128-d embedding} of the largest face of a few photos, by the test ArcFace."""
    from deployments.arcface.model import ArcFace, ArcFaceConfig
    from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
    from serve_app.faces.align import aligned_crops
    from serve_app.imaging import decode_image

    detector = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))
    arcface = ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))))
    out = {}
    crowd = []
    for name in ("lfw_Rob_Lowe_0001", "lfw_Rob_Lowe_0002", "lfw_Nathalie_Baye_0002", "facedet1mb_nine_kids"):
        image = decode_image((photos_dir / f"{name}.jpg").read_bytes())
        (faces,) = detector.predict([image])
        faces = sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        crops = np.stack([aligned_crops(image, f.points, (112,))[0] for f in faces])
        (emb,) = arcface.predict([crops])
        if name == "facedet1mb_nine_kids":
            crowd = emb
        else:
            out[name] = emb[0]
    return out, crowd


def test_real_faces_recognised_and_strangers_not(backend, arcface_embeddings):
    from serve_app.config.model_tier import recogniser_threshold

    faces, crowd = arcface_embeddings
    weights = "arcface-mobilefacenet-128d"
    threshold = recogniser_threshold(weights)
    g = backend.gallery()
    rob = enrol(g, faces["lfw_Rob_Lowe_0001"][None], name="Rob Lowe", weights=weights)
    enrol(g, faces["lfw_Nathalie_Baye_0002"][None], name="Nathalie Baye", weights=weights)
    (same,) = search(g, faces["lfw_Rob_Lowe_0002"], weights=weights, threshold=threshold)
    print(f"\nRob Lowe 0002 -> {[(m.name, round(m.similarity, 3)) for m in same]} (threshold {threshold})")
    assert [m.person_id for m in same][:1] == [rob.person_id]
    strangers = search(g, crowd, weights=weights, threshold=threshold)
    assert len(crowd) >= 5 and all(m == [] for m in strangers)


# --- the index on its own ------------------------------------------------------------------------


def test_index_ranks_people_not_faces():
    """One person with many faces closer to the probe than anyone else's must not
    crowd the others out of top_k: people are ranked by their best face."""
    from deployments.face_gallery.index import EmbeddingIndex

    rng = np.random.default_rng(14)
    probe = unit(rng.normal(size=DIM))
    index = EmbeddingIndex(DIM)
    index.set_person("many", "many", np.stack([near(probe, rng, 0.1) for _ in range(50)]))
    index.set_person("second", "second", near(probe, rng, 0.5)[None])
    index.set_person("third", "third", near(probe, rng, 0.8)[None])
    index.set_person("gone", "gone", probe[None])
    index.remove_person("gone")
    found = index.search(probe[None], top_k=3, threshold=0.0)[0]
    assert [m.person_id for m in found] == ["many", "second", "third"]
    assert found[0].similarity > found[1].similarity > found[2].similarity
    # A bulk load gives the same answers as faces added one person at a time.
    rows = []
    for person_id, name in ("many", "many"), ("second", "second"), ("third", "third"):
        slot = index.slot_of[person_id]
        for row in np.flatnonzero(index.owner[: index.used] == slot):
            rows.append((person_id, name, index.matrix[row].astype("<f4").tobytes()))
    loaded = EmbeddingIndex(DIM)
    loaded.load(rows)
    assert loaded.search(probe[None], top_k=3, threshold=0.0)[0] == found


def test_reembed_swaps_every_embedding_in_one_transaction(backend):
    """`facegraph gallery reembed`'s store step: every face gets an embedding from the new
    weights (another width here), replicas follow, the old weights are refused from then
    on, and a gallery with a face that kept no crop is refused whole, nothing changed."""
    rng = np.random.default_rng(7)
    g, replica = backend.gallery(keep_crops=True), backend.gallery(keep_crops=True)
    bases = unit(rng.normal(size=(2, DIM)))
    people = [
        enrol(g, np.stack([near(b, rng), near(b, rng)]), name=f"p{i}", crops=[b"a", b"b"]) for i, b in enumerate(bases)
    ]
    assert search(replica, bases[1])[0][0].person_id == people[1].person_id
    crops = g.store.face_crops()
    assert len(crops) == 4 and all(c in (b"a", b"b") for _, _, c in crops)

    # The new recogniser's 64-d space: each face moves near its owner's new direction.
    new_bases = unit(rng.normal(size=(2, 64)))
    index = {p.person_id: k for k, p in enumerate(people)}
    rows = {f: near(new_bases[index[pid]], rng).astype("<f4").tobytes() for f, pid, _ in crops}
    assert g.store.reembed(rows, "new-weights-64d", 64, actor="test") == 4

    found = search(replica, new_bases[0], weights="new-weights-64d")
    assert [m.person_id for m in found[0]] == [people[0].person_id]
    with pytest.raises(WeightsMismatch):
        search(replica, bases[0])
    assert [e.action for e in g.store.audit(people[0].person_id)] == ["enrol", "reembed"]

    enrol(g, near(new_bases[0], rng)[None], weights="new-weights-64d")  # no crop kept for this one
    with pytest.raises(InvalidRequest, match="1 faces of the gallery have no new embedding"):
        g.store.reembed(rows, "third-weights-64d", 64, actor="test")
    # Unchanged: still the new weights' gallery, the person still found (beside the newcomer).
    assert people[0].person_id in [m.person_id for m in search(replica, new_bases[0], weights="new-weights-64d")[0]]
