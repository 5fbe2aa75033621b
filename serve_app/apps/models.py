"""Application `models` (route prefix /healthz): the model tier. Every model is ONE
deployment here, shared by every endpoint that uses it (Triton's model repository, in
Ray Serve: pipelines reach these deployments by name, serve_app/apps/ingress.py). Its
replicas, resources and batch sizes are configured once, in this application's block
of serve_config.yaml. Trade-off, accepted: an endpoint cannot be upgraded without its
models.

Its ingress, ModelTier, answers GET /healthz: every application's status and every
model's weights and device.
"""

# No `from __future__ import annotations` here: Serve reads the builder's real
# annotation to turn serve_config.yaml `args` into ModelsArgs.

import asyncio

from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.serving import model_deployment
from serve_app import __version__
from serve_app.apps.ingress import READY_TIMEOUT_S
from serve_app.config.model_tier import MODELS, ModelArgs, model_config
from serve_app.web.http import create_app
from serve_app.web.schemas import RootHealthResponse

app, _ = create_app("models", "FaceGraph: model tier")


def application_statuses() -> dict[str, str]:
    """{application: status} from the Serve controller."""
    return {name: str(getattr(s.status, "value", s.status)) for name, s in serve.status().applications.items()}


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=16)
@serve.ingress(app)
class ModelTier:
    def __init__(self, models: dict[str, DeploymentHandle]):
        self.models = models

    @app.get("/", response_model=RootHealthResponse)
    async def healthz(self) -> RootHealthResponse:
        async def one(handle: DeploymentHandle):
            try:
                return await asyncio.wait_for(handle.describe.remote(), READY_TIMEOUT_S)
            except Exception as exc:  # a model that does not answer is reported, not raised
                return {"weights": "unknown", "device": "unknown", "problem": type(exc).__name__}

        described = await asyncio.gather(*(one(h) for h in self.models.values()))
        apps = await asyncio.to_thread(application_statuses)
        models = dict(zip(self.models, described))
        ok = all("problem" not in d for d in described) and all(s == "RUNNING" for s in apps.values())
        return RootHealthResponse(
            status="ok" if ok else "degraded", version=__version__, applications=apps, models=models
        )


class ModelsArgs(BaseModel):
    """Builder arguments: which models to serve, each with its weights and config."""

    models: dict[str, ModelArgs] = Field(default_factory=lambda: {name: ModelArgs() for name in MODELS})


def build(args: ModelsArgs) -> serve.Application:
    deployments = {}
    for name, model_args in args.models.items():
        cls, cfg, weights = model_config(name, model_args)
        deployments[name] = model_deployment(cls, cfg, weights)
    return ModelTier.bind(deployments)
