"""The people pipeline glue in-process: real RetinaFace and ArcFace (test weights) and a
real FaceGallery on SQLite, each behind LocalBatcher (a Serve handle's call shape).
Enrol from photos (the largest face of each; no face and tiny faces refused per
image), search group photos, add faces, forget, and the gallery's failures as the
shared error shape."""

import asyncio
import sqlite3

import numpy as np
import pytest

from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.face_gallery.model import DeletePerson, FaceGallery, FaceGalleryConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from serve_app import errors
from serve_app.config.model_tier import recogniser_threshold
from serve_app.imaging import decode_image
from serve_app.pipelines.people import (
    PeopleParams,
    SearchParams,
    add_person_faces,
    call_gallery,
    enrol_person,
    largest_faces,
    match_faces,
    search_people,
)

WEIGHTS = "arcface-mobilefacenet-128d"


@pytest.fixture(scope="module")
def recognition(asset):
    return (
        LocalBatcher(RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))),
        LocalBatcher(ArcFace(ArcFaceConfig(model_path=str(asset(WEIGHTS))))),
    )


@pytest.fixture
def gallery(tmp_path):
    g = FaceGallery(FaceGalleryConfig(store="sqlite", data_dir=str(tmp_path / "data"), keep_crops=True))
    yield g
    g.close()


def photo(photos_dir, name):
    async def load():
        return decode_image((photos_dir / name).read_bytes())

    return load


def run(coro):
    return asyncio.run(coro)


def enrol(recognition, gallery, photos_dir, names, person="someone", params=PeopleParams()):
    detect, embed = recognition
    found = run(largest_faces([photo(photos_dir, n) for n in names], params, detect, embed))
    record = run(enrol_person(found, LocalBatcher(gallery), WEIGHTS, person, {"source": "test"}, "key:test"))
    return found, record


def search(recognition, gallery, photos_dir, names, **params):
    detect, embed = recognition
    threshold = params.pop("threshold", recogniser_threshold(WEIGHTS))
    return run(
        search_people(
            [photo(photos_dir, n) for n in names],
            SearchParams(**params),
            detect,
            embed,
            LocalBatcher(gallery),
            WEIGHTS,
            threshold,
        )
    )


def test_enrol_takes_the_largest_face_and_says_why_an_image_gave_none(recognition, gallery, photos_dir):
    found, record = enrol(
        recognition,
        gallery,
        photos_dir,
        ["lfw_Rob_Lowe_0001.jpg", "inspireface_view_noface.jpg", "3ddfa_trump_hillary.jpg"],
    )
    assert found.image_indexes == [0, 2] and [(f.image_index, f.code) for f in found.failures] == [(1, "no_face")]
    assert (record.name, record.faces, record.metadata) == ("someone", 2, {"source": "test"})
    assert len(gallery.store.crops(record.person_id)) == 2  # the aligned headshots, as asked (keep_crops)
    # Trump and Clinton are about the same size in that photo: the larger one was taken,
    # and searching the photo finds this person on exactly one of its two faces.
    faces = search(recognition, gallery, photos_dir, ["3ddfa_trump_hillary.jpg"]).faces
    assert sorted(len(f.matches) for f in faces) == [0, 1]


def test_faces_under_the_quality_floor_are_refused_for_that_image(recognition, gallery, photos_dir):
    detect, embed = recognition
    strict = PeopleParams(quality_min_face_size=2000)  # no face in these photos is that large
    found = run(largest_faces([photo(photos_dir, "lfw_Rob_Lowe_0001.jpg")], strict, detect, embed))
    assert [f.code for f in found.failures] == ["low_quality_face"] and len(found.embeddings) == 0
    with pytest.raises(errors.ApiError) as caught:
        run(enrol_person(found, LocalBatcher(gallery), WEIGHTS, "nobody", {}, "key:test"))
    assert (caught.value.status, caught.value.code) == (422, "no_usable_face")
    assert "images[0]: low_quality_face" in caught.value.message


