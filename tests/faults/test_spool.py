"""The spool under load, with the broker gone behind a TCP proxy (no shared service touched, so
these run in `make test`): every webhook is answered 200 and stored exactly once, also when the
ingress is SIGKILLed while it spools and restarted before the broker is back (I1 with a spool).

The same faults on the real broker (`stop_app`, a memory alarm) are in test_spool_outages.py,
for `make chaos`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy
from tests.helpers.ingress import IngressProcess, ingress_process, running_ingress
from tests.helpers.outages import via
from tests.helpers.spool import metric, spooled_files, until_spool_empty
from tests.helpers.tcpproxy import TCPProxy, tcp_proxy
from tests.helpers.webhooks import generate

pytestmark = pytest.mark.timeout(180)

# A sender that keeps its queue: enough retries to outlast an ingress restart.
PATIENT = RetryPolicy(retries=20, backoff=0.25, max_backoff=1.0)


@pytest.fixture
async def broker_proxy(settings: Settings) -> AsyncIterator[TCPProxy]:
    target = urlsplit(settings.amqp_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        yield proxy


async def test_broker_gone_under_a_steady_stream_every_webhook_is_200_and_stored_once(
    settings: Settings, tmp_path: Path, broker_proxy: TCPProxy, verify: Verify
) -> None:
    proxied = settings.replace(
        amqp_url=via(settings.amqp_url, broker_proxy.port), spool_dir=tmp_path, publish_timeout=1
    )
    async with running_ingress(proxied) as url:
        driver = Driver(url, generate(600), rate=150, policy=RetryPolicy(retries=0))
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(100)
        broker_proxy.cut()
        await driver.wait_acknowledged(driver.acknowledged + 200)  # all of them spooled
        broker_proxy.restore()
        await load
        await until_spool_empty(url)
        spooled = await metric(url, "deskledger_ingress_spool_appended_total")
        forwarded = await metric(url, "deskledger_ingress_spool_forwarded_total")
    summary = await verify(driver, spooled=int(spooled))
    assert driver.statuses() == {200: 600}, "a webhook was not answered 200"
    assert summary.stored == 600
    assert spooled >= 150, f"only {spooled:g} webhooks went through the spool"
    assert forwarded >= spooled
    assert spooled_files(tmp_path) == []


async def test_ingress_killed_while_spooling_then_restarted_before_the_broker_is_back(
    settings: Settings, tmp_path: Path, broker_proxy: TCPProxy, verify: Verify
) -> None:
    """SIGKILL mid-stream with the broker gone; the next process (broker still gone) takes the
    killed one's slot over and keeps spooling; the broker back, everything is forwarded."""
    broker_proxy.cut()
    down = settings.replace(
        amqp_url=via(settings.amqp_url, broker_proxy.port), spool_dir=tmp_path, publish_timeout=1
    )
    current: dict[str, str] = {}
    driver = Driver(lambda: current["url"], generate(500), rate=100, policy=PATIENT)
    async with ingress_process(down) as first:
        current["url"] = first.base_url
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(150)
        first.process.kill()  # SIGKILL while requests are being spooled
        await first.wait()
    killed_with = driver.acknowledged
    assert spooled_files(tmp_path), "nothing was spooled before the kill"
    async with ingress_process(down) as second:
        current["url"] = second.base_url
        await driver.wait_acknowledged(killed_with + 150)  # broker still gone: spooled
        assert await metric(second.base_url, "deskledger_ingress_broker_connected") == 0
        broker_proxy.restore()
        await load
        await _until_forwarded(second)
        assert "spool_slot_recovered" in second.log()
    summary = await verify(driver)
    assert summary.acknowledged == 500
    assert spooled_files(tmp_path) == []


async def _until_forwarded(ingress: IngressProcess) -> None:
    try:
        await until_spool_empty(ingress.base_url, within=90)
    except AssertionError:
        with contextlib.suppress(OSError):
            print(ingress.log()[-5000:])
        raise
