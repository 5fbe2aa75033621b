"""The serving adapter's in-process half (LocalBatcher, isolation, work-unit batching,
placement, PipelineWorker), on small real model classes that meet the contract
(deployments.base.Model), not mocks: they compute what they are asked."""

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from deployments.arcface.model import ArcFace
from deployments.base import Model
from deployments.serving import (
    LocalBatcher,
    ModelError,
    PipelineWorker,
    build_model,
    health_entry,
    placement_for,
    predict_isolated,
    runtime_placement,
)
from deployments.types import Placement


@dataclass(frozen=True, kw_only=True)
class SquareConfig:
    offset: int = 0


class Square(Model):
    """Squares numbers (plus the config's offset); refuses negatives (to exercise
    per-item failure). Everything else is the contract's default."""

    def __init__(self, cfg: SquareConfig, placement: Placement = Placement()):
        super().__init__(cfg, placement)
        self.calls: list[int] = []

    def predict(self, items):
        self.calls.append(len(items))
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x * x + self.cfg.offset for x in items]


class FaceNorms(Model):
    """ArcFace-shaped items: one image's aligned faces stacked [K, H, W, 3] (or one
    face [H, W, 3]); the result is each face's pixel sum. Counts work in faces with
    ArcFace's own item_size."""

    item_size = staticmethod(ArcFace.item_size)

    def __init__(self, cfg=None, placement: Placement = Placement()):
        super().__init__(cfg, placement)
        self.faces_per_call: list[int] = []
        self.items_per_call: list[int] = []

    def predict(self, items):
        self.items_per_call.append(len(items))
        self.faces_per_call.append(sum(self.item_size(i) for i in items))
        return [i.reshape(-1, *i.shape[-3:]).sum(axis=(1, 2, 3)) for i in items]


def stack(k: int, value: float) -> np.ndarray:
    return np.full((k, 2, 2, 3), value, np.float32)


def test_concurrent_calls_share_one_predict():
    model = Square(SquareConfig())
    batcher = LocalBatcher(model)

    async def run():
        return await asyncio.gather(*(batcher(i) for i in range(10)))

    assert asyncio.run(run()) == [i * i for i in range(10)]
    assert model.calls == [10]


def test_batches_are_capped():
    model = Square(SquareConfig())
    batcher = LocalBatcher(model, max_batch_size=4)

    async def run():
        return await asyncio.gather(*(batcher(i) for i in range(10)))

    asyncio.run(run())
    assert model.calls == [4, 4, 2]


def test_one_bad_item_fails_alone():
    model = Square(SquareConfig())
    out = predict_isolated(model, [1, -2, 3])
    assert out[0] == 1 and out[2] == 9 and type(out[1]).__name__ == "ItemFailed"

    batcher = LocalBatcher(Square(SquareConfig()))

    async def run():
        return await asyncio.gather(batcher(2), batcher(-1), return_exceptions=True)

    good, bad = asyncio.run(run())
    assert good == 4 and isinstance(bad, ModelError)


# ---- work units: a batch counts faces, not calls ------------------------------------


def test_item_size_is_the_models_own_or_one():
    assert Square(SquareConfig()).item_size(7) == 1
    sized = FaceNorms().item_size
    assert sized(stack(5, 0)) == 5 and sized(np.zeros((112, 112, 3), np.float32)) == 1
    assert ArcFace.item_size(np.zeros((0, 112, 112, 3), np.float32)) == 0


def test_stacks_are_batched_up_to_max_batch_size_faces():
    model = FaceNorms()
    batcher = LocalBatcher(model, max_batch_size=8)
    sizes = [3, 2, 4, 1, 5, 3, 1, 2, 6]

    async def run():
        return await asyncio.gather(*(batcher(stack(k, i)) for i, k in enumerate(sizes)))

    out = asyncio.run(run())
    # Every caller gets its own faces back, in order.
    for i, (k, res) in enumerate(zip(sizes, out)):
        np.testing.assert_array_equal(res, np.full(k, i * 12, np.float32))
    assert sum(model.faces_per_call) == sum(sizes)
    assert max(model.faces_per_call) <= 8
    # Greedy in arrival order: 3+2 (+4 would be 9), 4+1 (+5), 5+3, 1+2 (+6), 6.
    assert model.faces_per_call == [5, 5, 8, 3, 6]
    assert model.items_per_call == [2, 2, 2, 2, 1]
    assert sum(model.items_per_call) == len(sizes)


def test_an_oversized_stack_runs_alone():
    model = FaceNorms()
    batcher = LocalBatcher(model, max_batch_size=4)
    sizes = [1, 10, 2, 1, 9]

    async def run():
        return await asyncio.gather(*(batcher(stack(k, 1)) for k in sizes))

    out = asyncio.run(run())
    assert [len(r) for r in out] == sizes
    # 10 and 9 are over the cap: each is a batch of its own, never joined by another.
    assert model.faces_per_call == [1, 10, 3, 9]
    assert model.items_per_call == [1, 1, 2, 1]
    for faces, items in zip(model.faces_per_call, model.items_per_call):
        assert faces <= 4 or items == 1


