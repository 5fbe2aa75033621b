"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import numpy as np

from serve_app.web.ports import free_port as free_port  # the one definition, shared with bench/

# The face-extract job's models on the test weights (RetinaFace, ArcFace).
TEST_WEIGHTS = ("--asset", "RetinaFace=retinaface-det-500m", "--asset", "ArcFace=arcface-mobilefacenet-128d")


# Shared photos whose faces are near-frontal (|yaw| up to ~30 degrees): where the
# 68-landmark checks hold (tests/deployments/test_tddfa.py, tests/pipelines/test_anonymize.py).
FRONTAL_PHOTOS = (
    "3ddfa_JianzhuGuo.jpg",
    "3ddfa_trump_hillary.jpg",
    "facedet1mb_nine_kids.jpg",
    "inspireface_woman_search.jpeg",
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Rob_Lowe_0002.jpg",
    "lfw_Nathalie_Baye_0002.jpg",
    "ultralight_handshake_13.jpg",
)


def job_argv(job: str, src, out, *extra: str, batch_size: int = 4) -> list[str]:
    """A batch job's command line as the tests run it: `batch_size` inputs per block and
    half a CPU per actor (two actors fit the test cluster); `extra`: the job's own
    options, test weights (`--asset MODEL=ASSET`) among them."""
    common = ["--batch-size", str(batch_size), "--cpus-per-worker", "0.5"]
    return [job, "--input", str(src), "--output", str(out), *common, *extra]


def torch_renderer_config(folder):
    """The repo's serve config with MeshRenderer on its plain-torch backend (faster here
    than PyTorch3D's CPU rasteriser; the graph tests cover PyTorch3D), written under
    `folder`: the anonymize job tests' --serve-config."""
    from pathlib import Path

    import yaml

    from serve_app.config.settings import REPO_ROOT

    doc = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    [models] = [app for app in doc["applications"] if app["name"] == "models"]
    models["args"]["models"]["MeshRenderer"] = {"config": {"backend": "torch", "supersample": 2}}
    path = Path(folder) / "serve_config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def results_by_path(out) -> dict[str, dict]:
    """A job's results.jsonl under `out`: {input path: its row}."""
    import json
    from pathlib import Path

    return {r["path"]: r for r in map(json.loads, (Path(out) / "results.jsonl").read_text().splitlines())}


def ok(resp) -> dict:
    """A 200 JSON answer whose request id is in the header and the body alike."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["x-request-id"] == body["request_id"]
    return body


def assert_error(resp, status: int, code: str | None = None) -> dict:
    """The one error shape: {error, message, request_id}, the id also in the header."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["request_id"] and resp.headers["x-request-id"] == body["request_id"]
    if code:
        assert body["error"] == code, body
    return body


def iou(a, b) -> np.ndarray:
    """IoU of every box in a [N,4] against every box in b [M,4] -> [N,M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)
