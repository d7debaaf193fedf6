"""The real `deskledger ingress`: refusal to start, graceful stop under load, N processes."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.ingress.app import WEBHOOK_PATH
from shared.build import PYTHON, VERSION
from shared.settings import Settings
from tests.helpers.ingress import (
    IngressProcess,
    ingress_process,
    published,
)
from tests.helpers.secret import TEST_SECRET
from tests.helpers.services import deskledger, free_port
from tests.helpers.worker import queue_depths

VALID = json.dumps({"ticket": {"id": 1}, "secret": TEST_SECRET}).encode()
JSON_HEADERS = {"Content-Type": "application/json"}


async def run_cli(settings: Settings) -> tuple[int, str]:
    process = await deskledger(
        settings.replace(http_port=free_port()), "ingress", stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_refuses_to_start_without_secrets(settings: Settings) -> None:
    code, output = await run_cli(settings.replace(secrets=(), allow_any_secret=False))
    assert code == 2
    [line] = output.strip().splitlines()
    assert "DESKLEDGER_SECRETS" in line


async def test_exits_1_when_the_broker_cannot_be_reached(settings: Settings) -> None:
    unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    code, output = await run_cli(settings.replace(amqp_url=unreachable, spool_dir=None))
    assert code == 1
    assert "ingress_failed" in output


async def test_allow_any_secret_warns_and_accepts_any(settings: Settings) -> None:
    open_settings = settings.replace(secrets=(), allow_any_secret=True)
    async with ingress_process(open_settings) as ingress, aiohttp.ClientSession() as http:
        body = json.dumps({"ticket": {}, "secret": "anything-at-all"}).encode()
        async with http.post(ingress.webhook_url, data=body, headers=JSON_HEADERS) as response:
            assert response.status == 200
        assert "ingress_accepts_any_secret" in ingress.log()
    [message] = await published(settings, 1)
    assert b"anything-at-all" not in message.body


async def test_sigterm_under_load_finishes_in_flight_requests_and_exits_0(
    settings: Settings,
) -> None:
    async with ingress_process(settings.replace(drain_seconds=2.0)) as ingress:
        balancer_out = asyncio.Event()
        answers: list[tuple[int, dict[str, Any]]] = []
        loaded = asyncio.Event()
        monitor = asyncio.create_task(_balancer(ingress, balancer_out))
        loaders = [
            asyncio.create_task(_load(ingress, balancer_out, answers, loaded)) for _ in range(8)
        ]
        slow = asyncio.create_task(_slow_webhook(ingress, finish_after=3.5))
        await asyncio.wait_for(loaded.wait(), 30)
        ingress.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*loaders), 30)
        slow_answer = await asyncio.wait_for(slow, 30)
        code = await ingress.wait(30)
        await monitor
        log = ingress.log()

    assert code == 0, log
    assert slow_answer.startswith(b"HTTP/1.1 200 "), slow_answer
    assert {status for status, _ in answers} <= {200, 503}
    kept = {answer["delivery_id"] for status, answer in answers if status == 200}
    kept.add(json.loads(slow_answer.partition(b"\r\n\r\n")[2])["delivery_id"])
    messages = await published(settings, len(kept))
    assert {message.message_id for message in messages} == kept
    assert await queue_depths(settings) == (0, 0)
    assert "ingress_draining" in log
    assert "ingress_stopped" in log


async def _balancer(ingress: IngressProcess, out: asyncio.Event) -> None:
    """What a load balancer does: stop sending once /readyz says so."""
    async with aiohttp.ClientSession() as http:
        while not out.is_set():
            async with http.get(ingress.base_url + "/readyz") as response:
                if response.status == 503:
                    out.set()
            await asyncio.sleep(0.05)


async def _load(
    ingress: IngressProcess,
    out: asyncio.Event,
    answers: list[tuple[int, dict[str, Any]]],
    loaded: asyncio.Event,
) -> None:
    async with aiohttp.ClientSession() as http:
        while not out.is_set():
            async with http.post(ingress.webhook_url, data=VALID, headers=JSON_HEADERS) as response:
                answers.append((response.status, await response.json()))
            if len(answers) >= 100:
                loaded.set()


async def _slow_webhook(ingress: IngressProcess, finish_after: float) -> bytes:
    """A webhook in flight across the whole stop: its body ends after the listener closed."""
    port = int(ingress.base_url.rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(VALID)}\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(head + VALID[:5])
        await writer.drain()
        await asyncio.sleep(finish_after)
        writer.write(VALID[5:])
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_several_processes_share_the_port_and_stop_together(settings: Settings) -> None:
    async with ingress_process(settings, processes=2) as ingress:
        async with aiohttp.ClientSession() as http:
            for _ in range(20):
                async with http.post(
                    ingress.webhook_url, data=VALID, headers=JSON_HEADERS
                ) as response:
                    assert response.status == 200
        started = time.monotonic()
        ingress.send_signal(signal.SIGTERM)
        code = await ingress.wait(60)
        log = ingress.log()
    assert code == 0, log
    assert time.monotonic() - started < 30
    assert log.count("ingress_listening") == 2
    assert log.count("ingress_stopped") == 2
    assert len(await published(settings, 20)) == 20


def _requests_total(text: str) -> float:
    families = text_string_to_metric_families(text)
    (family,) = (f for f in families if f.name == "deskledger_ingress_requests")
    return sum(s.value for s in family.samples if s.name == "deskledger_ingress_requests_total")


def _metrics_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("deskledger-ingress-metrics-*"))


async def test_one_scrape_covers_every_process(settings: Settings) -> None:
    dirs = _metrics_dirs()
    # A new connection per request: SO_REUSEPORT spreads connections over the processes.
    async with (
        ingress_process(settings, processes=2) as ingress,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        for _ in range(16):
            async with http.post(ingress.webhook_url, data=VALID, headers=JSON_HEADERS) as answer:
                assert answer.status == 200
        scrapes = []
        for _ in range(8):
            async with http.get(ingress.base_url + "/metrics") as answer:
                assert answer.status == 200
                scrapes.append(await answer.text())
        async with http.get(ingress.base_url + "/readyz") as answer:
            assert answer.status == 200
        assert len(_metrics_dirs() - dirs) == 1
    assert [_requests_total(text) for text in scrapes] == [16.0] * 8
    assert _metrics_dirs() == dirs  # the parent removed the children's directory
    for text in scrapes:
        assert text.count("deskledger_build_info{") == 1, text
        assert "deskledger_ingress_broker_connected 1.0" in text, text
    await published(settings, 16)


async def test_the_metrics_of_one_process_name_the_build(settings: Settings) -> None:
    async with (
        ingress_process(settings) as ingress,
        aiohttp.ClientSession() as http,
        http.get(ingress.base_url + "/metrics") as answer,
    ):
        text = await answer.text()
    assert f'deskledger_build_info{{python="{PYTHON}",version="{VERSION}"}} 1.0' in text
