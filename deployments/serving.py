"""The one serving adapter: any model class that meets the contract (deployments/base.py's
`Model`: predict, item_size, describe, close) becomes

  * a Ray Serve deployment (`model_deployment`) whose `__call__(item)` is batched
    across requests with `@serve.batch`, with batch size and wait timeout set at run
    time from `user_config`, custom metrics, and per-item failure isolation;
  * an in-process awaitable (`LocalBatcher`) with the same call shape, which gathers
    concurrent calls into one `predict` (batch jobs, unit tests, benchmarks);
  * a Ray Data callable class (`PipelineWorker`) that builds the models once per actor
    and runs pipeline glue over each block of rows.

Seven models, one adapter: no per-model copy of this boilerplate. The adapter reads the
contract only; it knows no concrete model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import metrics

from deployments.base import Model
from deployments.types import Placement

log = logging.getLogger("facegraph.serving")

# Ray's metrics agent rebuilds a histogram's _sum from bucket MIDPOINTS, not from the
# values observed: with boundaries [1, 2, 4, ...] every batch of 1 counted as 0.5. Each
# boundary sits half-way between integers, so a bucket holding one batch size has that
# size as its midpoint (exact up to 8; wider buckets above are approximate). Dashboards
# take the exact mean batch from the counters: items_total / batches_total.
BATCH_SIZE_BUCKETS = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 12.5, 16.5, 24.5, 32.5, 48.5, 64.5]
LATENCY_MS_BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


class ItemFailed:
    """Marks one item of a batch that failed on its own (the rest still succeed)."""

    def __init__(self, error: str):
        self.error = error


class ModelError(RuntimeError):
    """A model could not process one item; raised to that item's caller only."""


def runtime_placement() -> Placement:
    """Where a model in this Ray worker runs: CUDA when Ray assigned a GPU, threads =
    the CPUs Ray assigned (at least 1). CPU with one thread outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return Placement()
        assigned = ray.get_runtime_context().get_assigned_resources()
    except Exception:
        return Placement()
    return placement_for(assigned, cuda_device_present())


def cuda_device_present() -> bool:
    """Whether an NVIDIA GPU is in this machine or container (its device node)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def placement_for(assigned: dict[str, float], cuda_present: bool) -> Placement:
    """A GPU Ray assigned is CUDA only where a GPU is present: a node can advertise a
    logical one (`ray start --num-gpus 1`, as the cluster rehearsal's stand-in for a GPU
    worker does), and its models then run on the CPU and say so in /healthz, not crash."""
    cuda = assigned.get("GPU", 0) > 0
    if cuda and not cuda_present:
        log.warning("Ray assigned this replica a GPU but no NVIDIA device is here: running on the CPU")
        cuda = False
    return Placement(device="cuda" if cuda else "cpu", threads=max(1, round(assigned.get("CPU", 1))))


class _ToReplicaLog(logging.Handler):
    """Hands every `facegraph.*` record to Serve's logger ("ray.serve"), whose handlers
    write the replica's log file (JSON with `logging_config: {encoding: JSON}`) and add
    the request context: request_id, route, application. Inside a @serve.batch no single
    request is current, so a line names every request of the batch (ids joined by ",")."""

    def emit(self, record: logging.LogRecord) -> None:
        from ray.serve import context

        if not context._get_serve_request_context().request_id:
            ids = [c.request_id for c in context._get_serve_batch_request_context() if c.request_id]
            if ids:
                record.request_id = ",".join(ids)
        logging.getLogger("ray.serve").handle(record)


def log_to_replica_log() -> None:
    """Send our loggers' lines to the Serve replica's own log, request id included. Called
    once per replica: by ModelServer and, for every ingress, at its app's startup
    (serve_app/web/http.py). Idempotent; outside a replica our loggers are left alone."""
    from ray import serve

    try:
        serve.get_replica_context()
    except Exception:  # not a Serve replica (driver, batch job, unit test)
        return
    ours = logging.getLogger("facegraph")
    if not any(isinstance(h, _ToReplicaLog) for h in ours.handlers):
        ours.addHandler(_ToReplicaLog())
        ours.propagate = False  # one copy of each line, in the replica log, not again on stderr
        # The deployment's logging_config.log_level governs our lines too.
        ours.setLevel(logging.getLogger("ray.serve").level or logging.INFO)


def checked(model: Any) -> Model:
    """The model, if it meets the contract (a model class must subclass base.Model)."""
    if not isinstance(model, Model):
        raise TypeError(f"{type(model).__name__} does not subclass deployments.base.Model")
    return model


def build_model(model_cls: type[Model], cfg: Any) -> Model:
    """A model placed where Ray put this worker (the placement is an argument)."""
    return checked(model_cls(cfg, runtime_placement()))


def health_entry(model: Model, weights: str, placement: Placement) -> dict[str, str]:
    """What health routes show for one model: its weights, where Ray placed it (`device`)
    and what the model says it runs on (`runtime`, `backend` where it has several:
    Model.describe), leaving out what the model does not know (None)."""
    described = {key: value for key, value in model.describe().items() if value is not None}
    return {"weights": weights, "device": placement.device, **described}


class _Work:
    """An item with its work size, as it waits in a @serve.batch queue."""

    __slots__ = ("item", "size")

    def __init__(self, item: Any, size: int):
        self.item, self.size = item, size


def _work_total(works: list[_Work]) -> int:
    return sum(w.size for w in works)


