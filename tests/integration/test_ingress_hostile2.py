"""Hostile input, second round (issue 19): a multipart header bomb, bodies that never finish,
and requests aiohttp cannot frame. Each is refused while real webhooks keep getting 200, and
none stalls the event loop or puts request bytes into a log or an answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.settings import Settings
from tests.helpers.ingress import ingress_process, running_ingress
from tests.helpers.outages import via
from tests.helpers.secret import TEST_SECRET
from tests.helpers.tcpproxy import tcp_proxy
from tests.integration.test_ingress_hostile import VALID, head, post, while_serving

MULTIPART = "multipart/form-data; boundary=XyZ"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def longest_stall() -> AsyncIterator[list[float]]:
    """The longest time (s) this event loop went without running a 10 ms ticker, in `[0]`."""
    loop = asyncio.get_running_loop()
    worst = [0.0]

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            worst[0] = max(worst[0], now - last - 0.01)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        yield worst
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def multipart_bomb(secret: str, size: int = 1024 * 1024 - 4096) -> bytes:
    """One part whose Content-Disposition is ~`size` bytes of `; a=b` parameters."""
    params = "; a=b" * (size // 5)
    return (
        f'--XyZ\r\nContent-Disposition: form-data; name="secret"{params}\r\n\r\n{secret}\r\n'
        "--XyZ--\r\n"
    ).encode()


# --- 3. a multipart part header ---------------------------------------------------------------


@pytest.mark.parametrize("secret", [TEST_SECRET, "a-wrong-secret"])
async def test_a_multipart_header_bomb_is_400_and_never_stalls_the_loop(
    settings: Settings, http: aiohttp.ClientSession, secret: str
) -> None:
    """It held the loop for 24 s (9 s with a wrong secret): every other request waited."""
    async with running_ingress(settings) as url, longest_stall() as stall:
        hostile = post(http, url, multipart_bomb(secret), {"Content-Type": MULTIPART})
        status, answer = await while_serving(http, url, hostile)
    assert (status, answer["error"]) == (400, "bad_body"), answer
    assert "headers exceed" in answer["detail"]
    assert stall[0] < 1.0, f"the event loop stalled for {stall[0]:.2f} s"


# --- 4. bodies still arriving -----------------------------------------------------------------


class SlowBody:
    """A webhook whose head is whole and whose body has one byte of 1000 sent, and no more."""

    def __init__(self) -> None:
        self.answer: asyncio.Task[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        reader, self._writer = await asyncio.open_connection(host, int(port))
        self._writer.write(head(1000) + b"{")
        await self._writer.drain()
        self.answer = asyncio.create_task(reader.read())

    async def status(self, within: float = 30) -> int:
        assert self.answer is not None
        raw = await asyncio.wait_for(self.answer, within)
        return int(raw.split()[1]) if raw else 0

    async def close(self) -> None:
        if self.answer is not None:
            self.answer.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


async def gauge(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url + "/metrics") as response:
        found = re.search(rf"^{name} (\S+)$", await response.text(), re.M)
    return float(found.group(1)) if found else -1.0


async def until_gauge(http: aiohttp.ClientSession, url: str, name: str, value: float) -> None:
    for _ in range(400):
        if await gauge(http, url, name) == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {value}: {await gauge(http, url, name)}")


@contextlib.asynccontextmanager
async def slow_bodies(url: str, count: int) -> AsyncIterator[list[SlowBody]]:
    bodies = [SlowBody() for _ in range(count)]
    try:
        for body in bodies:  # in order: the first one is the oldest
            await body.open(url)
        yield bodies
    finally:
        await asyncio.gather(*(body.close() for body in bodies))


async def test_bodies_still_arriving_do_not_lock_real_webhooks_out(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """They counted against max_in_flight: 30 unfinished bodies made every webhook a 503."""
    capped = settings.replace(max_in_flight=8, max_body_readers=1000, read_timeout=60.0)
    async with running_ingress(capped) as url, slow_bodies(url, 30):
        await until_gauge(http, url, "deskledger_ingress_reading_bodies", 30.0)
        for _ in range(20):
            status, answer = await post(http, url, VALID)
            assert status == 200, answer
        assert await gauge(http, url, "deskledger_ingress_in_flight") == 30.0


async def test_a_newer_body_takes_the_place_of_the_oldest_reader(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """With every reader's place taken, a real webhook whose body comes in two pieces is still
    read: the oldest unfinished body is cut off with 408 instead."""
    capped = settings.replace(max_body_readers=4, read_timeout=60.0)
    async with running_ingress(capped) as url, slow_bodies(url, 4) as bodies:
        await until_gauge(http, url, "deskledger_ingress_reading_bodies", 4.0)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(head(len(VALID), "Connection: close\r\n") + VALID[:10])
            await writer.drain()
            assert await bodies[0].status() == 408
            writer.write(VALID[10:])
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
            await writer.wait_closed()
        assert raw.startswith(b"HTTP/1.1 200 "), raw
        assert not any(body.answer is not None and body.answer.done() for body in bodies[1:])
        assert await gauge(http, url, "deskledger_ingress_reading_bodies") == 3.0


async def test_webhooks_waiting_for_the_broker_are_capped_with_503_at_once(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    """max_in_flight bounds the requests whose body is whole: here, waiting for confirms that a
    one-way link failure keeps from coming back."""
    target = urlsplit(settings.amqp_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        proxied = settings.replace(
            amqp_url=via(settings.amqp_url, proxy.port),
            max_in_flight=2,
            publish_timeout=10.0,
            spool_dir=None,
        )
        async with running_ingress(proxied) as url:
            assert (await post(http, url, VALID))[0] == 200
            proxy.drop_replies()
            held = [asyncio.create_task(post(http, url, VALID)) for _ in range(2)]
            await until_gauge(http, url, "deskledger_ingress_in_flight", 2.0)
            assert await gauge(http, url, "deskledger_ingress_reading_bodies") == 0.0
            status, answer = await post(http, url, VALID)
            assert (status, answer["error"]) == (503, "overloaded")
            answers = await asyncio.gather(*held)
            assert [(s, a["error"]) for s, a in answers] == [(503, "broker_unavailable")] * 2


# --- 5. requests aiohttp cannot frame ---------------------------------------------------------


def framings(secret: str) -> dict[str, list[bytes]]:
    """Malformed requests carrying `secret`, each as the pieces it is sent in."""
    body = json.dumps({"secret": secret, "ticket": {"id": 1}}).encode()
    post_ = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    chunked = (post_ + "Transfer-Encoding: chunked\r\n\r\n").encode()
    return {
        "http10-without-length": [
            f"POST {WEBHOOK_PATH} HTTP/1.0\r\nContent-Type: application/json\r\n\r\n".encode()
            + body
        ],
        "short-length": [(post_ + "Content-Length: 10\r\n\r\n").encode() + body],
        "short-length-split": [(post_ + "Content-Length: 10\r\n\r\n").encode(), body],
        "chunk-size-is-the-body": [chunked + body + b"\r\n0\r\n\r\n"],
        "chunk-longer-than-declared": [chunked + b"%x\r\n" % 4 + body + b"\r\n0\r\n\r\n"],
        "chunk-longer-split": [chunked, b"%x\r\n" % 4 + body + b"\r\n0\r\n\r\n"],
        "length-and-chunked": [
            (post_ + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
            + body
        ],
        "secret-in-a-bad-header": [(post_ + f"X-Bad\x01: {secret}\r\n\r\n").encode()],
        "secret-in-the-method": [f"P{secret} / HTTP/1.1\r\n\r\n".encode()],
        "secret-in-the-target": [f"POST /{secret} HTTP/9.9\r\n\r\n".encode()],
    }


async def send_raw(url: str, pieces: list[bytes]) -> bytes:
    """Send `pieces` 0.2 s apart; everything answered until the ingress closes (or 10 s)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answered = asyncio.create_task(reader.read())
    try:
        for piece in pieces:
            with contextlib.suppress(ConnectionError):
                writer.write(piece)
                await writer.drain()
            await asyncio.wait({answered}, timeout=0.2)
        with contextlib.suppress(ConnectionError, OSError):
            writer.write_eof()
        return await asyncio.wait_for(answered, 10)
    except TimeoutError:
        return b""
    finally:
        answered.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def answers_of(raw: bytes) -> list[tuple[int, Any]]:
    """(status, JSON body) of every response in `raw`."""
    found = []
    for match in re.finditer(rb"HTTP/1\.[01] (\d{3}) [^\r]*\r\n(.*?)\r\n\r\n", raw, re.S):
        length = re.search(rb"content-length: *(\d+)", match.group(2), re.I)
        size = int(length.group(1)) if length else 0
        body = raw[match.end() : match.end() + size]
        found.append((int(match.group(1)), json.loads(body) if body else None))
    return found


async def test_malformed_framing_never_puts_the_secret_in_a_log_or_an_answer(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    accepted = settings.replace(secrets=(secret,), read_timeout=2.0)
    async with ingress_process(accepted) as ingress:
        raw = {
            name: await send_raw(ingress.base_url, pieces)
            for name, pieces in framings(secret).items()
        }
        body = json.dumps({"secret": secret, "ticket": {"id": 1}}).encode()
        status, answer = await post(http, ingress.base_url, body)
        assert status == 200, answer
        log = ingress.log()
    leaked = [name for name, answer_ in raw.items() if secret.encode() in answer_]
    assert leaked == [], f"answers quoting the secret: {leaked}"
    assert secret not in log, "the ingress logged the secret"
    for name, answer_ in raw.items():
        for status, body_ in answers_of(answer_):
            assert status in {200, 400, 401, 408}, (name, answer_)
            assert body_ is not None, name
            assert set(body_) <= {"error", "detail", "delivery_id"}, name
    statuses = {name: [s for s, _ in answers_of(a)] for name, a in raw.items()}
    assert 400 in statuses["secret-in-the-method"]
    assert 400 in statuses["chunk-longer-than-declared"]
    assert "http_request_malformed" in log
