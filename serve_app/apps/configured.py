"""Every application of serve_config.yaml as a module-level Serve `Application`, for
Serve's own tooling (`serve build`, `serve run <import path>`), which takes Application
objects and no builder arguments:

    serve build serve_app.apps.configured:models serve_app.apps.configured:face_mask \\
        serve_app.apps.configured:face_mask_sam2 ... -o built.yaml

Each attribute is named after its application in serve_config.yaml and is what that
application's `import_path` builder returns for its `args`. It is built on first access,
not at import: building resolves the models' weights. FACEGRAPH_SERVE_CONFIG picks
another config (e.g. serve_config.gpu.yaml).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from pathlib import Path

import yaml

from serve_app.config.settings import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"


def config_path() -> Path:
    return Path(os.environ.get("FACEGRAPH_SERVE_CONFIG") or DEFAULT_CONFIG)


def applications() -> dict[str, tuple[str, dict]]:
    """{application name: (its builder's import path, its args)} from the serve config."""
    config = yaml.safe_load(config_path().read_text())
    return {app["name"]: (app["import_path"], app.get("args") or {}) for app in config["applications"]}


@functools.cache
def build(name: str):
    """The Application serve_config.yaml deploys as `name`: its builder called with its
    args, typed as the builder declares (as `serve run serve_config.yaml` does)."""
    import_path, args = applications()[name]
    module, _, attr = import_path.partition(":")
    builder = getattr(importlib.import_module(module), attr)
    args_type = inspect.signature(builder).parameters["args"].annotation
    return builder(args_type(**args))


def __getattr__(name: str):
    if name.startswith("__") or name not in applications():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return build(name)
