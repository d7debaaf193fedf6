"""The ingress's spool as the tests see it: its gauges on /metrics, its files on disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from services.ingress import segment
from shared import envelope


async def metric(base_url: str, name: str) -> float:
    """One unlabelled sample of the ingress's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(base_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def until_spool_empty(base_url: str, within: float = 60) -> None:
    """Until the ingress has forwarded every spooled webhook (the broker confirmed them)."""
    deadline = time.monotonic() + within
    records = -1.0
    while time.monotonic() < deadline:
        records = await metric(base_url, "deskledger_ingress_spool_records")
        if records == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{records:g} webhooks still spooled after {within} s")


def spooled_files(spool_dir: Path) -> list[Path]:
    """Every segment file under a spool directory (all prefixes, all slots)."""
    return sorted(spool_dir.glob(f"*/*/*{segment.SUFFIX}"))


def spooled(spool_dir: Path) -> list[envelope.Delivery]:
    """Every sound record under `spool_dir`, forwarded or not."""
    return [
        segment.decode(record.payload)
        for path in spooled_files(spool_dir)
        for record in segment.records(path)
    ]


def spooled_ids(spool_dir: Path) -> list[str]:
    return [str(delivery.delivery_id) for delivery in spooled(spool_dir)]
