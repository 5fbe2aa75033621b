"""serve_app/ops (facegraph image ...): the parts that need no container engine. The
engine-driven parts are exercised by `facegraph image build` and `facegraph image smoke`
themselves (CI runs them where podman or Docker is installed)."""

import argparse
from pathlib import Path

import yaml

from serve_app.ops import debian, image, smoke

ROOT = Path(__file__).resolve().parents[2]


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian.apt_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text(
        "# a comment\ndeb-src http://src.example/debian bookworm main\n"
        "deb [signed-by=/k.gpg] http://other.example/debian bookworm main\n"
    )
    assert debian.apt_mirror([tmp_path / "absent.list", one_line]) == "http://other.example/debian"


def build_args(**overrides) -> argparse.Namespace:
    args = image.parser().parse_args(["build"])
    args.tag, args.base_image = "facegraph:test", "localhost/facegraph-base:bookworm"
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_build_command_keeps_inputs_out_of_the_image_and_the_healthcheck_in(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    ca = tmp_path / "ca.pem"
    args = build_args(assets_mirror=tmp_path / "mirror", ca_bundle=ca)
    podman = image.build_command(args, "podman", tmp_path)
    joined = " ".join(podman)
    # podman drops HEALTHCHECK from OCI images: docker format.
    assert podman[:2] == ["podman", "build"] and "--format docker" in joined
    assert f"--build-context wheelhouse={tmp_path}" in joined
    assert f"--build-context assets-mirror={tmp_path / 'mirror'}" in joined
    assert f"--secret id=site_ca,src={ca}" in joined
    # The wheelhouse has the CPU torch: no extra index to time out on.
    assert "--build-arg TORCH_INDEX_URL=" in joined
    assert "--build-arg BASE_IMAGE=localhost/facegraph-base:bookworm" in joined
    docker = " ".join(image.build_command(args, "docker", None))
    assert "--format" not in docker and "wheelhouse=" not in docker and "TORCH_INDEX_URL" not in docker
    assert podman[-1] == str(ROOT) and "--target cpu" in docker


def test_stage_wheelhouse_gathers_every_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "torch-2.13.0+cpu-x.whl").write_bytes(b"t")
    (b / "pytorch3d-0.7.9-x.whl").write_bytes(b"p")
    (b / "README.md").write_text("not a wheel")
    staged = image.stage_wheelhouse([a, b], tmp_path / "staged")
    assert sorted(p.name for p in staged.iterdir()) == ["pytorch3d-0.7.9-x.whl", "torch-2.13.0+cpu-x.whl"]
    assert image.stage_wheelhouse([tmp_path / "staged" / "none"], tmp_path / "empty") is None


def test_smoke_config_moves_the_proxy_to_a_loopback_port(tmp_path):
    written = smoke.smoke_config(ROOT / "serve_config.yaml", 43210, tmp_path / "c.yaml")
    config, original = yaml.safe_load(written.read_text()), yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert config["http_options"]["port"] == 43210 and config["http_options"]["host"] == "127.0.0.1"
    assert config["applications"] == original["applications"]


def test_smoke_has_a_request_for_every_pipeline_of_the_serve_config():
    for name in ("serve_config.yaml", "serve_config.gpu.yaml"):
        apps = {a["name"] for a in yaml.safe_load((ROOT / name).read_text())["applications"]}
        assert apps - {"models"} == set(smoke.PIPELINES), name


def test_smoke_runs_the_container_as_kubernetes_would(tmp_path):
    config = smoke.smoke_config(ROOT / "serve_config.yaml", 43210, tmp_path / "c.yaml")
    command = " ".join(smoke.run_command("podman", "facegraph:0.1.0", "n", config, ["A=1"]))
    for option in ("--init", "--read-only", "--tmpfs /tmp", "--network host", "--shm-size 2g", "--env A=1"):
        assert option in command
    # The image's own HEALTHCHECK follows Serve to the moved port.
    assert "--env FACEGRAPH_HEALTH_URL=http://127.0.0.1:43210/healthz" in command
    assert f"--volume {tmp_path / 'data'}:{smoke.DATA_DIR}" in command  # the gallery's store
    assert f"FACEGRAPH_DATA_DIR={smoke.DATA_DIR}" in (ROOT / "Dockerfile").read_text()
    assert "FACEGRAPH_HEALTH_URL" in (ROOT / "Dockerfile").read_text()
    assert command.endswith(f"facegraph serve --no-fetch --config {smoke.CONFIG_IN_CONTAINER}")
