"""Hostile input costs little (I8): every one is answered 4xx while other webhooks keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.settings import Settings
from tests.helpers.ingress import running_ingress
from tests.helpers.secret import TEST_SECRET

VALID = json.dumps({"ticket": {"id": 1}, "secret": TEST_SECRET}).encode()
MB = 1024 * 1024


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        url + WEBHOOK_PATH,
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    ) as response:
        return response.status, await response.json()


async def while_serving(
    http: aiohttp.ClientSession, url: str, hostile: Awaitable[tuple[int, dict[str, Any]]]
) -> tuple[int, dict[str, Any]]:
    """Run `hostile` while valid webhooks are sent alongside it; all of those must be 200."""
    done = asyncio.Event()

    async def valid() -> int:
        count = 0
        while not done.is_set() or count == 0:
            status, answer = await post(http, url, VALID)
            assert status == 200, answer
            count += 1
        return count

    async def run_hostile() -> tuple[int, dict[str, Any]]:
        try:
            return await hostile
        finally:
            done.set()

    answer, *counts = await asyncio.gather(run_hostile(), valid(), valid())
    assert all(count > 0 for count in counts)
    return answer


async def raw_request(url: str, head: bytes, body_parts: list[tuple[float, bytes]]) -> bytes:
    """Send `head`, then each body part after its delay until answered; the raw response."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    response = asyncio.create_task(_read_response(reader))
    try:
        writer.write(head)
        for delay, part in body_parts:
            await asyncio.wait({response}, timeout=delay)
            if response.done():
                break
            writer.write(part)
            await writer.drain()
        return await response
    finally:
        response.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP response with a Content-Length, read as it arrives (before any reset)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.partition(b":")[2])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def head(length: int | None, extra: str = "") -> bytes:
    length_header = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"{length_header}{extra}\r\n"
    ).encode()


@pytest.fixture
async def url(settings: Settings) -> AsyncIterator[str]:
    async with running_ingress(settings) as base:
        yield base


async def test_ten_megabytes_with_a_length_is_413(url: str, http: aiohttp.ClientSession) -> None:
    body = io.BytesIO(b"x" * (10 * MB))
    status, answer = await while_serving(http, url, post(http, url, body))
    assert (status, answer["error"]) == (413, "too_large")


async def test_ten_megabytes_chunked_is_413(url: str, http: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * MB

    status, answer = await while_serving(http, url, post(http, url, chunks()))
    assert (status, answer["error"]) == (413, "too_large")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 200_000, id="brackets"),
        pytest.param(b'{"a":' * 50_000, id="objects"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-but-closed"),
        pytest.param(b'{"secret": "' + TEST_SECRET.encode() + b'", "t": "\xc3\x28"}', id="utf8"),
        pytest.param(b'{"n": ' + b"9" * 100_000 + b"}", id="huge-number"),
    ],
)
async def test_hostile_json_is_400(url: str, http: aiohttp.ClientSession, body: bytes) -> None:
    status, answer = await while_serving(http, url, post(http, url, body))
    assert (status, answer["error"]) == (400, "bad_body")


async def test_deep_form_keys_are_400(url: str, http: aiohttp.ClientSession) -> None:
    body = f"secret={TEST_SECRET}&ticket" + "[a]" * 10_000 + "=1"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await while_serving(http, url, post(http, url, body.encode(), headers))
    assert (status, answer["error"]) == (400, "bad_body")


async def test_gzip_bomb_is_refused_without_inflating(
    url: str, http: aiohttp.ClientSession
) -> None:
    bomb = gzip.compress(b"\0" * (64 * MB), compresslevel=9)
    assert len(bomb) < MB
    headers = {"Content-Encoding": "gzip"}
    status, answer = await while_serving(http, url, post(http, url, bomb, headers))
    assert (status, answer["error"]) == (415, "unsupported_content_encoding")


async def test_dribbled_body_gets_408_at_the_read_deadline(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with running_ingress(settings.replace(read_timeout=1.0)) as url:
        dribble = [(0.2, b" ")] * 40  # 8 s for 40 bytes, far beyond the 1 s deadline
        response = await while_serving(http, url, _as_answer(raw_request(url, head(100), dribble)))
    assert response[0] == 408
    assert response[1]["error"] == "body_timeout"


async def test_many_slow_clients_do_not_stop_others(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with running_ingress(settings.replace(read_timeout=2.0)) as url:
        dribble = [(0.5, b"{")] * 10
        slow_bodies = [_as_answer(raw_request(url, head(1000), dribble)) for _ in range(50)]
        slow_heads = [_dribble_head(url, dribble) for _ in range(50)]

        async def slow_clients() -> tuple[int, dict[str, Any]]:
            answers = await asyncio.gather(*slow_bodies, *slow_heads)
            assert answers[:50] == [answers[0]] * 50
            return answers[0]

        status, answer = await while_serving(http, url, slow_clients())
    assert (status, answer["error"]) == (408, "body_timeout")


async def _dribble_head(url: str, parts: list[tuple[float, bytes]]) -> tuple[int, dict[str, Any]]:
    """A request head that never ends (slowloris); closed by us after the dribble."""
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: test\r\nX-Slow: ".encode())
        for delay, part in parts:
            await asyncio.sleep(delay)
            writer.write(part)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
    return 0, {}


async def _as_answer(raw: Awaitable[bytes]) -> tuple[int, dict[str, Any]]:
    response = await raw
    status_line, _, rest = response.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)
