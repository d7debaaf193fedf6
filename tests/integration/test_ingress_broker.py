"""Broker faults under a running ingress: 503 within the deadline, then recovery (I1, I8).

Without a spool (`DESKLEDGER_SPOOL_DIR=none`); the spool's answers to the same faults are in
tests/faults/test_spool_outages.py.

Marked slow: they stop or block the RabbitMQ every other test run on this machine shares.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.settings import Settings
from tests.helpers.broker import broker_memory_alarm, broker_stopped
from tests.helpers.ingress import published, running_ingress
from tests.helpers.secret import TEST_SECRET

VALID = json.dumps({"ticket": {"id": 1}, "secret": TEST_SECRET}).encode()
PUBLISH_TIMEOUT = 2.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with http.post(
        url + WEBHOOK_PATH, data=VALID, headers={"Content-Type": "application/json"}
    ) as response:
        await response.read()
        return response


async def readiness_becomes(http: aiohttp.ClientSession, url: str, status: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with http.get(url + "/readyz") as response:
            if response.status == status:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}")


@pytest.mark.slow
async def test_stopped_broker_is_503_and_the_ingress_recovers_by_itself(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with running_ingress(
        settings.replace(publish_timeout=PUBLISH_TIMEOUT, spool_dir=None)
    ) as url:
        assert (await post(http, url)).status == 200
        async with broker_stopped():
            for _ in range(3):
                started = time.monotonic()
                response = await post(http, url)
                assert response.status == 503
                assert int(response.headers["Retry-After"]) > 0
                assert time.monotonic() - started < PUBLISH_TIMEOUT + 5
            await readiness_becomes(http, url, 503)
        await readiness_becomes(http, url, 200)
        response = await post(http, url)
        assert response.status == 200
    assert len(await published(settings, 2)) == 2


@pytest.mark.slow
async def test_memory_alarm_is_503_at_the_deadline_and_unconfirmed_publishes_are_capped(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    capped = settings.replace(publish_timeout=1.0, max_in_flight=4, spool_dir=None)
    async with running_ingress(capped) as url:
        assert (await post(http, url)).status == 200
        async with broker_memory_alarm():
            started = time.monotonic()
            waited = await asyncio.gather(*(post(http, url) for _ in range(4)))
            assert [r.status for r in waited] == [503] * 4
            assert time.monotonic() - started < capped.publish_timeout + 5
            # Their frames still wait for the blocked broker: new publishes are refused at once
            # instead of piling up behind them.
            for _ in range(20):
                async with http.post(
                    url + WEBHOOK_PATH, data=VALID, headers={"Content-Type": "application/json"}
                ) as response:
                    assert response.status == 503
                    assert "too many publishes" in (await response.json())["detail"]
        deadline = time.monotonic() + 60
        while (response := await post(http, url)).status != 200:
            assert time.monotonic() < deadline, "no 200 after the alarm cleared"
            await asyncio.sleep(0.2)
    # The four refused ones may still be stored once the alarm clears (a retry is deduplicated).
    assert len(await published(settings, 2)) == 2
