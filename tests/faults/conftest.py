"""Fixtures of the fault tests: `verify` drains, runs the checker and records the figures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from shared.settings import Settings
from tests.helpers.checker import Summary, Verify, check, record
from tests.helpers.driver import Driver, Sent
from tests.helpers.worker import drain, queue_depths


@pytest.fixture
def verify(request: pytest.FixtureRequest, settings: Settings) -> Verify:
    """`await verify(driver, faults=1)`: the end of every fault test.

    Waits for the load, drains the queue with a fresh worker, runs the checker, records the
    figures for `make chaos`, and asserts: the checker passes, nothing is left in the queue and
    nothing was dead-lettered.
    """

    async def run(
        driver: Driver,
        faults: int = 1,
        load: asyncio.Task[None] | None = None,
        settings_: Settings | None = None,
        extra: Iterable[Sent] = (),
        **figures: int,
    ) -> Summary:
        if load is not None:
            await load
        used = settings_ or settings
        await drain(used)
        summary = await check(used.database_url, [*driver.sent, *extra])
        record(request.node.name, summary, faults=faults, **figures)
        summary.assert_ok()
        assert await queue_depths(used) == (0, 0), "left in the queue or dead-lettered"
        return summary

    return run
