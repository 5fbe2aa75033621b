"""The model tier's registry (serve_app/config/model_tier.py): every MODELS entry builds its
own config class with the resolved asset path, the repo's serve_config.yaml configures
every model, and every pipeline's spec names only models the tier serves."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import serve_app.pipelines
from deployments.serving import build_model
from serve_app.config.assets import AssetMissing, load_manifest, resolve
from serve_app.config.model_tier import MODEL_APP, MODELS, ModelArgs, model_class, model_config, serve_config_models
from serve_app.config.settings import REPO_ROOT, settings
from serve_app.config.spec import PipelineSpec

SERVE_CONFIG = REPO_ROOT / "serve_config.yaml"


def present(name: str) -> bool:
    try:
        resolve(name)
        return True
    except AssetMissing:
        return False


def test_weights(name: str) -> str:
    """An asset of this model that is here: its production one, else its stand-in."""
    entry = MODELS[name]
    return entry.asset if present(entry.asset) else (load_manifest()[entry.asset].stand_in or entry.asset)


test_weights.__test__ = False  # a helper, not a test


@pytest.fixture
def stand_ins(monkeypatch):
    """settings() re-read with FACEGRAPH_ALLOW_STAND_INS as the test sets it."""

    def allow(on: bool):
        monkeypatch.setenv("FACEGRAPH_ALLOW_STAND_INS", "1" if on else "0")
        settings.cache_clear()

    yield allow
    monkeypatch.delenv("FACEGRAPH_ALLOW_STAND_INS", raising=False)
    settings.cache_clear()


def serve_config_doc() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def models_app() -> dict:
    (app,) = [a for a in serve_config_doc()["applications"] if a["name"] == MODEL_APP]
    return app


def pipeline_specs() -> dict[str, PipelineSpec]:
    """Every SPEC in serve_app/pipelines, found by walking the package (a new pipeline
    is checked without being listed here)."""
    specs = {}
    for info in pkgutil.iter_modules(serve_app.pipelines.__path__):
        module = importlib.import_module(f"serve_app.pipelines.{info.name}")
        if isinstance(getattr(module, "SPEC", None), PipelineSpec):
            specs[info.name] = module.SPEC
    return specs


# ---- MODELS -> (class, config, weights) --------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_builds_its_own_config_with_the_asset_path(name):
    entry = MODELS[name]
    cls, cfg_cls = model_class(name)
    assert cls.__name__ == name and cfg_cls.__name__ == name + "Config"
    assert cls.__module__ == cfg_cls.__module__ == entry.module
    assert dataclasses.is_dataclass(cfg_cls) and callable(getattr(cls, "predict", None))
    if entry.asset_field is None:
        got_cls, cfg, weights = model_config(name, ModelArgs())
        assert got_cls is cls and type(cfg) is cfg_cls and weights  # built-in weights, named
        return
    asset = test_weights(name)
    got_cls, cfg, weights = model_config(name, ModelArgs(asset=asset))
    assert got_cls is cls and type(cfg) is cfg_cls
    assert weights == asset
    assert getattr(cfg, entry.asset_field) == str(resolve(asset))
    assert Path(getattr(cfg, entry.asset_field)).exists()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_fields_reach_the_config(name):
    """The `config` block sets the dataclass's own fields; an unknown field is refused."""
    entry = MODELS[name]
    _, cfg_cls = model_class(name)
    args = {"asset": test_weights(name)} if entry.asset_field else {}
    tunable = [f for f in dataclasses.fields(cfg_cls) if f.name != entry.asset_field and f.type in ("int", int)]
    if tunable:
        field = tunable[0]
        # Another valid value: doubled (RetinaFaceConfig refuses a det_size that is not a multiple of 32).
        value = getattr(cfg_cls(**({entry.asset_field: "x"} if entry.asset_field else {})), field.name) * 2
        _, cfg, _ = model_config(name, ModelArgs(**args, config={field.name: value}))
        assert getattr(cfg, field.name) == value
    with pytest.raises(TypeError):
        model_config(name, ModelArgs(**args, config={"no_such_field": 1}))


def test_every_model_with_weights_names_a_manifest_asset_tests_can_serve():
    """The production asset is a manifest entry; it is in the test set itself, or its
    stand-in is (so tests and dev boxes can serve every model)."""
    manifest = load_manifest()
    for name, entry in MODELS.items():
        if entry.asset_field is None:
            assert entry.asset is None, name
            continue
        assert entry.asset in manifest, name
        production = manifest[entry.asset]
        served = entry.asset if "test" in production.sets else production.stand_in
        assert served in manifest and "test" in manifest[served].sets and present(served), name


