"""Rules every pipeline follows, written once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Model = Callable[[Any], Awaitable[Any]]  # one item in, one result out (a handle or a LocalBatcher)


async def gather_or_cancel(coros) -> list:
    """Like asyncio.gather, but the first failure cancels the rest (no model computing
    for a request that has already failed) and is raised as itself, not wrapped in an
    ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]
