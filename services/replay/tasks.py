"""Running coroutines side by side on separate connections, failing as one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


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
