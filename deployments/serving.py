"""The one serving adapter: any model class with `predict(list) -> list` becomes

  * a Ray Serve deployment (`model_deployment`) whose `__call__(item)` is batched
    across requests with `@serve.batch`, with batch size and wait timeout set at run
    time from `user_config`, custom metrics, and per-item failure isolation;
  * an in-process awaitable (`LocalBatcher`) with the same call shape, which gathers
    concurrent calls into one `predict` (batch jobs, unit tests, benchmarks);
  * a Ray Data callable class (`PipelineWorker`) that builds the models once per actor
    and runs pipeline glue over each block of rows.

Seven models, one adapter: no per-model copy of this boilerplate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from ray import serve
from ray.serve import metrics

log = logging.getLogger("facegraph.serving")

BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64]
LATENCY_MS_BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


class ItemFailed:
    """Marks one item of a batch that failed on its own (the rest still succeed)."""

    def __init__(self, error: str):
        self.error = error


class ModelError(RuntimeError):
    """A model could not process one item; raised to that item's caller only."""


def runtime_placement() -> tuple[str, int]:
    """(device, threads) for a model in this Ray worker: CUDA when Ray assigned a GPU,
    threads = the CPUs Ray assigned (at least 1). Plain CPU/1 outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return "cpu", 1
        assigned = ray.get_runtime_context().get_assigned_resources()
    except Exception:
        return "cpu", 1
    device = "cuda" if assigned.get("GPU", 0) > 0 else "cpu"
    return device, max(1, round(assigned.get("CPU", 1)))


def build_model(model_cls: type, cfg: Any) -> Any:
    """Instantiate a model with device/threads filled in from Ray's assignment."""
    device, threads = runtime_placement()
    fields = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    updates = {k: v for k, v in (("device", device), ("num_threads", threads)) if k in fields}
    return model_cls(dataclasses.replace(cfg, **updates) if updates else cfg)


def predict_isolated(model: Any, items: list) -> list:
    """model.predict over a batch; if the batch fails, retry item by item so one bad
    item fails alone instead of failing every request that shares its batch."""
    try:
        out = model.predict(items)
        if len(out) != len(items):
            raise RuntimeError(f"predict returned {len(out)} results for {len(items)} items")
        return out
    except Exception:
        if len(items) == 1:
            log.exception("%s failed on one item", type(model).__name__)
            return [ItemFailed(f"{type(model).__name__} failed on this item")]
        results = []
        for item in items:
            results.extend(predict_isolated(model, [item]))
        return results


@serve.deployment(
    max_ongoing_requests=32,
    ray_actor_options={"num_cpus": 0.5},
    user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
)
class ModelServer:
    """A Serve replica around one model. Deployed under the model's class name."""

    def __init__(self, model_cls: type, cfg: Any):
        self.name = model_cls.__name__
        self.model = build_model(model_cls, cfg)
        self.batch_sizes: Counter[int] = Counter()
        tags = ("model",)
        self._m_batch = metrics.Histogram(
            "facegraph_model_batch_size", description="Items per predict() call",
            boundaries=BATCH_SIZE_BUCKETS, tag_keys=tags)
        self._m_items = metrics.Counter(
            "facegraph_model_items_total", description="Items predicted", tag_keys=tags)
        self._m_latency = metrics.Histogram(
            "facegraph_model_batch_latency_ms", description="Wall time of one predict() call",
            boundaries=LATENCY_MS_BUCKETS, tag_keys=tags)
        for m in (self._m_batch, self._m_items, self._m_latency):
            m.set_default_tags({"model": self.name})

    def reconfigure(self, user_config: dict) -> None:
        # max_ongoing_requests must be >= max_batch_size or batches never fill; the
        # config test checks serve_config.yaml for that.
        self._batched.set_max_batch_size(int(user_config.get("max_batch_size", 8)))
        self._batched.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))

    async def __call__(self, item: Any) -> Any:
        out = await self._batched(item)
        if isinstance(out, ItemFailed):
            raise ModelError(out.error)
        return out

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, items: list) -> list:
        start = time.perf_counter()
        # A worker thread keeps the replica's event loop free to queue the next batch;
        # max_concurrent_batches=1 (the default) keeps one predict() at a time.
        out = await asyncio.to_thread(predict_isolated, self.model, items)
        self._m_latency.observe((time.perf_counter() - start) * 1000)
        self._m_batch.observe(len(items))
        self._m_items.inc(len(items))
        self.batch_sizes[len(items)] += 1
        return out

    def batch_stats(self) -> dict[int, int]:
        """Batch sizes seen by this replica: {size: count} (for tests and debugging)."""
        return dict(self.batch_sizes)


def model_deployment(model_cls: type, cfg: Any, **options: Any):
    """A bound Serve deployment named after the model class. Options given here are
    defaults; serve_config.yaml overrides them per deployment name."""
    return ModelServer.options(name=model_cls.__name__, **options).bind(model_cls, cfg)


class LocalBatcher:
    """In-process stand-in for a deployment handle's `.remote`: calls awaited within a
    short window are gathered into one `predict(list)`, one batch at a time."""

    def __init__(self, model: Any, max_batch_size: int = 32, wait_s: float = 0.002):
        self.model = model
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self.batch_sizes: Counter[int] = Counter()

    async def __call__(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(self.wait_s, lambda: loop.create_task(self._flush()))
        out = await fut
        if isinstance(out, ItemFailed):
            raise ModelError(out.error)
        return out

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:  # PipelineWorker runs a fresh loop per block
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            self._flush_scheduled = False
            while self._pending:
                chunk, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
                items = [item for item, _ in chunk]
                self.batch_sizes[len(items)] += 1
                try:
                    results = await asyncio.to_thread(predict_isolated, self.model, items)
                except BaseException as exc:  # never leave a caller waiting forever
                    results = [ItemFailed(repr(exc))] * len(items)
                for (_, fut), res in zip(chunk, results):
                    if not fut.done():
                        fut.set_result(res)


ProcessFn = Callable[[dict, dict[str, Callable[[Any], Awaitable[Any]]]], Awaitable[dict]]


class PipelineWorker:
    """Ray Data callable class: `ds.map_batches(PipelineWorker, fn_constructor_kwargs=
    {"models": {"detect": (LBPDetector, cfg), ...}, "process": async_fn})`.

    Builds each model once per actor, then for every block runs `process(row, models)`
    concurrently over the rows so each model sees the whole block as one batch.
    `process` must turn its own failures into an error field: no row is dropped."""

    def __init__(self, models: dict[str, tuple[type, Any]], process: ProcessFn, max_batch_size: int = 32):
        self.models = {
            key: LocalBatcher(build_model(cls, cfg), max_batch_size=max_batch_size)
            for key, (cls, cfg) in models.items()
        }
        self.process = process

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        keys = list(batch)
        n = len(batch[keys[0]]) if keys else 0
        rows = [{k: batch[k][i] for k in keys} for i in range(n)]

        async def run_all():
            return await asyncio.gather(*(self.process(row, self.models) for row in rows))

        out_rows = asyncio.run(run_all())
        columns = list(out_rows[0]) if out_rows else []
        return {c: [r.get(c) for r in out_rows] for c in columns}
