"""The model contract (deployments/base.py) holds for every model the tier serves, and the
light interface modules that pipelines and ingresses import load no model runtime: an
ingress that imports them does not pay for torch, ONNX Runtime or OpenVINO."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import serve_app.pipelines
from deployments.base import Model, TorchModel
from serve_app.config.model_tier import MODELS, model_class

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "openvino")
LIGHT_MODULES = (
    "deployments.types",
    "deployments.geometry",
    "deployments.facemesh.landmarks",
    "deployments.tddfa.crops",
    "deployments.tddfa.bfm",
    "deployments.mesh_renderer.scene",
    "deployments.base",  # the contract itself: models import it, so must the light side be able to
    "serve_app.pipelines",
    # Every pipeline module, found by walking the package: a new one is checked unlisted.
    *(f"serve_app.pipelines.{m.name}" for m in pkgutil.iter_modules(serve_app.pipelines.__path__)),
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_meets_the_contract(name):
    cls, _ = model_class(name)
    assert issubclass(cls, Model), name
    assert not inspect.isabstract(cls), name  # predict is written
    # Construction from (config, placement), as the adapter calls it.
    assert list(inspect.signature(cls.__init__).parameters)[1:3] == ["cfg", "placement"], name
    for verb in ("predict", "item_size", "describe", "close"):
        assert callable(getattr(cls, verb)), (name, verb)


def test_torch_models_leave_device_and_inference_mode_to_the_base():
    """A TorchModel subclass never places tensors or enters inference mode itself
    (transformers' Pipeline.forward): TorchModel.forward does, in one place."""
    torch_models = [cls for cls, _ in map(model_class, MODELS) if issubclass(cls, TorchModel)]
    assert {cls.__name__ for cls in torch_models} == {"SegFormerParser", "TDDFA", "MeshRenderer"}
    for cls in torch_models:
        source = inspect.getsource(inspect.getmodule(cls))
        for call in ("torch_device(", "inference(", "inference_mode(", "no_grad(", "prepare("):
            assert call not in source, (cls.__name__, call)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_interface_modules_import_no_model_runtime(module):
    # A fresh interpreter: this test process has loaded torch long ago.
    probe = (
        f"import importlib, sys; importlib.import_module({module!r}); print(sorted({set(HEAVY)!r} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "[]", (module, out)
