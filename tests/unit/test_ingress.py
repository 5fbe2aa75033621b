"""ModelCalls (the model tier by name) and the /health, /ready routes, against
in-process stand-ins for deployment handles: no Ray."""

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app import errors
from serve_app.apps import ingress
from serve_app.apps.ingress import ModelCalls, add_health_routes
from serve_app.model_tier import MODEL_APP


class Handle:
    """The parts of a DeploymentHandle ModelCalls uses: .remote() returning an
    awaitable with cancel() (a DeploymentResponse; here a Future, which has both),
    and .describe.remote()."""

    def __init__(self, describe=None):
        self.pending = None
        self.describe = Describe(describe)

    def remote(self, item):
        self.pending = asyncio.get_running_loop().create_future()
        return self.pending


class Describe:
    """describe.remote(): its answer, an exception to raise, or "hang" (never answers)."""

    def __init__(self, answer):
        self.answer = answer

    def remote(self):
        async def answer():
            if self.answer == "hang":
                await asyncio.sleep(3600)
            if isinstance(self.answer, BaseException):
                raise self.answer
            return self.answer

        return answer()


class FakeCalls(ModelCalls):
    """ModelCalls with its handle lookup answered from a dict (name -> Handle or an
    ApiError, as the real lookup raises when the model tier lacks the model)."""

    def __init__(self, models, handles):
        super().__init__(models)
        self.fakes = handles
        self.lookups: list[str] = []

    async def handle(self, name):
        self.lookups.append(name)
        found = self.fakes[name]
        if isinstance(found, errors.ApiError):
            raise found
        return found


def test_a_cancelled_call_is_withdrawn_from_the_model():
    """On our cancellation (the request deadline) the model call is cancelled too, so
    the replica drops the work."""
    async def go():
        handle = Handle()
        task = asyncio.create_task(FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": handle}).call("detect")("item"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return handle.pending.cancelled()

    assert asyncio.run(go())


def test_a_result_passes_through():
    async def go():
        handle = Handle()
        task = asyncio.create_task(FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": handle}).call("detect")("item"))
        await asyncio.sleep(0.01)
        handle.pending.set_result(42)
        return await task

    assert asyncio.run(go()) == 42


def test_calls_are_by_pipeline_key_and_look_the_model_up_when_used():
    calls = FakeCalls({"detect": "RetinaFace", "embed": "ArcFace"}, {"RetinaFace": Handle(), "ArcFace": Handle()})
    fns = calls.calls()
    assert set(fns) == {"detect", "embed"}
    assert calls.lookups == []  # nothing looked up until a call: the model tier may come up later

    async def go():
        task = asyncio.create_task(fns["embed"]("crops"))
        await asyncio.sleep(0.01)
        calls.fakes["ArcFace"].pending.set_result("embeddings")
        return await task

    assert asyncio.run(go()) == "embeddings" and calls.lookups == ["ArcFace"]


def test_a_missing_model_is_not_ready():
    calls = FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": errors.not_ready("model RetinaFace is not deployed")})
    with pytest.raises(errors.ApiError) as info:
        asyncio.run(calls.call("detect")("item"))
    assert info.value.status == 503 and info.value.code == "not_ready"


def test_describe_reports_each_model_or_its_problem(monkeypatch):
    monkeypatch.setattr(ingress, "READY_TIMEOUT_S", 0.05)
    calls = FakeCalls(
        {"a": "Good", "b": "Slow", "c": "Dead", "d": "Missing", "e": "Good"},  # two keys, one model
        {"Good": Handle({"weights": "w", "device": "cpu"}), "Slow": Handle("hang"),
         "Dead": Handle(RuntimeError("replica died")), "Missing": errors.not_ready("Missing is not deployed")})
    described = asyncio.run(calls.describe())
    assert described == {"Dead": "unavailable: RuntimeError", "Good": {"weights": "w", "device": "cpu"},
                         "Missing": "Missing is not deployed", "Slow": "no answer within 0.05 s"}


def app_with(calls: ModelCalls, services=dict) -> TestClient:
    app = FastAPI()
    add_health_routes(app, lambda: calls, services)
    return TestClient(app)


def test_health_names_the_models_and_the_services():
    calls = FakeCalls({"mesh": "FaceMesh"}, {})
    body = app_with(calls, lambda: {"SAM2": "not configured"}).get("/health").json()
    assert body["status"] == "ok" and body["version"]
    assert body["models"] == {"FaceMesh": f"served by the {MODEL_APP} application", "SAM2": "not configured"}
    assert calls.lookups == []  # /health does not call the models


def test_ready_is_503_until_every_model_answers(monkeypatch):
    monkeypatch.setattr(ingress, "READY_TIMEOUT_S", 0.05)
    good = Handle({"weights": "retinaface-det-500m", "device": "cpu"})
    calls = FakeCalls({"detect": "RetinaFace", "embed": "ArcFace"}, {"RetinaFace": good, "ArcFace": Handle("hang")})
    client = app_with(calls)
    resp = client.get("/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not_ready"
    assert body["models"] == {"RetinaFace": "retinaface-det-500m", "ArcFace": "unknown"}
    assert body["checks"] == {"RetinaFace": "ok", "ArcFace": "no answer within 0.05 s"}

    calls.fakes["ArcFace"] = Handle({"weights": "arcface-mobilefacenet-128d", "device": "cpu"})
    resp = client.get("/ready")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["checks"] == {"RetinaFace": "ok", "ArcFace": "ok"}
    assert body["models"] == {"RetinaFace": "retinaface-det-500m", "ArcFace": "arcface-mobilefacenet-128d"}
