"""The model tier: every model FaceGraph serves, named once. Each is ONE Serve
deployment (in the `models` application, serve_app/apps/models.py) shared by every
endpoint that uses it, and the same entry builds it inside batch-job actors.

serve_config.yaml's `models` application holds each model's block: `asset` (which
weights) and `config` (its config dataclass's fields), plus resources, replicas and
batch sizes under `deployments:`. Pipelines refer to models by these names only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

MODEL_APP = "models"  # the application every model deployment lives in


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    module: str  # deployments.<module> holds class <name> and <name>Config
    asset_field: str | None = None  # the config field that takes the resolved asset path
    asset: str | None = None  # the production asset (serve_config.yaml may name another)
    # Further files the config takes: config field -> production asset.
    extra_assets: tuple[tuple[str, str], ...] = ()


MODELS: dict[str, ModelEntry] = {
    "LBPDetector": ModelEntry(
        module="deployments.lbp_detector.model", asset_field="cascade_path", asset="lbp-detector-cascade"
    ),
    "SegFormerParser": ModelEntry(
        module="deployments.segformer_parser.model", asset_field="checkpoint_dir", asset="segformer-parser-face-parsing"
    ),
    "FaceMesh": ModelEntry(module="deployments.facemesh.model"),
    "RetinaFace": ModelEntry(
        module="deployments.retinaface.model", asset_field="model_path", asset="retinaface-det-10g"
    ),
    "ArcFace": ModelEntry(module="deployments.arcface.model", asset_field="model_path", asset="arcface-w600k-r50"),
    "TDDFA": ModelEntry(
        module="deployments.tddfa.model",
        asset_field="weights_path",
        asset="tddfa-mb1-120",
        extra_assets=(("param_stats_path", "tddfa-param-mean-std"),),
    ),
    "MeshRenderer": ModelEntry(module="deployments.mesh_renderer.model"),
    # The people gallery: its store (SQLite in FACEGRAPH_DATA_DIR, or PostgreSQL) is its config, not an asset.
    "FaceGallery": ModelEntry(module="deployments.face_gallery.model"),
}

# The morphable model that turns TDDFA's parameters into a mesh: plain numpy in the
# pipelines that need it, not a deployment. The production file and the files its
# loader needs beside it (3DDFA_V2's own triangles and UVs).
MORPHABLE_MODEL = "tddfa-bfm-noneck-v3"
MORPHABLE_MODEL_FILES = {"tri_path": "tddfa-tri", "uv_mat_path": "tddfa-bfm-uv", "indices_path": "tddfa-bfm-indices"}


class ModelArgs(BaseModel):
    """One model's block in the `models` application's args."""

    model_config = ConfigDict(extra="forbid")
    asset: str | None = Field(None, description="weights by manifest name; default: the model's production asset")
    assets: dict[str, str] = Field(
        default_factory=dict, description="other files by config field, e.g. param_stats_path: tddfa-param-mean-std"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="fields of the model's config dataclass")


def model_class(name: str) -> tuple[type, type]:
    """(model class, its config class) for a model-tier name."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the model tier has {', '.join(MODELS)}")
    module = importlib.import_module(MODELS[name].module)
    return getattr(module, name), getattr(module, name + "Config")


def built_in_weights(name: str) -> str:
    if name == "FaceMesh":
        from importlib import metadata

        return f"mediapipe {metadata.version('mediapipe')} face_mesh (bundled, refined 478 points)"
    return "built in"


def model_config(name: str, args: ModelArgs | None = None) -> tuple[type, Any, str]:
    """(model class, its config, the weights in use) for one model, with the asset
    resolved to a path (stand-ins only where FACEGRAPH_ALLOW_STAND_INS allows)."""
    from serve_app.config.assets import resolve_for_serving

    args = args or ModelArgs()
    entry = MODELS[name]
    cls, cfg_cls = model_class(name)
    kwargs = dict(args.config)
    weights = built_in_weights(name)
    if entry.asset_field:
        weights, path = resolve_for_serving(args.asset or entry.asset)
        kwargs[entry.asset_field] = str(path)
    for field_name, asset in entry.extra_assets:
        kwargs[field_name] = str(resolve_for_serving(args.assets.get(field_name, asset))[1])
    return cls, cfg_cls(**kwargs), weights


def served_weights(name: str, args: ModelArgs | None = None) -> str:
    """The weights a model's block serves (its asset, or that asset's stand-in where
    allowed), by manifest name, without building the model: what its describe() will say."""
    from serve_app.config.assets import resolve_for_serving

    entry, args = MODELS[name], args or ModelArgs()
    return resolve_for_serving(args.asset or entry.asset)[0] if entry.asset_field else built_in_weights(name)


def recogniser_threshold(weights: str) -> float | None:
    """The calibrated similarity threshold of a recogniser's weights, by the name a
    model's describe() reports (the manifest asset actually served, stand-ins included);
    None when the manifest has none for them. The threshold belongs to the weights, not
    to the ArcFace class: a 128-d MobileFaceNet and a 512-d ResNet-50 need different ones."""
    from serve_app.config.assets import load_manifest

    asset = load_manifest().get(weights)
    return asset.similarity_threshold if asset is not None else None


class NoCalibratedThreshold(ValueError):
    """A recogniser's weights with no calibrated similarity threshold in the manifest:
    the caller must give one (422 over HTTP, an argument error in a batch job)."""


def calibrated_threshold(weights: str) -> float:
    """recogniser_threshold, or NoCalibratedThreshold naming the weights."""
    threshold = recogniser_threshold(weights)
    if threshold is None:
        raise NoCalibratedThreshold(
            f"the recogniser's weights {weights} have no calibrated similarity threshold in assets/manifest.yaml"
        )
    return threshold


def morphable_model(asset: str = MORPHABLE_MODEL):
    """(MorphableModel, its description) from the production file, or its stand-in
    where FACEGRAPH_ALLOW_STAND_INS allows (here: assembled from the BFM pieces)."""
    from deployments.tddfa.bfm import MorphableModel
    from serve_app.config.assets import resolve_for_serving

    _, path = resolve_for_serving(asset)
    files = {name: resolve_for_serving(a)[1] for name, a in MORPHABLE_MODEL_FILES.items()}
    model = MorphableModel.load(path, **files)
    return model, model.description


def serve_config_models(path: str | Path) -> dict[str, ModelArgs]:
    """The model blocks of a serve config's `models` application (batch jobs build
    their models from the same file the server uses)."""
    doc = yaml.safe_load(Path(path).read_text())
    for app in doc.get("applications", []):
        if app.get("name") == MODEL_APP:
            return {name: ModelArgs(**(block or {})) for name, block in app.get("args", {}).get("models", {}).items()}
    raise ValueError(f"{path} has no {MODEL_APP!r} application")
