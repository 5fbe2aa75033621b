"""The `facegraph` command: each word reaches the module that does the work."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from serve_app import cli

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_declares_the_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"facegraph": "serve_app.cli:main"}


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "batch", "assets", "bench"):
        assert f"\n    {command} " in out, out


def test_assets_list_is_the_manifest(capsys):
    from serve_app.config.assets import load_manifest

    assert cli.main(["assets", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(load_manifest())


def test_batch_reaches_the_job_runner(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["batch", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for job in ("face-mask", "face-mask-sam2", "face-extract", "mask-augment", "anonymize"):
        assert job in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["batch", "no-such-job", "--input", "x", "--output", "y"])
    assert exit_.value.code == 2


def test_bench_lists_and_refuses_unknown_names(capsys):
    assert cli.main(["bench", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"models", "face_mask", "face_extract", "mask_augment"} <= set(names)
    assert "common" not in names  # helpers without a __main__ are not benchmarks
    assert cli.main(["bench", "no_such_bench"]) == 2


def test_bench_runs_the_script_with_its_own_options():
    # `--help` after the name is the benchmark's, not facegraph's.
    out = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "bench", "models", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--seconds" in out.stdout and "facegraph" not in out.stdout


def test_serve_execs_serve_run_with_the_config(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: calls.append(argv))
    # setenv first so teardown removes what `serve` sets (a bare delenv of an unset
    # variable records nothing, and the "1" would leak into later tests).
    for name in ("FACEGRAPH_ALLOW_STAND_INS", "RAY_AUTH_MODE", "FACEGRAPH_DATA_DIR"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    config = tmp_path / "serve_config.gpu.yaml"
    cli.main(["serve", "--no-fetch", "--config", str(config), "--address", "auto"])
    (argv,) = calls
    assert Path(argv[0]).name == "serve" and argv[1:] == ["run", str(config), "--address", "auto"]
    assert cli.os.environ["FACEGRAPH_ALLOW_STAND_INS"] == "1" and cli.os.environ["RAY_AUTH_MODE"] == "disabled"
    assert cli.os.environ["FACEGRAPH_DATA_DIR"] == str(Path(".facegraph").resolve())  # absolute for every replica


def test_serve_script_is_setup_then_facegraph_serve():
    lines = [
        line
        for line in (ROOT / "scripts" / "serve.sh").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert lines == ["scripts/setup.sh test", 'exec .venv/bin/python -m serve_app.cli serve "$@"']


def test_installed_console_script_runs():
    script = Path(sys.executable).with_name("facegraph")  # installed by scripts/setup.sh
    assert script.exists(), "no facegraph in the venv: run scripts/setup.sh"
    out = subprocess.run([str(script), "assets", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "lbp-detector-cascade" in out.stdout, out.stderr
