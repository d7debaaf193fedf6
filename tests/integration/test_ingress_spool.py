"""The ingress's spool against the real RabbitMQ, with faults that touch no shared service:
returned messages (the queue unbound), a broker behind a TCP proxy that is cut, a spool that
fills up, a spool directory that cannot be written, several processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import pytest

from services import status as status_command
from services.ingress import segment
from services.ingress.app import WEBHOOK_PATH
from services.ingress.spool import spool_root
from shared import envelope
from shared.broker import ROUTING_KEY, TopologyNames
from shared.settings import Settings
from shared.usedesk.media import JSON
from tests.helpers.ingress import ingress_process, published, running_ingress
from tests.helpers.outages import via
from tests.helpers.secret import TEST_SECRET
from tests.helpers.services import deskledger
from tests.helpers.spool import (
    metric,
    spooled,
    spooled_files,
    spooled_ids,
    until_spool_empty,
)
from tests.helpers.tcpproxy import TCPProxy, tcp_proxy

pytestmark = pytest.mark.timeout(120)


def webhook(number: int, pad: int = 0) -> bytes:
    body = {"ticket": {"id": number, "subject": "x" * pad}, "secret": TEST_SECRET}
    return json.dumps(body).encode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    async with http.post(url + WEBHOOK_PATH, data=body, headers=headers) as response:
        return response.status, await response.json()


async def readiness(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url + "/readyz") as response:
        return response.status, await response.json()


@pytest.fixture
async def broker_proxy(settings: Settings) -> AsyncIterator[TCPProxy]:
    """A TCP proxy in front of the real broker: `cut()` is a broker gone, `restore()` back."""
    target = urlsplit(settings.amqp_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        yield proxy


async def test_returned_messages_are_spooled_then_forwarded_as_the_same_message(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The queue unbound: every publish is returned (mandatory). Each webhook is answered 200
    once on the spool's disk; rebound, the forwarder publishes the very message a direct publish
    would have carried (same delivery id, headers, body), and the segment is deleted."""
    spooling = settings.replace(spool_dir=tmp_path)
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    async with running_ingress(spooling) as url:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue, passive=True)
            await queue.unbind(names.exchange, ROUTING_KEY)
            answers = [await post(http, url, webhook(n)) for n in range(5)]
            assert [status for status, _ in answers] == [200] * 5, answers
            ids = [answer["delivery_id"] for _, answer in answers]
            on_disk = {str(d.delivery_id): d for d in spooled(tmp_path)}
            assert list(on_disk) == ids  # on disk, in order, before the 200
            assert await metric(url, "deskledger_ingress_spool_records") == 5
            assert (await readiness(http, url))[0] == 200
            await queue.bind(names.exchange, ROUTING_KEY)
        messages = await published(settings, 5, within=30)
        await until_spool_empty(url)
        assert await metric(url, "deskledger_ingress_spool_forwarded_total") == 5
        assert await metric(url, "deskledger_ingress_spool_failed_total") >= 1
    assert sorted(m.message_id or "" for m in messages) == sorted(ids)
    for message in messages:
        delivery = on_disk[message.message_id or ""]
        sent = envelope.properties(delivery)
        assert message.body == delivery.body
        assert message.content_type == sent.content_type
        assert sent.timestamp is not None  # AMQP timestamps are whole seconds
        assert message.timestamp == sent.timestamp.replace(microsecond=0)
        headers = {k: v for k, v in message.headers.items() if k != "x-delivery-count"}
        assert headers == sent.headers
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert spooled_files(tmp_path) == []  # every segment deleted, the slot removed too


