"""The face-extract batch job on Ray Data: headshots beside the mirrored tree, one
Parquet row per face with dataset-wide clusters (the same person in two blocks is one
cluster), an error row per unreadable input, and a resumed run that skips done work."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from serve_app.batch import main

pytestmark = pytest.mark.graph


@pytest.fixture
def tree(tmp_path, photos_dir):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "z" / "deeper").mkdir(parents=True)
    # Input order (sorted paths): a/rob1, a/t1, b_nathalie, corrupt, notes, view, z/deeper/rob2
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0001.jpg", src / "a" / "rob1.jpg")
    shutil.copy(photos_dir / "insightface_t1.jpg", src / "a" / "t1.jpg")
    shutil.copy(photos_dir / "lfw_Nathalie_Baye_0002.jpg", src / "b_nathalie.jpg")
    (src / "corrupt.jpg").write_bytes((photos_dir / "lfw_Rob_Lowe_0002.jpg").read_bytes()[:900])
    (src / "notes.txt").write_text("not an image")
    shutil.copy(photos_dir / "inspireface_view_noface.jpg", src / "view.jpg")
    shutil.copy(photos_dir / "lfw_Rob_Lowe_0002.jpg", src / "z" / "deeper" / "rob2.jpg")
    return src


def run(src, out):
    # Blocks of 2 images: both Rob Lowe photos land in different blocks (and actors' batches).
    return main(["face-extract", "--input", str(src), "--output", str(out),
                 "--asset", "RetinaFace=retinaface-det-500m", "--asset", "ArcFace=arcface-mobilefacenet-128d",
                 "--batch-size", "2", "--cpus-per-worker", "0.5"])


def test_faces_headshots_parquet_and_dataset_wide_clusters(tree, tmp_path, ray_cluster, capsys):
    out = tmp_path / "out"
    assert run(tree, out) == 0
    rows = {r["path"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(rows) == 7
    assert rows["corrupt.jpg"]["error"].startswith("corrupt_image")
    assert rows["notes.txt"]["error"].startswith("unsupported_format")
    assert rows["view.jpg"]["faces"] == [] and len(rows["a/t1.jpg"]["faces"]) == 6
    rob1 = rows["a/rob1.jpg"]["faces"][0]
    assert rob1["headshot"] == "a/rob1.jpg.face0.jpg" and len(rob1["embedding"]) == 128
    assert Image.open(out / rob1["headshot"]).size == (160, 160)

    table = pq.read_table(out / "faces.parquet").to_pylist()
    faces = [r for r in table if r["error"] is None]
    errors = {r["source_path"]: r["error"] for r in table if r["error"] is not None}
    assert set(errors) == {"corrupt.jpg", "notes.txt"}
    assert len(faces) == 1 + 6 + 1 + 1
    expected = ["a/rob1.jpg"] + ["a/t1.jpg"] * 6 + ["b_nathalie.jpg", "z/deeper/rob2.jpg"]
    assert [f["source_path"] for f in faces] == expected  # input order, then face order
    for f in faces:
        assert len(f["bbox"]) == 4 and len(f["landmarks"]) == 10
        assert abs(np.linalg.norm(f["embedding"]) - 1) < 1e-4 and (out / f["headshot_path"]).exists()
    by_path = {f["source_path"]: f for f in faces}
    rob1, rob2, nathalie = by_path["a/rob1.jpg"], by_path["z/deeper/rob2.jpg"], by_path["b_nathalie.jpg"]
    assert rob1["cluster_id"] == rob2["cluster_id"] == 0 and rob1["is_representative"] and not rob2["is_representative"]
    assert rob2["representative_face_id"] == rob1["face_id"] and rob2["similarity_to_representative"] > 0.6
    assert nathalie["cluster_id"] != rob1["cluster_id"] and nathalie["is_representative"]
    clusters = sorted({f["cluster_id"] for f in faces})
    assert clusters == list(range(len(clusters)))  # numbered in order of first appearance
    assert "9 faces" in capsys.readouterr().out


def test_rerun_skips_done_inputs_and_keeps_the_clusters(tree, tmp_path, ray_cluster, capsys):
    out = tmp_path / "out"
    run(tree, out)
    first = pq.read_table(out / "faces.parquet").to_pylist()
    capsys.readouterr()
    run(tree, out)
    assert "7 inputs, 5 already done, 2 to run" in capsys.readouterr().out  # only the two failures again
    second = pq.read_table(out / "faces.parquet").to_pylist()
    key = lambda rows: [(r["source_path"], r["face_id"], r["cluster_id"]) for r in rows]
    assert key(second) == key(first)