def predict_isolated(model: Model, items: list) -> list:
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
    ray_actor_options={"num_cpus": 0.25},
    user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
)
class ModelServer:
    """A Serve replica around one model. Deployed under the model's class name."""

    def __init__(self, model_cls: type[Model], cfg: Any, weights: str = ""):
        log_to_replica_log()
        self.name = model_cls.__name__
        self.weights = weights
        self.placement = runtime_placement()
        self.model = checked(model_cls(cfg, self.placement))
        self.max_batch_size = 8
        self.batch_sizes: Counter[int] = Counter()
        tags = ("model",)
        self._m_batch = metrics.Histogram(
            "facegraph_model_batch_size",
            description="Items per predict() call",
            boundaries=BATCH_SIZE_BUCKETS,
            tag_keys=tags,
        )
        self._m_items = metrics.Counter("facegraph_model_items_total", description="Items predicted", tag_keys=tags)
        self._m_batches = metrics.Counter(
            "facegraph_model_batches_total", description="predict() calls (batches)", tag_keys=tags
        )
        self._m_latency = metrics.Histogram(
            "facegraph_model_batch_latency_ms",
            description="Wall time of one predict() call",
            boundaries=LATENCY_MS_BUCKETS,
            tag_keys=tags,
        )
        for m in (self._m_batch, self._m_items, self._m_batches, self._m_latency):
            m.set_default_tags({"model": self.name})

    def reconfigure(self, user_config: dict) -> None:
        # max_ongoing_requests must be >= max_batch_size or batches never fill; the
        # config test checks serve_config.yaml for that.
        self.max_batch_size = int(user_config.get("max_batch_size", 8))
        self._batched.set_max_batch_size(self.max_batch_size)
        self._batched.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))

    async def __call__(self, item: Any) -> Any:
        # An item larger than a whole batch still runs, alone: its size is capped.
        out = await self._batched(_Work(item, min(self.model.item_size(item), self.max_batch_size)))
        if isinstance(out, ItemFailed):
            raise ModelError(out.error)
        return out

    # batch_size_fn: max_batch_size counts work (faces, meshes), not calls.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, batch_size_fn=_work_total)
    async def _batched(self, works: list[_Work]) -> list:
        start = time.perf_counter()
        items = [w.item for w in works]
        # A worker thread keeps the replica's event loop free to queue the next batch;
        # max_concurrent_batches=1 (the default) keeps one predict() at a time.
        out = await asyncio.to_thread(predict_isolated, self.model, items)
        self._m_latency.observe((time.perf_counter() - start) * 1000)
        self._m_batch.observe(len(items))
        self._m_items.inc(len(items))
        self._m_batches.inc()
        self.batch_sizes[len(items)] += 1
        return out

    def batch_stats(self) -> dict[int, int]:
        """Batch sizes seen by this replica: {size: count} (for tests and debugging)."""
        return dict(self.batch_sizes)

    def describe(self) -> dict[str, str]:
        """What health routes show for this model (health_entry)."""
        return health_entry(self.model, self.weights, self.placement)


def model_deployment(model_cls: type[Model], cfg: Any, weights: str = "", **options: Any):
    """A bound Serve deployment named after the model class. Options given here are
    defaults; serve_config.yaml overrides them per deployment name."""
    return ModelServer.options(name=model_cls.__name__, **options).bind(model_cls, cfg, weights)


class LocalBatcher:
    """In-process stand-in for a deployment handle's `.remote`: calls awaited within a
    short window are gathered into one `predict(list)`, one batch at a time, of at most
    `max_batch_size` work units (the model's `item_size`, as in Serve)."""

    def __init__(self, model: Model, max_batch_size: int = 32, wait_s: float = 0.002):
        self.model = checked(model)
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
        if self._lock_loop is not loop:  # one batcher may be used from several loops (tests)
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            self._flush_scheduled = False
            while self._pending:
                chunk, self._pending = self._take_batch(self._pending)
                items = [item for item, _ in chunk]
                self.batch_sizes[len(items)] += 1
                try:
                    results = await asyncio.to_thread(predict_isolated, self.model, items)
                except BaseException as exc:  # never leave a caller waiting forever
                    results = [ItemFailed(repr(exc))] * len(items)
                for (_, fut), res in zip(chunk, results):
                    if not fut.done():
                        fut.set_result(res)

    def _take_batch(self, pending: list) -> tuple[list, list]:
        """(the next batch, the rest): as many items as fit in max_batch_size work
        units, and always at least one."""
        total, n = 0, 0
        for item, _ in pending:
            size = self.model.item_size(item)
            if n and total + size > self.max_batch_size:
                break
            total, n = total + size, n + 1
        return pending[:n], pending[n:]


ProcessFn = Callable[[dict, dict[str, Callable[[Any], Awaitable[Any]]]], Awaitable[dict]]


class PipelineWorker:
    """Ray Data callable class: `ds.map_batches(PipelineWorker, fn_constructor_kwargs=
    {"models": {"detect": (LBPDetector, cfg), ...}, "process": async_fn})`.

    Builds each model once per actor, then for every block runs `process(row, models)`
    concurrently over the rows so each model sees the whole block as one batch.
    `process` must turn its own failures into an error field: no row is dropped.
    `__call__` is async, so Ray Data keeps one event loop per actor for every block."""

    def __init__(self, models: dict[str, tuple[type[Model], Any]], process: ProcessFn, max_batch_size: int = 32):
        self.models = {
            key: LocalBatcher(build_model(cls, cfg), max_batch_size=max_batch_size)
            for key, (cls, cfg) in models.items()
        }
        self.process = process

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        keys = list(batch)
        n = len(batch[keys[0]]) if keys else 0
        rows = [{k: batch[k][i] for k in keys} for i in range(n)]
        out_rows = await asyncio.gather(*(self.process(row, self.models) for row in rows))
        columns = list(out_rows[0]) if out_rows else []
        return {c: [r.get(c) for r in out_rows] for c in columns}
