"""ModelCalls (the model tier by name) and the /health, /ready routes, against
in-process stand-ins for deployment handles: no Ray."""

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app import errors
from serve_app.apps import ingress
from serve_app.apps.ingress import ModelCalls, add_health_routes
from serve_app.config.model_tier import MODEL_APP


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
        {
            "Good": Handle({"weights": "w", "device": "cpu"}),
            "Slow": Handle("hang"),
            "Dead": Handle(RuntimeError("replica died")),
            "Missing": errors.not_ready("Missing is not deployed"),
        },
    )
    described = asyncio.run(calls.describe())
    assert described == {
        "Dead": "unavailable: RuntimeError",
        "Good": {"weights": "w", "device": "cpu"},
        "Missing": "Missing is not deployed",
        "Slow": "no answer within 0.05 s",
    }


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


class Failing:
    """A handle whose first calls fail with the given exceptions, then answer "ok"."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.calls = 0

    def remote(self, item):
        self.calls += 1

        async def answer():
            if self.failures:
                raise self.failures.pop(0)
            return "ok"

        return Pending(answer())


class Pending:
    """An awaitable with cancel(), as a DeploymentResponse is."""

    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()

    def cancel(self):
        self.coro.close()


def test_a_call_lost_with_its_replica_is_sent_again(monkeypatch):
    """A replica killed (or its node lost) fails the calls it holds; model calls are
    pure, so each is sent again, to the replica Serve routes it to next."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve.exceptions import ReplicaUnavailableError

    monkeypatch.setattr(ingress, "REPLICA_LOST_BACKOFF_S", 0)
    handle = Failing(ActorDiedError(), ReplicaUnavailableError("r1"))
    calls = FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": handle})
    assert asyncio.run(calls.call("detect")("item")) == "ok" and handle.calls == 3

    # Beyond REPLICA_LOST_RETRIES it fails: a poison item does not take down every replica.
    handle = Failing(*[ActorUnavailableError("gone", None) for _ in range(ingress.REPLICA_LOST_RETRIES + 1)])
    calls = FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": handle})
    with pytest.raises(ActorUnavailableError):
        asyncio.run(calls.call("detect")("item"))
    assert handle.calls == ingress.REPLICA_LOST_RETRIES + 1


def test_a_model_failure_is_not_retried():
    handle = Failing(RuntimeError("bad item"))
    calls = FakeCalls({"detect": "RetinaFace"}, {"RetinaFace": handle})
    with pytest.raises(RuntimeError):
        asyncio.run(calls.call("detect")("item"))
    assert handle.calls == 1


def error_app(exc: Exception) -> TestClient:
    """An app from create_app whose one route fails under `guarded` with `exc`."""
    from serve_app.web.http import create_app

    app, _ = create_app("test", "test")

    @app.post("/work")
    async def work():
        async def fail():
            raise exc

        return await ingress.guarded(fail(), 5, errors.upstream_timeout("too slow"))

    return TestClient(app)


def test_a_full_model_queue_is_503_overloaded_with_retry_after():
    """Serve's BackPressureError (a model deployment's max_queued_requests reached)
    becomes the shared error shape with Retry-After, in whole seconds, rounded up."""
    from ray.serve.exceptions import BackPressureError

    resp = error_app(BackPressureError(num_queued_requests=9, max_queued_requests=8, retry_after_s=1.5)).post("/work")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
    body = resp.json()
    assert set(body) == {"error", "message", "request_id"} and body["error"] == "overloaded"
    assert resp.headers["x-request-id"] == body["request_id"]
    # No retry_after_s configured: still a Retry-After, of 1 s.
    resp = error_app(BackPressureError(num_queued_requests=9, max_queued_requests=8)).post("/work")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"


def test_a_lost_replica_past_the_retries_is_503_not_ready_without_retry_after():
    from ray.exceptions import ActorDiedError

    resp = error_app(ActorDiedError()).post("/work")
    assert resp.status_code == 503 and resp.json()["error"] == "not_ready" and "retry-after" not in resp.headers
