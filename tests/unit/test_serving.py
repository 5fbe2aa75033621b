"""The serving adapter's in-process half (LocalBatcher, isolation, PipelineWorker),
on a small real model class, not a mock: it computes what it is asked."""

import asyncio
from dataclasses import dataclass


from deployments.serving import LocalBatcher, ModelError, PipelineWorker, predict_isolated


@dataclass(frozen=True)
class SquareConfig:
    num_threads: int = 1
    device: str = "cpu"


class Square:
    """Squares numbers; refuses negatives (to exercise per-item failure)."""

    def __init__(self, cfg: SquareConfig):
        self.calls: list[int] = []

    def predict(self, items):
        self.calls.append(len(items))
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x * x for x in items]


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


async def _process(row, models):
    return {"x": row["x"], "y": await models["square"](row["x"])}


def test_pipeline_worker_runs_rows_as_one_batch():
    worker = PipelineWorker({"square": (Square, SquareConfig())}, _process)
    out = worker({"x": [1, 2, 3]})
    assert out == {"x": [1, 2, 3], "y": [1, 4, 9]}
    assert worker.models["square"].batch_sizes == {3: 1}
    # A second block runs on a fresh event loop: the batcher must not be tied to the first.
    assert worker({"x": [4]})["y"] == [16]
