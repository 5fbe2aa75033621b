"""A batch job killed with SIGKILL mid-run, then run again: every input appears exactly
once in results.jsonl, no output is half-written (each is written under a temporary
name, then renamed), a half-written last line of results.jsonl is tolerated, and
faces.parquet is whole. The killed run is a separate driver process on the session's
Ray cluster; only that process (ours, by PID) is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from serve_app.jobs.runner import main
from tests.helpers import TEST_WEIGHTS, job_argv

pytestmark = [pytest.mark.fault, pytest.mark.graph]

PHOTOS = [
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Rob_Lowe_0002.jpg",
    "lfw_Nathalie_Baye_0002.jpg",
    "insightface_t1.jpg",
    "3ddfa_JianzhuGuo.jpg",
    "inspireface_view_noface.jpg",
]
COPIES = 4  # 24 inputs: enough blocks of 2 that the kill lands mid-run
ROWS_BEFORE_KILL = 4


def face_extract_argv(src, out, *extra):
    return job_argv("face-extract", src, out, *TEST_WEIGHTS, *extra, batch_size=2)


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_killed_mid_run_then_resumed_every_input_once_and_whole(tmp_path, photos_dir, ray_cluster, capsys):
    import ray

    src, out = tmp_path / "in", tmp_path / "out"
    inputs = []
    for k in range(COPIES):
        (src / f"set{k}").mkdir(parents=True)
        for name in PHOTOS:
            shutil.copy(photos_dir / name, src / f"set{k}" / name)
            inputs.append(f"set{k}/{name}")
    results = out / "results.jsonl"

    # The first run: its own driver process on the session's cluster, killed once a few rows are in.
    log = open(tmp_path / "killed_run.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve_app.jobs.runner",
            *face_extract_argv(src, out, "--address", ray.get_runtime_context().gcs_address),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    try:
        deadline = time.monotonic() + 150
        while len(lines(results)) < ROWS_BEFORE_KILL and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    done_before = len(lines(results))
    assert ROWS_BEFORE_KILL <= done_before < len(inputs), (tmp_path / "killed_run.log").read_text()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    # As if the kill had landed in the middle of a line.
    with open(results, "a") as f:
        f.write('{"path": "set3/lfw_Rob_Lowe_0001.jpg", "error": nu')

    # The second run, to the end (in this process, on the same cluster).
    assert main(face_extract_argv(src, out)) == 0
    printed = capsys.readouterr().out
    assert (
        f"{len(inputs)} inputs, {done_before} already done" in printed
        or f"{len(inputs)} inputs, {done_before - 1} already done" in printed
    ), printed  # the last row may be cut

    rows = [json.loads(line) for line in lines(results)]
    assert sorted(r["path"] for r in rows) == sorted(inputs)  # every input exactly once
    assert not any(r["error"] for r in rows)
    referenced = {p for r in rows for p in r["outputs"].values()}
    for path in referenced:  # every output whole: it decodes to the last byte
        with Image.open(out / path) as img:
            img.load()
            assert img.size == (160, 160)
    visible = {
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)
    }
    assert visible == referenced | {"results.jsonl", "faces.parquet", "weights.json"}  # nothing half-made

    table = pq.read_table(out / "faces.parquet").to_pylist()
    faces_per_input = {r["path"]: len(r["faces"]) for r in rows}
    assert len(table) == sum(faces_per_input.values())
    assert {r["source_path"] for r in table} == {p for p, n in faces_per_input.items() if n}
    # Copies of one photo give the same faces, killed run or not.
    for name in PHOTOS:
        assert len({faces_per_input[f"set{k}/{name}"] for k in range(COPIES)}) == 1