def test_search_lists_every_face_and_matches_only_people_above_the_threshold(recognition, gallery, photos_dir):
    _, rob = enrol(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0001.jpg"], person="Rob Lowe")
    enrol(recognition, gallery, photos_dir, ["lfw_Nathalie_Baye_0002.jpg"], person="Nathalie Baye")
    result = search(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0002.jpg", "facedet1mb_nine_kids.jpg"], top_k=3)
    rob_faces = [f for f in result.faces if f.image_index == 0]
    kids = [f for f in result.faces if f.image_index == 1]
    assert [m.person_id for m in rob_faces[0].matches][:1] == [rob.person_id]
    assert rob_faces[0].matches[0].similarity >= result.threshold
    assert len(kids) >= 5 and all(f.matches == [] for f in kids)  # strangers: listed, matched to nobody
    # With a low threshold everyone matches someone, except faces under the quality floor.
    loose = search(recognition, gallery, photos_dir, ["facedet1mb_nine_kids.jpg"], threshold=-1.0, top_k=2)
    assert all(len(f.matches) == 2 for f in loose.faces if not f.low_quality)
    strict = search(recognition, gallery, photos_dir, ["facedet1mb_nine_kids.jpg"], quality_min_face_size=2000)
    assert all(f.low_quality and f.matches == [] for f in strict.faces)


def test_add_faces_then_forget(recognition, gallery, photos_dir):
    detect, embed = recognition
    _, rob = enrol(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0001.jpg"], person="Rob Lowe")
    more = run(largest_faces([photo(photos_dir, "lfw_Rob_Lowe_0002.jpg")], PeopleParams(), detect, embed))
    grown = run(add_person_faces(more, LocalBatcher(gallery), WEIGHTS, rob.person_id, "key:test"))
    assert grown.faces == 2
    assert search(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0002.jpg"]).faces[0].matches[0].similarity > 0.99
    run(call_gallery(LocalBatcher(gallery), DeletePerson(rob.person_id, "key:test")))
    assert search(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0002.jpg"], threshold=-1.0).faces[0].matches == []
    assert gallery.store.crops(rob.person_id) == []
    with pytest.raises(errors.ApiError) as caught:
        run(add_person_faces(more, LocalBatcher(gallery), WEIGHTS, rob.person_id, "key:test"))
    assert (caught.value.status, caught.value.code) == (404, "person_not_found")


def test_gallery_failures_as_the_error_shape(recognition, tmp_path, photos_dir):
    gallery = FaceGallery(FaceGalleryConfig(store="sqlite", data_dir=str(tmp_path / "data"), busy_timeout_s=0.3))
    found, _ = enrol(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0001.jpg"])
    with pytest.raises(errors.ApiError) as caught:  # embeddings from other weights
        run(enrol_person(found, LocalBatcher(gallery), "arcface-w600k-r50", "x", {}, "key:test"))
    assert (caught.value.status, caught.value.code) == (409, "weights_mismatch")
    # Another process holds the store's write lock past the busy timeout: 503, retry later.
    blocker = sqlite3.connect(gallery.store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(errors.ApiError) as caught:
            run(enrol_person(found, LocalBatcher(gallery), WEIGHTS, "x", {}, "key:test"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        gallery.close()
    assert (caught.value.status, caught.value.code) == (503, "store_unavailable")
    assert caught.value.headers == {"Retry-After": "5"}


def test_match_faces_for_extract_faces(recognition, gallery, photos_dir):
    """/extract-faces' match_people: the best match per face, None for nobody and for a
    face under the quality floor."""
    _, rob = enrol(recognition, gallery, photos_dir, ["lfw_Rob_Lowe_0001.jpg"], person="Rob Lowe")
    detect, embed = recognition
    found = run(
        largest_faces(
            [photo(photos_dir, n) for n in ("lfw_Rob_Lowe_0002.jpg", "lfw_Nathalie_Baye_0002.jpg")],
            PeopleParams(),
            detect,
            embed,
        )
    )
    threshold = recogniser_threshold(WEIGHTS)
    best = run(match_faces(found.embeddings, np.array([True, True]), LocalBatcher(gallery), WEIGHTS, threshold))
    assert best[0].person_id == rob.person_id and best[1] is None
    skipped = run(match_faces(found.embeddings, np.array([False, True]), LocalBatcher(gallery), WEIGHTS, threshold))
    assert skipped == [None, None]
