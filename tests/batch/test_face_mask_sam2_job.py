"""The face-mask-sam2 batch job on a small folder (nested subfolder, a corrupt file, a
no-face image) on the shared local Ray cluster, SAM2 stood in on 127.0.0.1."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from serve_app.jobs.runner import main
from tests.helpers import free_port, job_argv, results_by_path
from tests.sam2_standin import Sam2StandIn

pytestmark = pytest.mark.graph


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos_dir):
    root = tmp_path_factory.mktemp("in")
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(photos_dir / "3ddfa_trump_hillary.jpg", root / "two.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", root / "nested" / "deeper" / "one.jpg")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", root / "nested" / "none.jpg")
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def run(folder, out, url, *extra) -> dict[str, dict]:
    # The models as serve_config.yaml configures them, with the test detector's weights.
    extra = ("--sam2-url", url, "--asset", "RetinaFace=retinaface-det-500m", "--overlay", *extra)
    assert main(job_argv("face-mask-sam2", folder, out, *extra)) == 0
    return results_by_path(out)


def test_job_masks_a_folder_with_sam2_and_resumes(ray_cluster, folder, tmp_path):
    out = tmp_path / "out"
    with Sam2StandIn() as sam2:
        rows = run(folder, out, sam2.url)
        assert sorted(rows) == ["nested/broken.jpg", "nested/deeper/one.jpg", "nested/none.jpg", "two.jpg"]
        assert rows["nested/broken.jpg"]["error"].startswith("corrupt_image")
        assert rows["nested/none.jpg"]["faces"] == 0 and rows["nested/none.jpg"]["mask_sources"] == []
        two = rows["two.jpg"]
        assert two["error"] is None and two["faces"] == 2
        assert [s["mask_source"] for s in two["mask_sources"]] == ["sam2", "sam2"]
        # Mirrored outputs.
        assert two["outputs"] == {"mask": "two.jpg.mask.png", "overlay": "two.jpg.overlay.png"}
        one = rows["nested/deeper/one.jpg"]
        mask = np.asarray(Image.open(out / one["outputs"]["mask"]))
        assert mask.shape == (250, 250) and mask.any()
        calls = sam2.calls()
        assert calls == 3  # one per face

        # Re-run: only the failed input is tried again, nothing is sent to SAM2.
        again = run(folder, out, sam2.url)
        assert sam2.calls() == calls
        assert again["two.jpg"] == two


def test_job_falls_back_to_polygons_without_sam2(ray_cluster, folder, tmp_path):
    rows = run(folder, tmp_path / "out", f"http://127.0.0.1:{free_port()}", "--sam2-retries", "0")
    sources = rows["two.jpg"]["mask_sources"]
    assert [(s["mask_source"], s["fallback_reason"]) for s in sources] == [("polygon", "unreachable")] * 2
