"""Browser test of the demo page (GET /, serve_app/apps/demo.py): Debian's chromium driven
by Playwright (never Playwright's own browser download), against every pipeline app
deployed on the session's model tier (tests/conftest.py `model_tier`) over real HTTP on
127.0.0.1. Each pipeline gets a real image through the page's file input; the test
checks what the page draws (canvases that are not blank, with the boxes the answer
gave, the headshots, crops and renders loaded), the request id and time shown, and a
readable message for bad uploads. A full-page screenshot of every step is saved in
$FACEGRAPH_SCREENSHOTS when set, else in this test's pytest temporary folder (the path
is printed)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import assert_error

pytestmark = pytest.mark.graph

CHROMIUM = os.environ.get("FACEGRAPH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# No GPU, no sandbox (containers, root), nothing fetched from the network by the browser itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_MS = 60_000
# What the browser logs for every non-2xx answer and for a refused connection: the error
# tests' own doing, not the page's.
EXPECTED_CONSOLE = (
    "Failed to load resource: the server responded with a status of",
    "Failed to load resource: net::ERR_CONNECTION_REFUSED",
)

# app name -> route prefix, as in serve_config.yaml.
ROUTES = {
    "face_mask": "/v1/face-mask",
    "face_mask_sam2": "/v1/face-mask-sam2",
    "mask_augment": "/v1/mask-augment",
    "anonymize": "/v1/anonymize",
    "face_extract": "/",
    "people": "/v1/people",
}
# The page's drawing colours (serve_app/web/static/app.js BOX and DUP).
BOX_RGB, DUP_RGB = (255, 234, 0), (255, 61, 0)

# Per drawn canvas: its size, the boxes the page says it drew, how varied its pixels are
# (a blank or one-colour canvas has std 0 and one colour) and how many pixels have
# exactly the box colours (the stroked boxes).
CANVAS_STATS = """(canvases, [boxRgb, dupRgb]) => canvases.map((c) => {
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sum2 = 0, box = 0, dup = 0;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    if (r === boxRgb[0] && g === boxRgb[1] && b === boxRgb[2]) box++;
    if (r === dupRgb[0] && g === dupRgb[1] && b === dupRgb[2]) dup++;
    const y = 0.299 * r + 0.587 * g + 0.114 * b;
    sum += y; sum2 += y * y;
    if (i % 28 === 0) colours.add(((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3));
  }
  const n = data.length / 4, mean = sum / n;
  return {title: c.title, width: c.width, height: c.height, boxes: Number(c.dataset.boxes || 0),
          std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)), colours: colours.size, boxPixels: box, dupPixels: dup};
})"""

# Mean absolute difference of two same-size canvases, by title.
CANVAS_DIFF = """([a, b]) => {
  const get = (t) => { const c = [...document.querySelectorAll("canvas.drawn")].find((x) => x.title === t);
                       return c.getContext("2d").getImageData(0, 0, c.width, c.height).data; };
  const x = get(a), y = get(b);
  let d = 0;
  for (let i = 0; i < x.length; i += 1) if (i % 4 !== 3) d += Math.abs(x[i] - y[i]);
  return d / (x.length / 4 * 3);
}"""

IMAGES_LOADED = "(imgs) => imgs.map((i) => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))"


@pytest.fixture(scope="module")
def server(serve_url, model_tier):
    """Every pipeline app, as serve_config.yaml deploys them, with SAM2 unset: deployed
    together, and deleted together (one after another costs seconds each)."""
    from ray import serve

    from serve_app.apps import anonymize, face_extract, face_mask, face_mask_sam2, mask_augment, people

    builds = {
        "face_mask": face_mask.build(face_mask.FaceMaskArgs()),
        "face_mask_sam2": face_mask_sam2.build(face_mask_sam2.FaceMaskSam2Args(sam2={"url": ""})),
        "mask_augment": mask_augment.build(mask_augment.MaskAugmentArgs()),
        "anonymize": anonymize.build(anonymize.AnonymizeArgs(morphable_model_asset="tddfa-bfm-assembled")),
        "face_extract": face_extract.build(face_extract.FaceExtractArgs()),
        "people": people.build(people.PeopleArgs()),
    }
    start = time.monotonic()
    serve.run_many([serve.RunTarget(app, name=name, route_prefix=ROUTES[name]) for name, app in builds.items()])
    print(f"\ndemo page: {len(builds)} pipeline apps up in {time.monotonic() - start:.1f} s")
    yield serve_url
    for name in builds:
        serve.delete(name, _blocking=False)
    deadline = time.monotonic() + 60
    while set(builds) & set(serve.status().applications) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FACEGRAPH_SCREENSHOTS") or tmp_path_factory.mktemp("demo-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndemo page screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's chromium with apt-get "
            "when it runs as root; without apt-get, install it by hand or set FACEGRAPH_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(RUN_TIMEOUT_MS)
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and not msg.text.startswith(EXPECTED_CONSOLE)
            else None
        ),
    )
    page.goto(server + "/")
    # The page asks each app's health route which pipelines this server has.
    page.wait_for_function("document.getElementById('pipeline-health').textContent === 'deployed'")
    page.problems = problems
    yield page
    page.close()


def run(page, pipeline: str, files: list[Path], answered: bool = True, **options):
    """Choose `pipeline`, the files and the options on the page, press Run and wait for
    this run to finish. -> the endpoint's HTTP response (Playwright's), or None when
    nothing answered (`answered=False`) or the page refused before sending anything."""
    page.select_option("#pipeline", pipeline)
    page.set_input_files("#image", [str(f) for f in files])
    for name, value in options.items():
        field = f"#opt-{name}"
        if isinstance(value, bool):
            page.set_checked(field, value)
        elif page.eval_on_selector(field, "e => e.tagName") == "SELECT":
            page.select_option(field, value)
        else:
            page.fill(field, str(value))
    number = int(page.get_attribute("body", "data-run")) + 1
    response = None
    if files and answered:
        with page.expect_response(lambda r: r.request.method == "POST", timeout=RUN_TIMEOUT_MS) as answer:
            page.click("#run")
        response = answer.value
    else:
        page.click("#run")
    page.wait_for_selector(f'body[data-run="{number}"]:is([data-state="done"], [data-state="error"])', state="attached")
    return response


def shown(page) -> dict:
    return {key: page.inner_text(f"#{key}") for key in ("status", "request-id", "elapsed")}


def check_success(page, response, shots: Path, name: str) -> dict:
    """The run succeeded and the page shows its request id and time; a screenshot. -> the answer."""
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#error")
    assert page.is_hidden("#error")
    body = response.json()
    assert response.status == 200
    meta = shown(page)
    assert meta["request-id"] == body["request_id"] == response.headers["x-request-id"], meta
    assert re.fullmatch(r"\d+ ms( \(server: \d+ ms\))?", meta["elapsed"]), meta
    assert meta["status"].startswith("HTTP 200"), meta
    loaded = page.eval_on_selector_all("#result img", IMAGES_LOADED)
    assert loaded and all(i["ok"] for i in loaded), loaded
    assert not page.problems, page.problems
    return body


def canvases(page) -> list[dict]:
    stats = page.eval_on_selector_all("#result canvas.drawn", CANVAS_STATS, [BOX_RGB, DUP_RGB])
    for c in stats:  # not blank: a picture, not one flat colour
        assert c["width"] > 0 and c["std"] > 10 and c["colours"] > 50, c
        assert (c["boxPixels"] + c["dupPixels"] > 0) == (c["boxes"] > 0), c
    return stats


def test_the_page_and_its_files_are_served(server):
    with httpx.Client(timeout=30) as client:
        page = client.get(server + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/demo/app.js"' in page.text
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            resp = client.get(f"{server}/demo/{name}")
            assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind), name
        assert_error(client.get(server + "/demo/../pyproject.toml"), 404)
        assert_error(client.get(server + "/demo/index.py"), 404, "not_found")


def test_the_options_follow_each_pipelines_parameters_model(page):
    """The page restates no limit, default or choice: it reads them from each app's
    OpenAPI schema, i.e. from the pipeline's parameters model."""
    from serve_app.faces.mask_painting import MASK_TYPES
    from serve_app.pipelines.face_mask import FaceMaskParams
    from serve_app.pipelines.mask_augment import MaskAugmentParams

    page.select_option("#pipeline", "face-mask")
    field = FaceMaskParams.model_fields["threshold"]
    limits = {m.__class__.__name__: m for m in field.metadata}
    assert field.description == "probability cut-off for the binary mask"  # the label, capitalised
    threshold = page.eval_on_selector(
        "#opt-threshold", "e => [e.min, e.max, e.value, e.type, e.parentElement.textContent]"
    )
    label = field.description[0].upper() + field.description[1:]
    assert threshold == [str(int(limits["Ge"].ge)), str(int(limits["Le"].le)), str(field.default), "number", label]
    assert page.is_checked("#opt-include_hair") is FaceMaskParams.model_fields["include_hair"].default
    page.select_option("#pipeline", "mask-augment")
    choices = lambda sel: page.eval_on_selector_all(f"{sel} option", "os => os.map((o) => o.value)")  # noqa: E731
    assert choices("#opt-mask_types") == ["all", *MASK_TYPES]
    assert choices("#opt-crop_style") == list(MaskAugmentParams.model_fields["crop_style"].annotation.__args__)
    assert page.input_value("#opt-seed") == ""  # no default: the server derives one
    assert not page.problems, page.problems


