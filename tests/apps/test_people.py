"""Graph tests: the people app (/v1/people) over real HTTP on 127.0.0.1, with the
session's model tier (RetinaFace det_500m, ArcFace MobileFaceNet 128-d, FaceGallery on
SQLite in the session's FACEGRAPH_DATA_DIR: tests/conftest.py). No FACEGRAPH_API_KEY is
set, so the app generates its key into the data dir, where the test reads it."""

import base64
import os
from pathlib import Path

import httpx
import pytest

from serve_app.config.model_tier import MODELS
from tests.helpers import assert_error, ok

pytestmark = pytest.mark.graph

if "FaceGallery" not in MODELS:
    # Until the people gallery is wired into the model tier (its MODELS entry, serve_config.yaml, TEST_MODELS).
    pytest.skip("FaceGallery is not in the model tier's MODELS yet", allow_module_level=True)


@pytest.fixture(scope="module")
def url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.people import PeopleArgs, build
    from serve_app.pipelines.people import SPEC

    serve.run(build(PeopleArgs()), name=SPEC.name, route_prefix="/v1/people")
    yield serve_url + "/v1/people"
    serve.delete(SPEC.name)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def key(client, url) -> str:
    """The key the app generated on its first guarded request (0600 in the data dir)."""
    assert client.get(url).status_code == 401
    path = Path(os.environ["FACEGRAPH_DATA_DIR"]) / "api_key"
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


@pytest.fixture(scope="module")
def auth(key) -> dict:
    return {"Authorization": f"Bearer {key}"}


def created(resp) -> dict:
    """A 201 JSON answer whose request id is in the header and the body alike."""
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert resp.headers["x-request-id"] == body["request_id"]
    return body


def image(photos_dir, name) -> dict:
    return {"image_base64": base64.b64encode((photos_dir / name).read_bytes()).decode()}


