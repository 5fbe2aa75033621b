"""The anonymize batch job on a small folder (nested subfolder, two faces, no face, a
corrupt file) on the shared local Ray cluster: the seed's layout under OUT, resumable
runs, error rows and --stop-on-error. The morphable model is the production name, served
by its stand-in (FACEGRAPH_ALLOW_STAND_INS's default, 1, in the driver: the job resolves it there).
The renderer runs its plain-torch backend here (a serve config of our own), for speed;
the graph tests cover PyTorch3D."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from serve_app.jobs.runner import main
from tests.helpers import job_argv, results_by_path, torch_renderer_config

pytestmark = pytest.mark.graph

SMALL = ["--tex-size", "256", "--img-size", "128"]
CORRUPT = b"\xff\xd8\xff\xe0 not really a jpeg"
ASSETS = ["--asset", "RetinaFace=retinaface-det-500m", "--asset", "TDDFA=tddfa-mb05-120"]


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    from serve_app.config.settings import settings

    # Not set: the default rule (stand-ins allowed, named in the outputs), as for `facegraph serve`.
    monkeypatch.delenv("FACEGRAPH_ALLOW_STAND_INS", raising=False)
    settings.cache_clear()
    yield
    monkeypatch.undo()
    settings.cache_clear()


@pytest.fixture(scope="module")
def serve_config(tmp_path_factory):
    return torch_renderer_config(tmp_path_factory.mktemp("config"))


@pytest.fixture
def folder(tmp_path, photos_dir):
    root = tmp_path / "in"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(photos_dir / "ultralight_handshake_13.jpg", root / "two.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", root / "nested" / "deeper" / "one.jpg")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", root / "nested" / "none.jpg")
    (root / "nested" / "broken.jpg").write_bytes(CORRUPT)
    return root


def run(folder, out, serve_config, *extra, status=0) -> dict[str, dict]:
    assert (
        main(job_argv("anonymize", folder, out, "--serve-config", str(serve_config), *ASSETS, *SMALL, *extra)) == status
    )
    return results_by_path(out)


def test_job_writes_the_seed_layout_and_resumes(ray_cluster, folder, serve_config, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run(folder, out, serve_config)
    assert sorted(rows) == ["nested/broken.jpg", "nested/deeper/one.jpg", "nested/none.jpg", "two.jpg"]
    assert rows["nested/broken.jpg"]["error"].startswith("corrupt_image")
    none = rows["nested/none.jpg"]
    assert none["error"] is None and none["faces"] == []

    one = rows["nested/deeper/one.jpg"]
    assert one["error"] is None and len(one["faces"]) == 1
    assert "assembled" in one["morphable_model"]  # the stand-in, named
    weights = json.loads((out / "weights.json").read_text())  # every model's weights, named
    assert weights["TDDFA"] == "tddfa-mb05-120" and weights["RetinaFace"] == "retinaface-det-500m"
    rel = "nested/deeper/one.jpg"
    expected = {
        f"face3d/{rel}/faces.json",
        f"face3d/{rel}/face0.json",
        f"face3d/{rel}/face0_vertices.npy",
        f"seg/{rel}_masked.png",
        f"anon/{rel}/one.jpg.obj",
        f"anon/{rel}/one.jpg.mtl",
        f"anon/{rel}/one.jpg_texture.png",
        f"anon/{rel}/one.jpg_vertices.npy",
        f"render/{rel}_front.png",
        f"anonymized/{rel}.png",
    }
    assert set(one["outputs"].values()) == expected
    assert all((out / p).is_file() for p in expected)
    # The files are what they say.
    record = json.loads((out / f"face3d/{rel}/face0.json").read_text())
    assert len(record["params"]) == 62 and len(record["roi_box"]) == 4 and len(record["landmarks"]) == 68
    assert np.load(out / f"face3d/{rel}/face0_vertices.npy").shape == (38365, 3)
    seg = np.asarray(Image.open(out / f"seg/{rel}_masked.png"))
    assert seg.shape == (250, 250, 4) and (seg[..., 3] == 0).any()
    front = np.asarray(Image.open(out / f"render/{rel}_front.png"))
    assert front.shape == (128, 128, 4) and (front[..., 3] == 255).any()
    photo = np.asarray(Image.open(folder / rel).convert("RGB"))
    anonymized = np.asarray(Image.open(out / f"anonymized/{rel}.png"))
    assert anonymized.shape == photo.shape and not np.array_equal(anonymized, photo)
    assert "map_Kd one.jpg_texture.png" in (out / f"anon/{rel}/one.jpg.mtl").read_text()
    texture = np.asarray(Image.open(out / f"anon/{rel}/one.jpg_texture.png"))
    assert texture.shape == (256, 256, 4) and (texture[..., 3] == 0).any()  # the cut-out, transparent
    assert json.loads((out / f"face3d/{rel}/faces.json").read_text()) == {"width": 250, "height": 250, "faces": 1}

    # Two faces: face 0 keeps the seed's names, face 1 adds _face1.
    two = rows["two.jpg"]
    assert two["error"] is None and len(two["faces"]) == 2
    names = set(two["outputs"].values())
    for suffix in (".obj", ".mtl", "_texture.png"):
        assert f"anon/two.jpg/two.jpg{suffix}" in names and f"anon/two.jpg/two.jpg_face1{suffix}" in names
    assert {"render/two.jpg_front.png", "render/two.jpg_face1_front.png", "face3d/two.jpg/face1.json"} <= names
    assert all((out / p).is_file() for p in names)

    # Re-run once the corrupt file is gone: every input is done, nothing runs again
    # (not even Ray Data), rows and files stay as they were.
    (folder / "nested" / "broken.jpg").unlink()
    mtime = (out / f"anonymized/{rel}.png").stat().st_mtime_ns
    capsys.readouterr()
    again = run(folder, out, serve_config)
    assert "3 inputs, 3 already done, 0 to run" in capsys.readouterr().out
    assert again == {k: v for k, v in rows.items() if k != "nested/broken.jpg"}
    assert (out / f"anonymized/{rel}.png").stat().st_mtime_ns == mtime


def test_stop_on_error_stops_at_the_first_error(ray_cluster, folder, serve_config, tmp_path):
    root = tmp_path / "sorted"
    root.mkdir()
    (root / "0_broken.jpg").write_bytes(CORRUPT)  # first in sorted input order
    shutil.copy(folder / "nested" / "deeper" / "one.jpg", root / "one.jpg")
    shutil.copy(folder / "two.jpg", root / "two.jpg")
    out = tmp_path / "out"
    rows = run(root, out, serve_config, "--stop-on-error", status=1)
    assert list(rows) == ["0_broken.jpg"] and rows["0_broken.jpg"]["error"].startswith("corrupt_image")