def test_cartoon_mask_draws_the_overlay_and_boxes(page, shots, cartoon_dir):
    response = run(page, "face-mask", [cartoon_dir / "kanosawa_anime_5faces.png"], include_hair=True)
    body = check_success(page, response, shots, "1-face-mask")
    assert len(body["boxes"]) >= 3  # the LBP detector finds most of the five
    (overlay,) = canvases(page)
    assert (overlay["width"], overlay["height"]) == (body["width"], body["height"])
    assert overlay["boxes"] == len(body["boxes"])
    assert page.locator("#result img.mask").count() == 1
    assert page.inner_text("#result h2").startswith(f"Mask overlay · {len(body['boxes'])} faces")


def test_sam2_mask_says_where_each_mask_came_from(page, shots, photos_dir):
    response = run(page, "face-mask-sam2", [photos_dir / "3ddfa_trump_hillary.jpg"], max_num_faces=5)
    body = check_success(page, response, shots, "2-face-mask-sam2")
    assert len(body["faces"]) == 2
    (overlay,) = canvases(page)
    assert overlay["boxes"] == 2
    rows = page.locator("#result table tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).inner_text().split("\t")[1:3] == ["polygon", "not configured"]


def test_face_extraction_shows_headshots_grouped_by_person(page, shots, photos_dir):
    files = [photos_dir / n for n in ("lfw_Rob_Lowe_0001.jpg", "lfw_Nathalie_Baye_0002.jpg", "lfw_Rob_Lowe_0002.jpg")]
    response = run(page, "extract-faces", files, similarity_threshold=0.4)
    body = check_success(page, response, shots, "3-extract-faces")
    assert response.url.endswith("/extract-faces")
    merged = sum(len(f["duplicates"]) for f in body["faces"])
    assert body["unique_faces"] == 2 and merged == 1  # Rob Lowe twice, one person
    drawn = canvases(page)
    assert len(drawn) == 3 and [c["boxes"] for c in drawn] == [1, 1, 1]
    assert sum(c["dupPixels"] > 0 for c in drawn) == 1  # his second photo, boxed as "again"
    assert page.locator("#result .person").count() == 2
    assert page.locator("#result .person img.headshot").count() == 2
    assert page.locator("#result .person canvas.duplicate").count() == 1
    headshots = page.eval_on_selector_all("#result img.headshot", IMAGES_LOADED)
    assert {h["w"] for h in headshots} == {160}
    assert re.fullmatch(r"\d+ ms \(server: \d+ ms\)", shown(page)["elapsed"])


def test_mask_augmentation_shows_masked_copies_and_crops(page, shots, photos_dir):
    response = run(
        page,
        "mask-augment",
        [photos_dir / "lfw_Rob_Lowe_0001.jpg"],
        n_augmentations=2,
        seed=7,
        crop_style="all",
        mask_types="surgical",
    )
    body = check_success(page, response, shots, "4-mask-augment")
    assert body["seed"] == 7 and len(body["faces"]) == 1
    drawn = canvases(page)
    assert [c["boxes"] for c in drawn] == [1, 1]
    assert page.locator("#result img.crop").count() == 2 * 3  # two augmentations, three crop styles
    assert "surgical" in page.inner_text("#result .crops")


def test_anonymisation_shows_the_anonymised_picture(page, shots, photos_dir):
    response = run(page, "anonymize", [photos_dir / "lfw_Rob_Lowe_0001.jpg"])
    body = check_success(page, response, shots, "5-anonymize")
    assert len(body["faces"]) == 1
    original, anonymised = canvases(page)
    assert (original["boxes"], anonymised["boxes"]) == (0, 1)
    # The face really changed: the two pictures differ by more than the box outline.
    assert page.evaluate(CANVAS_DIFF, ["original", "anonymised"]) > 1.0
    assert page.locator("#result img.render").count() == 1


def test_people_enrol_then_search_draws_names(page, shots, server, photos_dir):
    """The people pipelines: refused without the key, then a face enrolled under a name
    and found again in another photo, the name drawn on it; a stranger stays unknown."""
    key = (Path(os.environ["FACEGRAPH_DATA_DIR"]) / "api_key").read_text().strip()
    rob1, rob2, nathalie = (
        photos_dir / n for n in ("lfw_Rob_Lowe_0001.jpg", "lfw_Rob_Lowe_0002.jpg", "lfw_Nathalie_Baye_0002.jpg")
    )

    response = run(page, "people-search", [rob2])
    assert response.status == 401
    assert page.inner_text("#error").startswith("This pipeline needs the API key")

    page.fill("#api-key", key)
    response = run(page, "people-enrol", [rob1], name="Rob Demo")
    page.screenshot(path=str(shots / "10-people-enrol.png"), full_page=True)
    assert response.status == 201, response.text()
    person_id = response.json()["person_id"]
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#error")
    assert page.inner_text("#result h2").startswith("Enrolled · Rob Demo · 1 face added")
    assert person_id in page.inner_text("#result")
    assert shown(page)["request-id"] == response.json()["request_id"]

    page.select_option("#pipeline", "people-search")  # the key stays typed in across pipelines
    assert page.input_value("#api-key") == key
    response = run(page, "people-search", [rob2, nathalie])
    page.screenshot(path=str(shots / "11-people-search.png"), full_page=True)
    assert response.status == 200
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#error")
    drawn = canvases(page)
    assert [c["boxes"] for c in drawn] == [1, 1]
    rows = [r.split("\t") for r in page.locator("#result table tbody tr").all_inner_texts()]
    assert [r[:2] for r in rows] == [["1", "Rob Demo"], ["2", "unknown"]], rows
    assert page.inner_text("#result h2").startswith("People found · 1 of 2 faces known")
    assert not page.problems, page.problems

    with httpx.Client(timeout=30) as client:
        gone = client.delete(f"{server}/v1/people/{person_id}", headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 204


def test_errors_are_shown_readably(page, shots, tmp_path, photos_dir):
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all\n" * 20)

    response = run(page, "face-mask", [text])
    page.screenshot(path=str(shots / "6-error-text-file.png"), full_page=True)
    assert response.status == 415
    body = response.json()
    assert page.get_attribute("body", "data-state") == "error"
    message = page.inner_text("#error")
    assert message.startswith("This file is not an image the server reads.") and "unsupported_format" in message
    assert body["message"] in message
    assert shown(page)["request-id"] == body["request_id"]
    assert shown(page)["status"] == "failed · HTTP 415"
    assert page.locator("#result canvas").count() == 0

    # An option out of range: the server's 422 names the field.
    response = run(page, "anonymize", [photos_dir / "lfw_Rob_Lowe_0001.jpg"], alpha=5)
    assert response.status == 422
    message = page.inner_text("#error")
    assert message.startswith("An option is out of range.") and "alpha" in message, message
    page.screenshot(path=str(shots / "7-error-option.png"), full_page=True)

    # Face extraction answers 200 with per-image errors: with no usable image, still an error.
    response = run(page, "extract-faces", [text])
    assert response.status == 200 and response.json()["images_processed"] == 0
    assert page.get_attribute("body", "data-state") == "error"
    assert "notes.txt" in page.inner_text("#error") and "unsupported_format" in page.inner_text("#error")
    page.screenshot(path=str(shots / "8-error-extraction.png"), full_page=True)

    # Nothing chosen: the page says so without a request.
    run(page, "face-mask", [])
    assert page.inner_text("#error") == "Choose an image first."
    assert not page.problems, page.problems


def test_a_pipeline_missing_or_unreachable_is_said_so(page, shots, server, photos_dir):
    from ray import serve

    photo = [photos_dir / "lfw_Rob_Lowe_0001.jpg"]
    # The network fails under the page (what a dropped connection looks like to it).
    page.route("**/v1/face-mask-sam2", lambda route: route.abort("connectionrefused"))
    run(page, "face-mask-sam2", photo, answered=False)
    page.unroute("**/v1/face-mask-sam2")
    assert page.inner_text("#error").startswith("Could not reach the server.")

    # A server without the cartoon mask app: "/" (face_extract) answers its path with the
    # error shape's 404, and the page, reloaded, marks the pipeline as not deployed.
    serve.delete("face_mask")
    response = run(page, "face-mask", photo)
    assert response.status == 404
    assert page.inner_text("#error").startswith("This pipeline is not deployed on this server.")
    page.reload()
    page.wait_for_function("document.getElementById('pipeline-health').textContent !== 'checking…'")
    labels = page.eval_on_selector_all("#pipeline option", "os => os.map((o) => o.textContent)")
    assert labels[0] == "Cartoon face mask (not deployed)" and labels[1] == "Face mask with SAM2", labels
    page.screenshot(path=str(shots / "9-not-deployed.png"), full_page=True)
    assert not page.problems, page.problems
