"""Running coroutines side by side on separate connections, failing as one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

C = TypeVar("C")
T = TypeVar("T")


async def together(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run all; when one fails the others are cancelled and its own exception is raised.

    A TaskGroup wraps failures in an ExceptionGroup; callers and users want the error itself.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def spread(
    items: Iterable[T], workers: Sequence[C], work: Callable[[C, T], Awaitable[None]]
) -> None:
    """`work(worker, item)` for every item; each worker (a connection) takes the next when free."""
    pending = list(items)

    async def take(worker: C) -> None:
        while pending:
            await work(worker, pending.pop(0))

    await together(*(take(worker) for worker in workers))