@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if e.asset_field))
def test_no_asset_given_means_the_production_one_or_its_stand_in_when_allowed(name, stand_ins):
    entry = MODELS[name]
    stand_in = load_manifest()[entry.asset].stand_in
    stand_ins(False)
    if present(entry.asset) or stand_in is None:
        _, cfg, weights = model_config(name)
        assert weights == entry.asset and getattr(cfg, entry.asset_field) == str(resolve(entry.asset))
        return
    with pytest.raises(AssetMissing):
        model_config(name)  # never a silent stand-in
    stand_ins(True)
    _, cfg, weights = model_config(name)
    assert weights == stand_in and getattr(cfg, entry.asset_field) == str(resolve(stand_in))


def test_a_built_config_builds_the_model():
    cls, cfg, _ = model_config("LBPDetector", ModelArgs(asset="lbp-detector-cascade", config={"min_size": 30}))
    model = build_model(cls, cfg)
    assert isinstance(model, cls) and model.cfg.min_size == 30 and model.predict([]) == []


def test_unknown_models_and_block_keys_are_refused():
    with pytest.raises(KeyError, match="unknown model"):
        model_class("NoSuchModel")
    with pytest.raises(ValidationError):
        ModelArgs(asset="lbp-detector-cascade", replicas=2)
    with pytest.raises(AssetMissing):
        model_config("LBPDetector", ModelArgs(asset="no-such-asset"))


# ---- serve_config.yaml ---------------------------------------------------------------------


def test_serve_config_models_reads_the_repos_models_block():
    models = serve_config_models(SERVE_CONFIG)
    raw = models_app()["args"]["models"]
    assert set(models) == set(raw) == set(MODELS)  # every model is configured, nothing else
    for name, args in models.items():
        assert isinstance(args, ModelArgs)
        block = raw[name] or {}
        assert args.asset == block.get("asset") and args.config == (block.get("config") or {})
    assert models["RetinaFace"].config["det_size"] == 640
    assert models["FaceMesh"].asset is None and models["FaceMesh"].config["max_num_faces"] == 5


def test_serve_config_model_blocks_fit_their_models():
    """Each block's asset is a manifest entry and its config keys are fields of the
    model's config, so the file the server and the jobs read is buildable."""
    manifest = load_manifest()
    for name, args in serve_config_models(SERVE_CONFIG).items():
        entry = MODELS[name]
        _, cfg_cls = model_class(name)
        if args.asset is not None:
            assert entry.asset_field and args.asset in manifest, name
        file_fields = ({entry.asset_field} if entry.asset_field else set()) | {f for f, _ in entry.extra_assets}
        assert set(args.assets) <= file_fields and all(a in manifest for a in args.assets.values()), name
        fields = {f.name for f in dataclasses.fields(cfg_cls)}
        assert set(args.config) <= fields - file_fields, name
        cfg_cls(**args.config, **dict.fromkeys(file_fields, "x"))


def test_every_model_has_its_deployment_in_the_models_application():
    app = models_app()
    assert app["import_path"] == "serve_app.apps.models:build"
    names = {d["name"] for d in app["deployments"]}
    assert set(MODELS) <= names


def test_a_serve_config_without_the_models_application_is_refused(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "face_mask", "args": {}}]}))
    with pytest.raises(ValueError, match=MODEL_APP):
        serve_config_models(path)
    path.write_text(yaml.safe_dump({"applications": [{"name": MODEL_APP, "args": {"models": {"FaceMesh": None}}}]}))
    assert serve_config_models(path) == {"FaceMesh": ModelArgs()}


# ---- pipelines name only models the tier serves -----------------------------------------


def test_every_pipeline_spec_names_served_models():
    specs = pipeline_specs()
    assert {"face_mask", "face_mask_sam2", "face_extract"} <= set(specs)
    configured = set(serve_config_models(SERVE_CONFIG))
    for module, spec in specs.items():
        assert spec.models, module
        for key, model in spec.models.items():
            assert model in MODELS, (module, key, model)
            assert model in configured, (module, key, model)


def test_every_pipeline_spec_has_its_application_in_serve_config():
    apps = {a["name"]: a for a in serve_config_doc()["applications"]}
    for module, spec in pipeline_specs().items():
        assert spec.name in apps, module
        # Pipeline apps hold only their ingress: models live in the models application.
        assert all(d["name"] not in MODELS for d in apps[spec.name].get("deployments", [])), spec.name
