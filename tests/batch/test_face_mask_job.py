"""The face-mask batch job on Ray Data over a small tree with a nested folder, a
corrupt file and a non-image: every input ends as a row, outputs mirror the tree,
and a second run skips what is done."""

import shutil

import numpy as np
import pytest
from PIL import Image

from serve_app.jobs.runner import main
from tests.helpers import job_argv, results_by_path

pytestmark = pytest.mark.graph


@pytest.fixture
def tree(tmp_path, cartoon_dir, photos_dir):
    src = tmp_path / "in"
    (src / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(cartoon_dir / "kanosawa_anime_5faces.png", src / "five.png")
    shutil.copy(cartoon_dir / "cartoonface_11008.jpg", src / "nested" / "one.jpg")
    shutil.copy(photos_dir / "dlib_dogs_noface.jpg", src / "nested" / "deeper" / "dogs.jpg")
    (src / "nested" / "corrupt.jpg").write_bytes((cartoon_dir / "cartoonface_11031.jpg").read_bytes()[:700])
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"skipped")
    return src


def run(src, out, *extra):
    # The models as serve_config.yaml configures them, with the test parser's weights.
    return main(job_argv("face-mask", src, out, "--asset", "SegFormerParser=segformer-parser-tiny", *extra))


def rows_of(out):
    return results_by_path(out)


def test_every_input_is_a_row_and_outputs_mirror_the_tree(tree, tmp_path, ray_cluster):
    out = tmp_path / "out"
    assert run(tree, out, "--overlay", "--rgba") == 0
    rows = rows_of(out)
    assert set(rows) == {"five.png", "nested/one.jpg", "nested/deeper/dogs.jpg", "nested/corrupt.jpg", "notes.txt"}
    assert rows["five.png"]["faces"] == 5 and len(rows["five.png"]["boxes"]) == 5 and rows["five.png"]["error"] is None
    assert rows["nested/one.jpg"]["faces"] == 1
    assert rows["nested/deeper/dogs.jpg"]["faces"] == 0
    assert rows["nested/corrupt.jpg"]["error"].startswith("corrupt_image")
    assert rows["notes.txt"]["error"].startswith("unsupported_format")
    outputs = rows["nested/one.jpg"]["outputs"]
    assert outputs == {
        "mask": "nested/one.jpg.mask.png",
        "rgba": "nested/one.jpg.rgba.png",
        "overlay": "nested/one.jpg.overlay.png",
    }
    mask = np.asarray(Image.open(out / outputs["mask"]))
    assert mask.shape == (112, 66) and mask.max() == 255
    assert np.asarray(Image.open(out / rows["nested/deeper/dogs.jpg"]["outputs"]["mask"])).max() == 0


def test_rerun_skips_done_inputs_and_retries_failures(tree, tmp_path, ray_cluster, capsys):
    out = tmp_path / "out"
    run(tree, out)
    first = rows_of(out)
    (out / first["five.png"]["outputs"]["mask"]).unlink()  # a lost output is redone
    capsys.readouterr()
    run(tree, out)
    printed = capsys.readouterr().out
    assert "5 inputs, 2 already done, 3 to run" in printed  # five.png + the two failures
    second = rows_of(out)
    assert set(second) == set(first) and second["five.png"]["faces"] == 5
    assert len((out / "results.jsonl").read_text().splitlines()) == 5  # compacted, one row each
