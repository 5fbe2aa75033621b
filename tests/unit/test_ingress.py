import asyncio

import pytest

from serve_app.apps.ingress import model_call


class Handle:
    """The one part of a DeploymentHandle model_call uses: .remote() returning an
    awaitable with cancel() (a DeploymentResponse; here a Future, which has both)."""

    def __init__(self):
        self.pending = None

    def remote(self, item):
        self.pending = asyncio.get_running_loop().create_future()
        return self.pending


def test_a_cancelled_call_is_withdrawn_from_the_model():
    """On our cancellation (the request deadline) the model call is cancelled too, so
    the replica drops the work."""
    async def go():
        handle = Handle()
        task = asyncio.create_task(model_call(handle)("item"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return handle.pending.cancelled()

    assert asyncio.run(go())


def test_a_result_passes_through():
    async def go():
        handle = Handle()
        task = asyncio.create_task(model_call(handle)("item"))
        await asyncio.sleep(0.01)
        handle.pending.set_result(42)
        return await task

    assert asyncio.run(go()) == 42
