"""Configuration mistakes in a batch job stop it before any work (before Ray starts)
with one line naming the problem and the fix, never a traceback."""

import re
from pathlib import Path

import pytest

from serve_app.config.settings import REPO_ROOT
from serve_app.jobs.runner import main
from tests.helpers import TEST_WEIGHTS

SERVE_CONFIG = REPO_ROOT / "serve_config.yaml"


@pytest.fixture
def env(settings_env):
    return settings_env


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"not really")
    return tmp_path


def one_line_error(folder: Path, *extra: str, job: str = "face-extract") -> str:
    with pytest.raises(SystemExit) as stop:
        main([job, "--input", str(folder / "in"), "--output", str(folder / "out"), *extra])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("job", ["face-extract", "anonymize", "face-mask"])
def test_a_fresh_machine_gets_one_line_naming_the_fetch_and_the_stand_in(env, folder, tmp_path, job):
    """No weights anywhere and stand-ins not allowed (the default outside scripts/serve.sh):
    the fetch command, and where the missing asset has a test stand-in, how to allow it
    (the production recogniser has one; face-mask's LBP cascade is its own test asset)."""
    from serve_app.config.assets import load_manifest

    env(FACEGRAPH_ASSETS_CACHE=tmp_path / "empty", FACEGRAPH_ASSETS_DIR="", FACEGRAPH_ALLOW_STAND_INS=0)
    message = one_line_error(folder, job=job)
    assert "python -m serve_app.config.assets fetch --set production" in message
    missing = re.search(r"asset '([^']+)'", message).group(1)
    assert ("FACEGRAPH_ALLOW_STAND_INS=1" in message) == bool(load_manifest()[missing].stand_in), message
    if job == "face-extract":  # both of its production models have a test stand-in
        assert "; or run on its test stand-in " in message


def test_with_stand_ins_allowed_a_missing_stand_in_names_its_fetch(env, folder, tmp_path):
    env(FACEGRAPH_ASSETS_CACHE=tmp_path / "empty", FACEGRAPH_ASSETS_DIR="", FACEGRAPH_ALLOW_STAND_INS=1)
    assert "fetch --set test" in one_line_error(folder)


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, "no such file"),
        ("applications: [\n  - {name: models\n", "is not valid YAML"),
        ("applications: []\n", "has no 'models' application"),
        (
            "applications:\n  - name: models\n    args: {models: {RetinaFace: {asset: x, bogus: 1}}}\n",
            "a model block is wrong: bogus",
        ),
        (
            "applications:\n  - name: models\n    args: {models: {RetinaFace: {config: {bogus: 1}}}}\n",
            "RetinaFace: its config",
        ),
        (
            "applications:\n  - name: models\n    args: {models: {RetinaFace: {config: {det_size: 300}}}}\n",
            "det_size must be a positive multiple of 32, got 300",
        ),
    ],
)
def test_a_bad_serve_config_is_one_line(folder, config, expected):
    path = folder / "serve_config.yaml"
    if config is not None:
        path.write_text(config)
    assert expected in one_line_error(folder, "--serve-config", str(path), *TEST_WEIGHTS)


def test_bad_options_are_one_line(folder):
    assert "no model 'Nope'" in one_line_error(folder, "--asset", "Nope=x", *TEST_WEIGHTS)
    assert "takes MODEL=ASSET" in one_line_error(folder, "--asset", "RetinaFace", *TEST_WEIGHTS)
    assert "unknown asset 'nope'" in one_line_error(
        folder, "--asset", "RetinaFace=nope", "--asset", "ArcFace=arcface-mobilefacenet-128d"
    )
    (folder / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["face-extract", "--input", str(folder / "in"), "--output", str(folder / "file" / "out"), *TEST_WEIGHTS])
    assert str(stop.value.code).startswith("error: --output ")


def test_an_unreachable_cluster_address_is_one_line_at_once():
    """ray.init retries an unreachable GCS for a minute or more; the job checks the
    address first (main turns ConfigError into its one `error:` line; called directly
    here, since an earlier test may have left Ray initialised in this process, and then
    the job uses that cluster)."""
    import socket
    import time

    from serve_app.jobs.runner import ConfigError, check_reachable

    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError) as refused:
            check_reachable(address)
    message = str(refused.value)
    assert message.startswith(f"cannot reach the Ray cluster at --address {address}"), message
    assert "leave --address out" in message and "\n" not in message and time.monotonic() - start < 10
    for left_to_ray in (None, "auto", "ray://head:10001"):
        check_reachable(left_to_ray)  # no error: ray.init resolves these