def test_health_is_open_and_ready_names_the_gallery(client, url):
    assert client.get(url + "/health").status_code == 200
    ready = client.get(url + "/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"ArcFace": "ok", "FaceGallery": "ok", "RetinaFace": "ok"}


def test_every_route_needs_the_key(client, url, key):
    routes = [
        ("GET", "", None),
        ("POST", "", {"images": []}),
        ("GET", "/0123", None),
        ("DELETE", "/0123", None),
        ("POST", "/0123/faces", {"images": []}),
        ("POST", "/search", {"images": []}),
    ]
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"}):
        for method, path, body in routes:
            response = client.request(method, url + path, json=body, headers=header)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"
    # Refused before the body is read: 8 MB that are not JSON are a 401, not a 400 malformed_json.
    junk = b"{" * (8 * 1024 * 1024)
    huge = client.post(url + "/search", content=junk, headers={"Content-Type": "application/json"})
    assert_error(huge, 401, "unauthorized")


def test_enrol_search_add_forget(client, url, auth, photos_dir):
    enrolled = client.post(
        url,
        json={
            "name": "Rob Lowe",
            "metadata": {"album": "lfw"},
            "images": [image(photos_dir, "lfw_Rob_Lowe_0001.jpg"), image(photos_dir, "inspireface_view_noface.jpg")],
        },
        headers=auth,
    )
    body = created(enrolled)
    person_id = body["person_id"]
    assert (body["name"], body["faces_enrolled"], body["faces"]) == ("Rob Lowe", 1, 1)
    assert [(e["image_index"], e["error"]) for e in body["image_errors"]] == [(1, "no_face")]

    person = ok(client.get(f"{url}/{person_id}", headers=auth))
    assert (person["name"], person["metadata"], person["faces"]) == ("Rob Lowe", {"album": "lfw"}, 1)
    assert person["created_at"].endswith("+00:00")
    listed = ok(client.get(url, params={"limit": 100}, headers=auth))
    assert person_id in [p["person_id"] for p in listed["people"]]

    found = ok(
        client.post(
            url + "/search",
            json={
                "images": [image(photos_dir, "lfw_Rob_Lowe_0002.jpg"), image(photos_dir, "facedet1mb_nine_kids.jpg")]
            },
            headers=auth,
        )
    )
    assert found["similarity_threshold"] == 0.5  # the 128-d recogniser's calibrated threshold
    rob = [f for f in found["faces"] if f["image_index"] == 0]
    kids = [f for f in found["faces"] if f["image_index"] == 1]
    assert [m["person_id"] for m in rob[0]["matches"]] == [person_id] and rob[0]["matches"][0]["name"] == "Rob Lowe"
    assert len(kids) >= 5 and all(f["matches"] == [] for f in kids)

    more = ok(
        client.post(
            f"{url}/{person_id}/faces", json={"images": [image(photos_dir, "lfw_Rob_Lowe_0002.jpg")]}, headers=auth
        )
    )
    assert (more["faces_enrolled"], more["faces"]) == (1, 2)

    gone = client.delete(f"{url}/{person_id}", headers=auth)
    assert gone.status_code == 204 and gone.content == b""
    assert_error(client.get(f"{url}/{person_id}", headers=auth), 404, "person_not_found")
    assert_error(client.delete(f"{url}/{person_id}", headers=auth), 404, "person_not_found")
    again = ok(
        client.post(
            url + "/search",
            json={"images": [image(photos_dir, "lfw_Rob_Lowe_0002.jpg")], "similarity_threshold": -1},
            headers=auth,
        )
    )
    assert person_id not in [m["person_id"] for f in again["faces"] for m in f["matches"]]
    assert person_id not in [p["person_id"] for p in ok(client.get(url, params={"limit": 100}, headers=auth))["people"]]


def test_pages_and_bad_requests(client, url, auth, photos_dir):
    nathalie = [image(photos_dir, "lfw_Nathalie_Baye_0002.jpg")]
    ids = [
        created(client.post(url, json={"name": f"p{i}", "images": nathalie}, headers=auth))["person_id"]
        for i in range(3)
    ]
    seen, cursor = [], None
    while True:
        page = ok(client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth))
        seen += [p["person_id"] for p in page["people"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [i for i in seen if i in ids] == ids
    assert_error(client.get(url, params={"cursor": "garbage!"}, headers=auth), 422, "invalid_parameter")
    assert_error(client.get(url, params={"limit": 0}, headers=auth), 422, "invalid_parameter")
    search = {"images": nathalie}
    assert_error(client.post(url + "/search", json={**search, "top_k": 11}, headers=auth), 422, "invalid_parameter")
    big = {"metadata": {"x": "y" * 20000}, "images": search["images"]}
    assert_error(client.post(url, json=big, headers=auth), 422, "invalid_parameter")
    assert_error(client.post(url, json={"images": []}, headers=auth), 400, "no_images")
    nobody = client.post(url, json={"images": [image(photos_dir, "inspireface_view_noface.jpg")]}, headers=auth)
    assert_error(nobody, 422, "no_usable_face")
    unknown = client.post(url + "/0123456789abcdef/faces", json=search, headers=auth)
    assert_error(unknown, 404, "person_not_found")
    for person_id in ids:
        assert client.delete(f"{url}/{person_id}", headers=auth).status_code == 204


@pytest.fixture(scope="module")
def extract_url(serve_url, model_tier):
    from ray import serve

    from serve_app.apps.face_extract import FaceExtractArgs, build
    from serve_app.pipelines.face_extract import SPEC

    serve.run(build(FaceExtractArgs()), name=SPEC.name, route_prefix="/")
    yield serve_url + "/extract-faces"
    serve.delete(SPEC.name)


def test_extract_faces_match_people(client, url, extract_url, auth, key, photos_dir):
    rob = {"name": "Rob Lowe", "images": [image(photos_dir, "lfw_Rob_Lowe_0001.jpg")]}
    person_id = created(client.post(url, json=rob, headers=auth))["person_id"]
    two = {"images": [image(photos_dir, "lfw_Rob_Lowe_0002.jpg"), image(photos_dir, "lfw_Nathalie_Baye_0002.jpg")]}

    # Without match_people no key is needed and nobody is looked up.
    plain = ok(client.post(extract_url, json=two))
    assert plain["unique_faces"] == 2 and all(f["person"] is None for f in plain["faces"])
    # With it, the key /v1/people needs.
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"}):
        refused = client.post(extract_url, json={**two, "match_people": True}, headers=header)
        assert_error(refused, 401, "unauthorized")

    matched = ok(client.post(extract_url, json={**two, "match_people": True}, headers=auth))
    people = {f["image_index"]: f["person"] for f in matched["faces"]}
    assert set(people) == {0, 1}
    assert (people[0]["person_id"], people[0]["name"]) == (person_id, "Rob Lowe")
    assert matched["similarity_threshold"] <= people[0]["similarity"] <= 1
    assert people[1] is None  # Nathalie Baye was never enrolled

    assert client.delete(f"{url}/{person_id}", headers=auth).status_code == 204
    forgotten = ok(client.post(extract_url, json={**two, "match_people": True}, headers=auth))
    assert all(f["person"] is None for f in forgotten["faces"])
