"""Ingress: webhooks/s and latency at 64 connections vs a bare aiohttp app and a publish loop,
and the same ingress while it spools (the broker unreachable) beside its rate with the broker up.

All three server sides run as their own process on core 0; wrk (full run) runs on core 1 and
POSTs corpus bodies with the secret. A smoke run uses the Python closed loop instead of wrk.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.corpus import generate
from tests.benchmarks.environment import Bench, environ
from tests.benchmarks.loadgen import closed_loop
from tests.benchmarks.procs import (
    CLIENT_CORE,
    SERVER_CORE,
    Process,
    pinned,
    python,
    running,
    until_http_ok,
)
from tests.benchmarks.report import Result, judged
from tests.helpers.services import free_port

CONNECTIONS = 64
WEBHOOK_PATH = "/webhooks/usedesk"
LUA = Path(__file__).with_name("post.lua")


@dataclass
class Load:
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float = 0.0  # of the server process, during the measured run


async def _wrk(url: str, bodies_path: Path, seconds: float) -> Load:
    argv = pinned(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds:g}s",
            "-s",
            str(LUA),
            url,
            "--",
            str(bodies_path),
        ],
        CLIENT_CORE,
    )
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    s = json.loads(lines[-1])
    errors = sum(s[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors"))
    return Load(
        rate=s["requests"] / (s["duration_us"] / 1e6),
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        requests=s["requests"],
        errors=errors + s["timeouts"],
    )


async def _load(
    bench: Bench, server: Process, url: str, bodies: list[bytes], bodies_path: Path
) -> Load:
    """Warm up, then measure; wrk in a full run, the Python closed loop in a smoke run."""
    smoke = bench.smoke or shutil.which("wrk") is None
    if smoke:
        await closed_loop(url, bodies, 4, 0.2)
    else:
        await _wrk(url, bodies_path, 2)
    cpu = server.cpu_seconds()
    if smoke:
        s = await closed_loop(url, bodies, 8, 0.5)
        load = Load(s.rate, s.percentile(0.5) * 1e3, s.percentile(0.99) * 1e3, s.requests, s.errors)
    else:
        load = await _wrk(url, bodies_path, 10)
    load.cpu_us_per_request = (server.cpu_seconds() - cpu) / max(1, load.requests) * 1e6
    return load


async def _bare(bench: Bench, bodies: list[bytes], bodies_path: Path) -> Load:
    port = free_port()
    argv = python("-m", "tests.benchmarks.servers", "bare", str(port))
    base = f"http://127.0.0.1:{port}"
    async with running(argv, dict(os.environ), bench.log_path("bare"), SERVER_CORE) as proc:
        await until_http_ok(proc, base + "/readyz")
        return await _load(bench, proc, base + WEBHOOK_PATH, bodies, bodies_path)


async def _publish_loop(bench: Bench, bodies_path: Path) -> Load:
    prefix = await bench.prefix("publish")
    seconds = 1 if bench.smoke else 10
    argv = python(
        "-m",
        "tests.benchmarks.servers",
        "publish",
        bench.urls.amqp,
        prefix,
        str(bodies_path),
        str(seconds),
        str(CONNECTIONS),
    )
    done = await asyncio.to_thread(
        subprocess.run, pinned(argv, SERVER_CORE), capture_output=True, text=True
    )
    await bench.drop_topology(prefix)
    if done.returncode != 0:
        raise RuntimeError(f"publish loop failed: {done.stderr[-2000:]}")
    s = json.loads(done.stdout.splitlines()[-1])
    return Load(
        s["rate"], s["p50_ms"], s["p99_ms"], int(s["published"]), 0, s["cpu_us_per_publish"]
    )


async def _ingress(bench: Bench, bodies: list[bytes], bodies_path: Path) -> Load:
    prefix = await bench.prefix("ingress")
    port = free_port()
    settings = bench.settings(bench.urls.database("postgres"), prefix, http_port=port)
    argv = python("-m", "services", "ingress")
    base = f"http://127.0.0.1:{port}"
    try:
        async with running(argv, environ(settings), bench.log_path("ingress"), SERVER_CORE) as proc:
            await until_http_ok(proc, base + "/readyz")
            return await _load(bench, proc, base + WEBHOOK_PATH, bodies, bodies_path)
    finally:
        await bench.drop_topology(prefix)


async def _ingress_spooling(bench: Bench, bodies: list[bytes], bodies_path: Path) -> Load:
    """The same ingress with the broker unreachable: every webhook is answered from the spool
    (written, fdatasync'ed in group commits, on this machine's disk)."""
    port = free_port()
    unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    with tempfile.TemporaryDirectory(prefix="deskledger-bench-spool-") as spool:
        settings = bench.settings(
            bench.urls.database("postgres"),
            "deskledger-bench-spool",
            http_port=port,
            spool_dir=Path(spool),
            spool_max_bytes=64 * 1024**3,
        ).replace(amqp_url=unreachable)
        argv = python("-m", "services", "ingress")
        base = f"http://127.0.0.1:{port}"
        log = bench.log_path("ingress-spooling")
        async with running(argv, environ(settings), log, SERVER_CORE) as proc:
            await until_http_ok(proc, base + "/readyz")
            return await _load(bench, proc, base + WEBHOOK_PATH, bodies, bodies_path)


async def run(bench: Bench) -> list[Result]:
    bodies = [w.body for w in generate(200 if bench.smoke else 5000)]
    bodies_path = bench.logs / "bodies.jsonl"
    bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
    bare = await _bare(bench, bodies, bodies_path)
    loop = await _publish_loop(bench, bodies_path)
    ours = await _ingress(bench, bodies, bodies_path)
    if ours.errors:
        raise RuntimeError(f"the ingress answered {ours.errors} of {ours.requests} with errors")
    spooling = await _ingress_spooling(bench, bodies, bodies_path)
    if spooling.errors:
        raise RuntimeError(f"spooling: {spooling.errors} of {spooling.requests} with errors")
    tool = "Python closed loop, 8 connections" if bench.smoke else f"wrk, {CONNECTIONS} connections"
    throughput = Result(
        name="ingress_throughput",
        value=ours.rate,
        unit="webhooks/s",
        baseline=f"aio-pika confirmed-publish loop, {CONNECTIONS} publishers, one channel",
        baseline_value=loop.rate,
        target=">= 5,000/s and >= 0.9x the publish loop",
        notes=(
            f"one `deskledger ingress` process on core {SERVER_CORE}; {tool}; server CPU per "
            f"request: ingress {ours.cpu_us_per_request:.0f} us, publish loop "
            f"{loop.cpu_us_per_request:.0f} us, bare aiohttp {bare.cpu_us_per_request:.0f} us"
        ),
        details={"ingress": vars(ours), "publish_loop": vars(loop), "bare_aiohttp": vars(bare)},
    )
    latency = Result(
        name="ingress_p99",
        value=ours.p99_ms,
        unit="ms",
        baseline="aio-pika publish loop p99",
        baseline_value=loop.p99_ms,
        target="<= 25 ms",
        notes=f"p50 {ours.p50_ms:.1f} ms (publish loop p50 {loop.p50_ms:.1f} ms)",
    )
    bare_row = Result(
        name="ingress_vs_bare_aiohttp",
        value=ours.rate,
        unit="webhooks/s",
        baseline="bare aiohttp handler answering 200",
        baseline_value=bare.rate,
        notes=f"bare p50 {bare.p50_ms:.1f} ms, p99 {bare.p99_ms:.1f} ms",
    )
    spool_row = Result(
        name="ingress_spooling_throughput",
        value=spooling.rate,
        unit="webhooks/s",
        baseline="the same ingress with the broker up (confirmed publishes)",
        baseline_value=ours.rate,
        notes=(
            f"broker unreachable, every 200 from the local spool (fdatasync, group commit); "
            f"p50 {spooling.p50_ms:.1f} ms, p99 {spooling.p99_ms:.1f} ms; server CPU per "
            f"request {spooling.cpu_us_per_request:.0f} us"
        ),
        details={"spooling": vars(spooling)},
    )
    return [
        judged(throughput, ours.rate >= 5000, (throughput.ratio or 0) >= 0.9, smoke=bench.smoke),
        judged(latency, ours.p99_ms <= 25, smoke=bench.smoke),
        bare_row,
        spool_row,
    ]
