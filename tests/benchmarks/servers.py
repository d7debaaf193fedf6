"""The ingress's baselines, each run as its own process on the server's core.

python -m tests.benchmarks.servers bare PORT
    a bare aiohttp app: POST /webhooks/usedesk reads the body and answers 200 (uvloop);
python -m tests.benchmarks.servers publish AMQP_URL PREFIX BODIES SECONDS CONCURRENCY
    a bare aio-pika loop: CONCURRENCY tasks publish persistent, mandatory messages with
    confirms on ONE channel to the same quorum queue the ingress uses, for SECONDS, each
    message one corpus body with the ingress's headers; prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import uvloop
from aiohttp import web

from shared import envelope
from shared.broker import ROUTING_KEY, declare_topology
from shared.settings import load_settings

WEBHOOK_PATH = "/webhooks/usedesk"


def bare(port: int) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"delivery_id": str(uuid.uuid4())})

    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, handle)
    app.router.add_get("/readyz", _ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_loop())


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _loop() -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def message(body: bytes) -> aio_pika.Message:
    """A message shaped like the ingress's (same headers, same persistence)."""
    return envelope.message(envelope.accepted("comment_created", "application/json", body, body))


async def publish_loop(
    amqp_url: str, prefix: str, bodies: list[bytes], seconds: float, concurrency: int
) -> dict[str, float]:
    delivery_limit = load_settings(environ={}, dotenv=None).delivery_limit
    latencies: list[float] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = (await declare_topology(channel, prefix, delivery_limit)).exchange
        deadline = time.perf_counter() + seconds

        async def publisher(offset: int) -> None:
            index = offset
            while time.perf_counter() < deadline:
                body = bodies[index % len(bodies)]
                index += concurrency
                started = time.perf_counter()
                await exchange.publish(message(body), ROUTING_KEY, mandatory=True, timeout=10)
                latencies.append(time.perf_counter() - started)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(publisher(i) for i in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()
    return {
        "published": len(latencies),
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu_us_per_publish": cpu / len(latencies) * 1e6,
    }


def main(argv: list[str]) -> None:
    if argv[0] == "bare":
        bare(int(argv[1]))
        return
    amqp_url, prefix, bodies_path, seconds, concurrency = argv[1:6]
    bodies = Path(bodies_path).read_bytes().splitlines()
    summary = uvloop.run(publish_loop(amqp_url, prefix, bodies, float(seconds), int(concurrency)))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