async def test_a_channel_the_broker_closed_is_reopened_by_the_forwarder(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Publishing to a deleted exchange makes the broker close the channel (404), and a queue
    redeclared with other arguments makes aio-pika's own restore fail for good: the webhooks
    are spooled meanwhile, and once the queue is gone again the forwarder reopens the channel
    (declaring the topology) and forwards them. Nothing else would publish to revive it."""
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    async with running_ingress(settings.replace(spool_dir=tmp_path)) as url:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(names.exchange)
            await channel.queue_delete(names.queue)
            await channel.declare_queue(names.queue, durable=True)  # classic, not quorum
            answers = [await post(http, url, webhook(n)) for n in range(3)]
            assert [status for status, _ in answers] == [200] * 3
            await asyncio.sleep(1)
            await channel.queue_delete(names.queue)
        messages = await published(settings, 3, within=30)
        await until_spool_empty(url)
    ids = sorted(answer["delivery_id"] for _, answer in answers)
    assert sorted(m.message_id or "" for m in messages) == ids


async def test_a_broker_gone_at_start_is_no_reason_to_refuse_webhooks(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession, broker_proxy: TCPProxy
) -> None:
    """The ingress starts while the broker cannot be reached, answers 200 from the spool, and
    forwards once the broker answers; webhooks then go straight to the broker."""
    broker_proxy.cut()
    spooling = settings.replace(
        spool_dir=tmp_path, amqp_url=via(settings.amqp_url, broker_proxy.port), publish_timeout=1
    )
    async with running_ingress(spooling) as url:
        assert await readiness(http, url) == (200, {"status": "ready"})
        assert await metric(url, "deskledger_ingress_broker_connected") == 0
        spooled = [await post(http, url, webhook(n)) for n in range(3)]
        assert [status for status, _ in spooled] == [200] * 3
        broker_proxy.restore()
        await until_spool_empty(url)
        status, direct = await post(http, url, webhook(3))
        assert status == 200
        assert await metric(url, "deskledger_ingress_spool_appended_total") == 3
    messages = await published(settings, 4, within=30)
    expected = [answer["delivery_id"] for _, answer in spooled] + [direct["delivery_id"]]
    assert sorted(m.message_id or "" for m in messages) == sorted(expected)


async def test_a_full_spool_answers_503_and_readiness_follows(
    settings: Settings, tmp_path: Path, http: aiohttp.ClientSession, broker_proxy: TCPProxy
) -> None:
    broker_proxy.cut()
    small = settings.replace(
        spool_dir=tmp_path,
        spool_max_bytes=96 * 1024,
        amqp_url=via(settings.amqp_url, broker_proxy.port),
        publish_timeout=1,
    )
    async with running_ingress(small) as url:
        answers = [await post(http, url, webhook(n, pad=3000)) for n in range(40)]
        statuses = [status for status, _ in answers]
        assert statuses[:10] == [200] * 10
        assert statuses[-1] == 503
        refused = [answer for status, answer in answers if status == 503]
        assert {answer["error"] for answer in refused} == {"spool_full"}
        assert await metric(url, "deskledger_ingress_spool_bytes") <= 96 * 1024
        status, ready = await readiness(http, url)
        assert (status, ready["reason"]) == (503, "broker_unavailable_and_spool_full")
        kept = [answer["delivery_id"] for status, answer in answers if status == 200]
        assert sorted(spooled_ids(tmp_path)) == sorted(kept)
        report, _ = await status_command.gather(small.replace(amqp_url=settings.amqp_url))
        figures = report["spool"]
        assert (figures["records"], figures["slots"]) == (len(kept), 1)
        assert 0 < figures["bytes"] <= 96 * 1024
        assert figures["oldest_record_age_s"] >= 0
        line = f"spool              {figures['dir']}: {len(kept)} webhooks not yet forwarded"
        assert line in status_command.render(report)
        broker_proxy.restore()
        await until_spool_empty(url)
        assert (await readiness(http, url))[0] == 200
    messages = await published(settings, len(kept), within=30)
    assert sorted(m.message_id or "" for m in messages) == sorted(kept)


async def test_an_unwritable_spool_directory_is_one_line_and_exit_2(
    settings: Settings, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    process = await deskledger(settings.replace(spool_dir=blocker / "spool"), "ingress")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("deskledger ingress: configuration error: DESKLEDGER_SPOOL_DIR:")
    assert "not-a-directory" in lines[0]
    assert stdout == b""


async def test_each_process_spools_apart_and_a_later_one_forwards_them_all(
    settings: Settings, tmp_path: Path, broker_proxy: TCPProxy
) -> None:
    """`--processes 2` with the broker gone: two slots. The processes are SIGKILLed; one
    process started afterwards takes both slots over and forwards every record."""
    broker_proxy.cut()
    down = settings.replace(spool_dir=tmp_path, amqp_url=via(settings.amqp_url, broker_proxy.port))
    # A connection per request, so that SO_REUSEPORT spreads them over both processes.
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        ingress_process(down, processes=2) as ingress,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        answers = [await post(http, ingress.base_url, webhook(n)) for n in range(40)]
        assert [status for status, _ in answers] == [200] * 40
        slots = {path.parent for path in spooled_files(tmp_path)}
        for child in _children(ingress.process.pid):
            os.kill(child, signal.SIGKILL)
        ingress.send_signal(signal.SIGKILL)
        await ingress.wait()
    assert len(slots) == 2, f"the webhooks went to {slots}: not one slot per process"
    ids = [answer["delivery_id"] for _, answer in answers]
    assert sorted(spooled_ids(tmp_path)) == sorted(ids)
    async with ingress_process(settings.replace(spool_dir=tmp_path)) as later:
        messages = await published(settings, 40, within=60)
        await until_spool_empty(later.base_url)
    assert sorted(m.message_id or "" for m in messages) == sorted(ids)
    assert spooled_files(tmp_path) == []


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


async def test_a_torn_tail_left_by_a_crash_is_skipped_and_the_rest_forwarded(
    settings: Settings, tmp_path: Path
) -> None:
    """A segment whose last record was being written when the machine died: the ingress that
    finds it forwards every sound record, logs the torn one (never acknowledged: its request got
    no 200) and deletes the segment."""
    slot_dir = spool_root(tmp_path, settings.amqp_prefix) / "slot-0"
    slot_dir.mkdir(parents=True)
    kept = [envelope.accepted("ticket_created", JSON, webhook(n), webhook(n)) for n in range(3)]
    frames = [segment.encode(d) for d in [*kept, kept[0]]]
    torn = segment.MAGIC + b"".join(frames[:3]) + frames[3][: len(frames[3]) // 2]
    (slot_dir / segment.segment_name(1)).write_bytes(torn)
    async with ingress_process(settings.replace(spool_dir=tmp_path)) as ingress:
        messages = await published(settings, 3, within=30)
        await until_spool_empty(ingress.base_url)
        log = ingress.log()
    assert await published(settings, 1, within=1) == []  # the torn fourth was never sent
    assert sorted(m.message_id or "" for m in messages) == sorted(str(d.delivery_id) for d in kept)
    assert "spool_torn_tail_skipped" in log
    assert spooled_files(tmp_path) == []
