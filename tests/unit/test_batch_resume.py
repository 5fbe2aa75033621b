"""What lets a killed batch job resume: results.jsonl survives a half-written last line,
and every output is written whole or not at all."""

import json
import os

from serve_app.jobs.runner import RESULTS_FILE, end_last_line, load_results, write_atomic


def test_a_half_written_last_line_is_skipped_and_ended(tmp_path):
    results = tmp_path / RESULTS_FILE
    results.write_text(json.dumps({"path": "a.jpg", "error": None}) + "\n" + '{"path": "b.jpg", "err')
    assert set(load_results(tmp_path)) == {"a.jpg"}  # b.jpg runs again
    end_last_line(results)
    with open(results, "a") as f:  # the next run appends its rows
        f.write(json.dumps({"path": "b.jpg", "error": None}) + "\n")
    assert set(load_results(tmp_path)) == {"a.jpg", "b.jpg"}
    end_last_line(results)  # a whole file is left as it is
    assert results.read_text().count("\n") == 3


def test_end_last_line_on_no_file_or_an_empty_one(tmp_path):
    end_last_line(tmp_path / RESULTS_FILE)
    assert not (tmp_path / RESULTS_FILE).exists()
    (tmp_path / RESULTS_FILE).write_text("")
    end_last_line(tmp_path / RESULTS_FILE)
    assert (tmp_path / RESULTS_FILE).read_text() == ""


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "a.jpg.mask.png"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["a.jpg.mask.png"]
