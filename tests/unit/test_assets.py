import hashlib
from pathlib import Path

import pytest

from serve_app.config import assets
from serve_app.config.settings import settings


@pytest.fixture
def repo_cache() -> Path:
    """The cache the test command filled (captured before `env` empties the lookup)."""
    return Path(settings().assets_cache)


@pytest.fixture
def env(settings_env, monkeypatch, tmp_path, repo_cache, mirror):
    """Point the resolver at empty temporary folders; restore settings after."""
    # Stand-ins off unless a test turns them on, whatever the process's environment.
    monkeypatch.setenv("FACEGRAPH_ALLOW_STAND_INS", "0")
    settings_env(FACEGRAPH_ASSETS_CACHE=tmp_path / "cache", FACEGRAPH_ASSETS_DIR="")
    return settings_env


@pytest.fixture
def mirror(tmp_path, repo_cache):
    """A tiny mirror with the real cascade's manifest entry copied from the repo cache."""
    real = repo_cache / assets.load_manifest()["lbp-detector-cascade"].path
    entry = assets.load_manifest()["lbp-detector-cascade"].files[0]
    root = tmp_path / "mirror"
    (root / Path(entry.path).parent).mkdir(parents=True)
    (root / entry.path).write_bytes(real.read_bytes())
    return root


def test_manifest_entries_are_complete():
    manifest = assets.load_manifest()
    for a in manifest.values():
        assert a.sets and a.licence, a.name
        assert set(a.sets) <= {"production", "test", "bench"}, a.name
        assert a.generate or a.files, a.name
        for f in a.files:
            assert f.urls or f.sha256, f"{a.name}: neither a source URL nor a pinned digest"
        if a.stand_in:
            assert "test" in manifest[a.stand_in].sets
    for prod in ("lbp-detector-cascade", "segformer-parser-face-parsing"):
        assert "production" in manifest[prod].sets


def test_missing_asset_names_itself_and_the_fetch_command(env):
    with pytest.raises(assets.AssetMissing) as e:
        assets.resolve("lbp-detector-cascade")
    msg = str(e.value)
    assert "lbp-detector-cascade" in msg and "python -m serve_app.config.assets fetch" in msg


def test_unknown_asset_is_a_clear_error(env):
    with pytest.raises(assets.AssetMissing, match="unknown asset"):
        assets.resolve("no-such-model")


def test_fetch_from_mirror_verifies_and_resolves(env, mirror, tmp_path):
    assets.fetch(["lbp-detector-cascade"], mirror=mirror)
    path = assets.resolve("lbp-detector-cascade")
    assert path.is_relative_to(tmp_path / "cache")
    pinned = assets.load_manifest()["lbp-detector-cascade"].files[0].sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned


def test_corrupt_mirror_file_is_refused_and_not_installed(env, mirror):
    entry = assets.load_manifest()["lbp-detector-cascade"].files[0]
    data = bytearray((mirror / entry.path).read_bytes())
    data[100] ^= 0xFF
    (mirror / entry.path).write_bytes(bytes(data))
    with pytest.raises(assets.AssetMissing):
        assets.fetch(["lbp-detector-cascade"], mirror=mirror)
    with pytest.raises(assets.AssetMissing):
        assets.resolve("lbp-detector-cascade")


def test_assets_dir_comes_before_the_cache(env, mirror, tmp_path):
    assets.fetch(["lbp-detector-cascade"], mirror=mirror)
    env(FACEGRAPH_ASSETS_DIR=mirror)
    assert assets.resolve("lbp-detector-cascade").is_relative_to(mirror)


def test_stand_in_only_when_allowed(env, repo_cache):
    env(FACEGRAPH_ASSETS_DIR=repo_cache)  # has the trained small UNet stand-in, not the real SegFormer
    with pytest.raises(assets.AssetMissing):
        assets.resolve_for_serving("segformer-parser-face-parsing")
    env(FACEGRAPH_ALLOW_STAND_INS=1)
    used, path = assets.resolve_for_serving("segformer-parser-face-parsing")
    assert used == "face-parser-unet-small" and (path / "model_best.pth").exists()


def test_unpinned_files_need_explicit_consent(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc")
    entry = assets.AssetFile("weights.bin", None, None, ("https://example.invalid/w",))
    with pytest.raises(assets.AssetCorrupt, match="allow-unpinned"):
        assets._verify(entry, f, allow_unpinned=False)
    assets._verify(entry, f, allow_unpinned=True)


def test_fetch_command_lists_and_fails_loudly(env, capsys):
    assert assets.main(["list"]) == 0
    assert "lbp-detector-cascade" in capsys.readouterr().out
    # No mirror, no network: a clear failure and a non-zero exit, never a silent skip.
    assert assets.main(["fetch", "arcface-mobilefacenet-128d"]) == 1
    assert "not in the mirror and no source URL" in capsys.readouterr().err
