"""The face-extract batch job on Ray Data: headshots beside the mirrored tree, one
Parquet row per face with dataset-wide clusters (the same person in two blocks is one
cluster, two faces of one photo never are), an error row per unreadable input, and a
resumed run that skips done work. The dataset-wide de-duplication (finalize) on its own:
cannot-link by input, the quality floor and the recogniser's threshold."""

import argparse
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from serve_app.config.settings import REPO_ROOT
from serve_app.config.spec import from_arguments
from serve_app.jobs.face_extract import finalize, options, resolve
from serve_app.jobs.runner import main
from serve_app.pipelines.face_extract import SPEC
from tests.helpers import TEST_WEIGHTS, job_argv, results_by_path

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
    return main(job_argv("face-extract", src, out, *TEST_WEIGHTS, batch_size=2))


def test_faces_headshots_parquet_and_dataset_wide_clusters(tree, tmp_path, ray_cluster, capsys):
    out = tmp_path / "out"
    assert run(tree, out) == 0
    rows = results_by_path(out)
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
    assert len({f["cluster_id"] for f in faces if f["source_path"] == "a/t1.jpg"}) == 6  # one photo: 6 people
    assert not any(f["low_quality"] for f in faces)
    meta = pq.read_schema(out / "faces.parquet").metadata
    assert meta[b"similarity_threshold"] == b"0.5"  # the recogniser's calibrated threshold
    assert meta[b"similarity_threshold_source"] == b"calibrated for arcface-mobilefacenet-128d"
    printed = capsys.readouterr().out
    assert "9 faces" in printed and "threshold 0.5" in printed


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


def job_args(recogniser="arcface-mobilefacenet-128d", **params):
    """The options finalize reads, as the job's parser leaves them."""
    fields = {
        name: None for name in ("similarity_threshold", "min_face_size", "quality_min_face_size", "quality_min_score")
    }
    return argparse.Namespace(
        serve_config=str(REPO_ROOT / "serve_config.yaml"), asset=[f"ArcFace={recogniser}"], **{**fields, **params}
    )


def job_opts(**kwargs):
    """The options finalize gets, as the runner resolves them from the job's arguments."""
    args = job_args(**kwargs)
    return {"params": resolve(from_arguments(SPEC.params, args), args), **options(args)}


def face(photo, index, angle, size=100.0, score=0.9):
    r = np.radians(angle)
    return {
        "face_id": f"{photo}{index}",
        "face_index": index,
        "bbox": [0.0, 0.0, size, size],
        "score": score,
        "landmarks": [[0.0, 0.0]] * 5,
        "embedding": [float(np.cos(r)), float(np.sin(r))] + [0.0] * 126,
        "headshot": f"{photo}{index}.jpg",
    }


def test_finalize_never_merges_one_photo_and_keeps_low_quality_faces_apart(tmp_path, capsys):
    rows = [
        # Two people who look alike (cos 0.98) in one photo, and a tiny face.
        {"path": "group.jpg", "error": None, "faces": [face("g", 0, 0), face("g", 1, 10), face("g", 2, 80, size=24)]},
        {"path": "broken.jpg", "error": "corrupt_image: truncated"},
        # The same three in a second photo, plus an uncertain detection.
        {
            "path": "again.jpg",
            "error": None,
            "faces": [face("a", 0, 9), face("a", 1, 1), face("a", 2, 80, size=24), face("a", 3, 80, score=0.55)],
        },
    ]
    finalize(rows, tmp_path, job_opts())
    table = pq.read_table(tmp_path / "faces.parquet").to_pylist()
    faces = {r["face_id"]: r for r in table if r["error"] is None}
    assert len({faces[k]["cluster_id"] for k in ("g0", "g1", "g2")}) == 3  # one photo: three people
    # Each face of the second photo joins its most similar person of the first, one each.
    assert (faces["a0"]["representative_face_id"], faces["a1"]["representative_face_id"]) == ("g1", "g0")
    assert faces["a0"]["similarity_to_representative"] > 0.99
    # Under the floor (24 px; score 0.55): flagged, each its own person, though identical.
    low = [k for k, r in faces.items() if r["low_quality"]]
    assert sorted(low) == ["a2", "a3", "g2"] and all(faces[k]["is_representative"] for k in low)
    assert len({faces[k]["cluster_id"] for k in low}) == 3
    assert [r["source_path"] for r in table if r["error"]] == ["broken.jpg"]
    meta = pq.read_schema(tmp_path / "faces.parquet").metadata
    assert (meta[b"similarity_threshold"], meta[b"quality_min_face_size"], meta[b"quality_min_score"]) == (
        b"0.5",
        b"32.0",
        b"0.6",
    )
    assert "7 faces, 5 unique people (3 of them low quality" in capsys.readouterr().out


def test_the_threshold_option_overrides_and_weights_without_one_stop_the_job(tmp_path):
    rows = [
        {"path": "a.jpg", "error": None, "faces": [face("a", 0, 0)]},
        {"path": "b.jpg", "error": None, "faces": [face("b", 0, 30)]},
    ]  # cos 0.87
    finalize(rows, tmp_path, job_opts(similarity_threshold=0.9))
    table = pq.read_table(tmp_path / "faces.parquet")
    assert table.column("is_representative").to_pylist() == [True, True]
    assert table.schema.metadata[b"similarity_threshold_source"] == b"--similarity-threshold"
    finalize(rows, tmp_path, job_opts())
    assert pq.read_table(tmp_path / "faces.parquet").column("cluster_id").to_pylist() == [0, 0]
    # Weights the manifest holds no threshold for: the job stops before any work.
    with pytest.raises(SystemExit, match="no calibrated similarity threshold"):
        job_opts(recogniser="retinaface-det-500m")
    assert job_opts(recogniser="retinaface-det-500m", similarity_threshold=0.6)["params"].similarity_threshold == 0.6