def test_single_faces_and_stacks_mix():
    model = FaceNorms()
    batcher = LocalBatcher(model, max_batch_size=4)
    items = [np.ones((2, 2, 3), np.float32), stack(3, 1), np.ones((2, 2, 3), np.float32)]

    async def run():
        return await asyncio.gather(*(batcher(i) for i in items))

    out = asyncio.run(run())
    assert [len(r) for r in out] == [1, 3, 1]
    assert model.faces_per_call == [4, 1]


# ---- placement ------------------------------------------------------------------------


def test_outside_ray_a_model_is_placed_on_one_cpu_thread():
    assert runtime_placement() == Placement(device="cpu", threads=1)
    model = build_model(Square, SquareConfig(offset=1))
    assert model.placement == Placement() and model.predict([3]) == [10]


def test_a_logical_gpu_without_a_device_places_the_model_on_the_cpu():
    """A node advertising a GPU it does not have (the cluster rehearsal's GPU worker):
    its models run on the CPU, with the threads of their CPU share."""
    assert placement_for({"CPU": 1.0, "GPU": 0.25}, cuda_present=True) == Placement(device="cuda", threads=1)
    assert placement_for({"CPU": 1.0, "GPU": 0.25}, cuda_present=False) == Placement(device="cpu", threads=1)
    assert placement_for({"CPU": 0.125}, cuda_present=True) == Placement(device="cpu", threads=1)
    assert placement_for({"CPU": 2.0}, cuda_present=False) == Placement(device="cpu", threads=2)


# ---- the contract is what the adapter reads ----------------------------------------------


def test_the_adapter_takes_only_models_that_meet_the_contract():
    class Loose:  # predict alone, no contract: refused where it is handed over, not later
        def predict(self, items):
            return items

    with pytest.raises(TypeError, match="Loose does not subclass deployments.base.Model"):
        LocalBatcher(Loose())
    with pytest.raises(TypeError, match="Model"):
        build_model(lambda cfg, placement: Loose(), None)
    with pytest.raises(TypeError):  # predict is abstract: a model must write it
        type("NoPredict", (Model,), {})(None)


def test_health_entry_is_weights_placement_and_the_models_describe():
    model = Square(SquareConfig())
    model.close()  # the contract's default: nothing to release
    assert model.describe() == {"runtime": None}
    assert health_entry(model, "squares", Placement(threads=2)) == {"weights": "squares", "device": "cpu"}


# ---- PipelineWorker (Ray Data's callable class), without Ray ---------------------------


async def _process(row, models):
    return {"x": row["x"], "y": await models["square"](row["x"])}


def test_pipeline_worker_runs_rows_as_one_batch():
    worker = PipelineWorker({"square": (Square, SquareConfig())}, _process)
    assert asyncio.iscoroutinefunction(type(worker).__call__)
    out = asyncio.run(worker({"x": [1, 2, 3]}))
    assert out == {"x": [1, 2, 3], "y": [1, 4, 9]}
    assert worker.models["square"].batch_sizes == {3: 1}
    # A second block may come on another event loop: the batcher must not be tied to the first.
    assert asyncio.run(worker({"x": [4]}))["y"] == [16]


def test_pipeline_worker_blocks_share_one_loop_and_count_faces():
    """An async callable class keeps one event loop per actor: blocks awaited there
    concurrently share the model's batches, still capped in faces."""

    async def faces(row, models):
        return {"n": len(await models["embed"](stack(int(row["k"]), 1)))}

    worker = PipelineWorker({"embed": (FaceNorms, None)}, faces, max_batch_size=6)

    async def two_blocks():
        return await asyncio.gather(worker({"k": [2, 3, 4]}), worker({"k": [1, 7]}))

    first, second = asyncio.run(two_blocks())
    assert first == {"n": [2, 3, 4]} and second == {"n": [1, 7]}
    model = worker.models["embed"].model
    assert sum(model.faces_per_call) == 17
    assert all(f <= 6 or i == 1 for f, i in zip(model.faces_per_call, model.items_per_call))


def test_pipeline_worker_keeps_every_row_when_a_model_fails():
    async def process(row, models):
        try:
            return {"x": row["x"], "y": await models["square"](row["x"]), "error": None}
        except ModelError as exc:
            return {"x": row["x"], "y": None, "error": str(exc)}

    worker = PipelineWorker({"square": (Square, SquareConfig())}, process)
    out = asyncio.run(worker({"x": [2, -1, 3]}))
    assert out["x"] == [2, -1, 3] and out["y"] == [4, None, 9]
    assert out["error"][0] is None and "Square" in out["error"][1]


def test_an_empty_block_is_an_empty_result():
    worker = PipelineWorker({"square": (Square, SquareConfig())}, _process)
    assert asyncio.run(worker({"x": []})) == {}
