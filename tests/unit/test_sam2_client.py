"""The SAM2 client against a real HTTP stand-in on 127.0.0.1 (tests/sam2_standin.py):
every accepted answer format, and every way the service can fail."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import cv2
import numpy as np
import pytest

import serve_app.clients.sam2 as sc
from serve_app.clients.sam2 import Sam2Client, parse_response
from serve_app.config.settings import Sam2Config
from serve_app.faces.prompts import FacePrompt
from tests.helpers import free_port
from tests.sam2_standin import Sam2StandIn, ellipse_mask

H, W = 120, 160
IMAGE = np.dstack([np.tile(np.arange(W, dtype=np.uint8), (H, 1))] * 3)
BOX = (30, 20, 110, 100)
PROMPT = FacePrompt(BOX, ((70.0, 60.0, 1), (60.0, 50.0, 1), (10.0, 10.0, 0)))
EXPECTED = ellipse_mask(H, W, BOX).astype(bool)


@pytest.fixture
def standin():
    with Sam2StandIn() as server:
        yield server


def segment(cfg: Sam2Config, prompts=(PROMPT,), image=IMAGE, multimask=True):
    async def go():
        client = Sam2Client(cfg)
        try:
            return await client.segment(image, list(prompts), multimask)
        finally:
            await client.aclose()

    return asyncio.run(go())


def timed(fn, *args, **kw):
    start = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - start


@pytest.mark.parametrize(
    "mode", ["png", "png01", "rle", "rle_list", "masks", "masks_noscores", "masks_prob", "masks_bool"]
)
def test_each_accepted_format_gives_the_prompted_mask(standin, mode):
    [out] = segment(Sam2Config(url=f"{standin.url}/{mode}"))
    assert out.reason is None and out.mask.dtype == bool
    np.testing.assert_array_equal(out.mask, EXPECTED)


def test_mask_of_another_size_is_resized_to_the_image(standin):
    [out] = segment(Sam2Config(url=f"{standin.url}/png_half"))
    assert out.mask.shape == (H, W)
    iou = (out.mask & EXPECTED).sum() / (out.mask | EXPECTED).sum()
    assert iou > 0.95


def test_request_carries_prompts_in_the_configured_fields():
    fields = {"image": "img", "points": "pts", "box": "bbox", "multimask": "multi", "return_prob": "probs"}
    with Sam2StandIn(fields=fields) as server:
        cfg = Sam2Config(
            url=server.url,
            image_field="img",
            points_field="pts",
            box_field="bbox",
            multimask_field="multi",
            return_prob_field="probs",
        )
        [out] = segment(cfg, multimask=False)
        assert out.reason is None
        [req] = server.received
        assert req["keys"] == sorted(fields.values())
        assert req["box"] == list(BOX)
        assert req["points"] == [list(p) for p in PROMPT.points]
        assert req["multimask"] is False and req["image_shape"] == (H, W, 3)
        # With the default names the stand-in refuses (400): the names really travel.
        [bad] = segment(Sam2Config(url=server.url))
        assert bad.reason == sc.REJECTED


def test_bearer_token_is_sent_and_a_refusal_is_not_retried():
    with Sam2StandIn(mode="auth", token="s3cret") as server:
        [ok] = segment(Sam2Config(url=server.url, api_key="s3cret"))
        assert ok.reason is None
        assert server.received[0]["auth"] == "Bearer s3cret"
        [refused] = segment(Sam2Config(url=server.url, api_key="wrong", retries=3))
        [anonymous] = segment(Sam2Config(url=server.url, retries=3))
        assert refused.reason == anonymous.reason == sc.AUTH_REFUSED
        assert refused.mask is None and server.calls() == 3  # one call each


def test_5xx_is_retried_a_bounded_number_of_times(standin):
    [out] = segment(Sam2Config(url=f"{standin.url}/error500", retries=2))
    assert out.mask is None and out.reason == sc.SERVER_ERROR
    assert standin.calls("error500") == 3


def test_a_transient_5xx_recovers_on_retry():
    with Sam2StandIn(mode="flaky", fail_first=1) as server:
        [out] = segment(Sam2Config(url=server.url, retries=2))
        assert out.reason is None and server.calls() == 2
        np.testing.assert_array_equal(out.mask, EXPECTED)


@pytest.mark.parametrize("mode", ["garbage", "wrong_json", "bad_rle"])
def test_garbage_is_an_invalid_response_and_not_retried(standin, mode):
    [out] = segment(Sam2Config(url=f"{standin.url}/{mode}", retries=2))
    assert out.mask is None and out.reason == sc.INVALID_RESPONSE
    assert standin.calls(mode) == 1


def test_empty_mask_and_4xx(standin):
    [empty] = segment(Sam2Config(url=f"{standin.url}/empty"))
    [refused] = segment(Sam2Config(url=f"{standin.url}/bad_request", retries=2))
    assert empty.reason == sc.EMPTY_MASK and refused.reason == sc.REJECTED
    assert standin.calls("bad_request") == 1


def test_slow_answer_times_out_without_waiting_for_it():
    with Sam2StandIn(mode="slow", slow_s=4.0) as server:
        outs, elapsed = timed(segment, Sam2Config(url=server.url, timeout_s=0.5, retries=2))
    assert outs[0].mask is None and outs[0].reason == sc.TIMEOUT
    assert elapsed < 0.5 + 2.0  # generous margin; the answer would take 4 s


def test_one_deadline_covers_every_face_and_queueing():
    # 6 faces, 2 at a time, each answer slower than the timeout: all time out
    # together, not one timeout per queued pair.
    with Sam2StandIn(mode="slow", slow_s=3.0) as server:
        cfg = Sam2Config(url=server.url, timeout_s=0.6, concurrency=2)
        outs, elapsed = timed(segment, cfg, prompts=[PROMPT] * 6)
        assert [o.reason for o in outs] == [sc.TIMEOUT] * 6
        assert elapsed < 0.6 + 2.0
        assert server.max_in_flight <= 2


def test_refused_connection_is_unreachable_and_retried_quickly():
    cfg = Sam2Config(url=f"http://127.0.0.1:{free_port()}", retries=2, timeout_s=5.0)
    [out], elapsed = timed(segment, cfg)
    assert out.mask is None and out.reason == sc.UNREACHABLE
    assert elapsed < 3.0  # backoff 0.2 + 0.4 s, not the 5 s timeout


def test_connection_dropped_without_answer_is_unreachable(standin):
    [out] = segment(Sam2Config(url=f"{standin.url}/drop", retries=1))
    assert out.reason == sc.UNREACHABLE and standin.calls("drop") == 2


def test_unset_url_falls_back_without_any_call():
    outs = segment(Sam2Config(url=""), prompts=[PROMPT, PROMPT])
    assert [o.reason for o in outs] == [sc.NOT_CONFIGURED] * 2


def test_image_mode_encodes_the_image_once_and_prompts_faces_concurrently(standin):
    second = FacePrompt((90, 10, 150, 70), ((120.0, 40.0, 1),))
    outs = segment(Sam2Config(url=standin.url, concurrency=4), prompts=[PROMPT, second])
    assert [o.reason for o in outs] == [None, None]
    np.testing.assert_array_equal(outs[1].mask, ellipse_mask(H, W, second.box).astype(bool))
    lengths = {r["image_b64_len"] for r in standin.received}
    shapes = {r["image_shape"] for r in standin.received}
    assert len(standin.received) == 2 and len(lengths) == 1 and shapes == {(H, W, 3)}


def test_image_is_encoded_once_per_call(standin, monkeypatch):
    encodes = []
    real = sc._encode_b64_png
    monkeypatch.setattr(sc, "_encode_b64_png", lambda img: encodes.append(img.shape) or real(img))
    segment(Sam2Config(url=standin.url), prompts=[PROMPT] * 4)
    assert encodes == [(H, W, 3)]


def test_crop_mode_sends_a_crop_per_face_and_pastes_the_mask_back(standin):
    [out] = segment(Sam2Config(url=standin.url, send="crop"))
    [req] = standin.received
    hgt, wid = req["image_shape"][:2]
    assert hgt < H or wid < W  # a crop, not the image
    assert out.mask.shape == (H, W)
    iou = (out.mask & EXPECTED).sum() / (out.mask | EXPECTED).sum()
    assert iou > 0.99


def test_breaker_stops_calling_a_failing_service_then_tries_again(standin):
    client = Sam2Client(Sam2Config(url=standin.url, retries=0, breaker_failures=2, breaker_cooldown_s=0.5))

    def call():
        return asyncio.run(client.segment(IMAGE, [PROMPT]))[0]

    standin.mode = "error500"
    assert [call().reason for _ in range(2)] == [sc.SERVER_ERROR] * 2
    skipped = call()  # open: answered at once, without a request
    assert skipped.reason == sc.SERVER_ERROR and "not called" in skipped.detail
    assert standin.calls() == 2
    time.sleep(0.6)
    standin.mode = "png"
    assert call().reason is None and standin.calls() == 3  # half-open: tried, and closed
    standin.mode = "error500"
    assert call().reason == sc.SERVER_ERROR and call().reason == sc.SERVER_ERROR
    assert standin.calls() == 5  # one success reset the count


def test_useless_answers_do_not_trip_the_breaker(standin):
    client = Sam2Client(Sam2Config(url=f"{standin.url}/garbage", retries=0, breaker_failures=1))
    for _ in range(3):
        assert asyncio.run(client.segment(IMAGE, [PROMPT]))[0].reason == sc.INVALID_RESPONSE
    assert standin.calls() == 3


def test_client_survives_a_new_event_loop(standin):
    # Batch workers run one event loop per block with the same client object.
    client = Sam2Client(Sam2Config(url=standin.url))
    for _ in range(2):
        [out] = asyncio.run(client.segment(IMAGE, [PROMPT]))
        assert out.reason is None


# ---- parse_response on its own ------------------------------------------------------


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def test_rle_is_column_major_starting_with_background():
    # 2x3, column-major flat = [0, 1, 1, 0, 0, 0] -> pixels (1,0) and (0,1) are on.
    mask = parse_response(body({"mask_rle": {"counts": [1, 2, 3], "size": [2, 3]}}), 2, 3)
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])
    # A mask that starts with foreground has a leading zero-length background run.
    mask = parse_response(body({"mask_rle": [[0, 1, 5], [2, 3]]}), 2, 3)
    assert mask[0, 0] and mask.sum() == 1


def test_png_data_uri_and_0_1_values_are_accepted():
    ok, buf = cv2.imencode(".png", EXPECTED.astype(np.uint8))
    uri = "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()
    np.testing.assert_array_equal(parse_response(body({"mask_png_base64": uri}), H, W), EXPECTED)


@pytest.mark.parametrize(
    "doc",
    [
        [1, 2, 3],
        {"mask_png_base64": 12},
        {"mask_png_base64": "bm90IGFuIGltYWdl"},
        {"mask_png_base64": "***"},
        {"mask_rle": {"counts": "abc", "size": [2, 3]}},  # compressed COCO strings: not accepted
        {"mask_rle": {"counts": [1, 2, 3], "size": [2, 2]}},
        {"mask_rle": {"counts": [-1, 7], "size": [2, 3]}},
        {"mask_rle": [[1, 2, 3]]},
        {"masks": []},
        {"masks": [[0, 1, 0]]},  # 1-D
        {"masks": [[[0, 1], [1]]]},  # ragged
        {"masks": [[[0, 2], [1, 0]]]},  # outside 0..1
        {"masks": [[["a", "b"]]]},
        {"masks": [[[0, 1]], [[1, 1]]], "scores": [0.5]},
        {"masks": [[[0, 1]]], "scores": ["high"]},
        {"mask": "close but no"},
    ],
)
def test_anything_else_is_invalid(doc):
    with pytest.raises(sc.InvalidResponse):
        parse_response(body(doc), 2, 3)


def test_not_json_is_invalid():
    with pytest.raises(sc.InvalidResponse):
        parse_response(b"\xff\xfe<html>", 2, 3)


def test_config_from_env_with_overrides(monkeypatch):
    for env in Sam2Config.env_names().values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("SAM2_TIMEOUT", "3.5")
    monkeypatch.setenv("SAM2_IMAGE_FIELD", "img")
    # None overrides leave the environment's value; others win over it.
    cfg = Sam2Config.from_env(url="http://x", timeout_s=None, send="crop")
    assert cfg.url == "http://x" and cfg.timeout_s == 3.5 and cfg.send == "crop"
    assert cfg.image_field == "img" and cfg.points_field == "points"  # unset: the model's default
    with pytest.raises(ValueError):
        Sam2Config(send="both")
    with pytest.raises(ValueError):
        Sam2Config(url="sam2.internal:8080")  # no scheme: refused at deploy, not per request
    with pytest.raises(ValueError, match="nonsense"):
        Sam2Config.from_env(nonsense=1)
    with pytest.raises(ValueError, match="api_key"):
        Sam2Config.from_env(api_key="never from a file or a command line")


def test_bad_environment_values_are_one_readable_line(monkeypatch):
    for env in Sam2Config.env_names().values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("SAM2_TIMEOUT", "0")
    with pytest.raises(ValueError) as info:
        Sam2Config.from_env()
    message = str(info.value)
    assert "\n" not in message and message.startswith("SAM2 settings: timeout_s:")
    monkeypatch.setenv("SAM2_TIMEOUT", "2")
    monkeypatch.setenv("SAM2_SEND", "both")
    with pytest.raises(ValueError, match="send"):
        Sam2Config.from_env()


def test_every_field_has_its_environment_variable():
    names = Sam2Config.env_names()
    assert set(names) == set(Sam2Config.model_fields)
    assert names["url"] == "SAM2_URL" and names["timeout_s"] == "SAM2_TIMEOUT" and names["api_key"] == "SAM2_API_KEY"
    assert len(set(names.values())) == len(names)
