"""Results, targets, the table on stdout and `build/bench/results.json`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aio_pika
import asyncpg

from tests.benchmarks.cost import markdown as cost_markdown

Better = Literal["higher", "lower"]


@dataclass
class Result:
    """One measured number beside its baseline from the same run.

    `ratio` is value / baseline_value. `target` is text for people; `meets_target` is None
    when there is no target (or in a smoke run, where sizes are too small to judge).
    """

    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    meets_target: bool | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value  # type: ignore[operator]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return data


def judged(result: Result, *checks: bool, smoke: bool) -> Result:
    """Set `meets_target` from `checks` (all must hold); never in a smoke run."""
    result.meets_target = None if smoke else all(checks)
    return result


class Skip(Exception):
    """The part cannot run here; the message says why."""


@dataclass
class Skipped:
    part: str
    reason: str


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    # Three decimals near 1: a ratio shown as 1.50x that misses a 1.5x target would puzzle.
    if value is None:
        return "-"
    return f"{value:.3f}x" if value < 10 else f"{value:.1f}x"


def table(results: list[Result], skipped: list[Skipped]) -> str:
    head = ("result", "value", "unit", "baseline", "baseline value", "ratio", "target", "met")
    rows = [head]
    for r in results:
        met = {None: "", True: "yes", False: "NO"}[r.meets_target]
        ratio = _ratio(r.ratio)
        rows.append(
            (
                r.name,
                _number(r.value),
                r.unit,
                r.baseline or "-",
                _number(r.baseline_value),
                ratio,
                r.target or "-",
                met,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.extend(f"skipped {s.part}: {s.reason}" for s in skipped)
    return "\n".join(lines)


def markdown(
    info: dict[str, Any],
    results: list[Result],
    skipped: list[Skipped],
    meta: dict[str, Any],
    costs: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The table for docs/benchmarks.md, with the machine it ran on."""
    lines = [
        "| result | value | baseline | baseline value | ratio | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in results:
        met = {None: "", True: "yes", False: "**no**"}[r.meets_target]
        ratio = _ratio(r.ratio)
        lines.append(
            f"| {r.name} | {_number(r.value)} {r.unit} | {r.baseline or '-'} | "
            f"{_number(r.baseline_value)} | {ratio} | {r.target or '-'} | {met} |"
        )
    lines.extend(f"\nSkipped {s.part}: {s.reason}" for s in skipped)
    machine = ", ".join(f"{key} {value}" for key, value in info.items())
    lines.append(f"\nMachine: {machine}. Run: {meta['duration_seconds']:.0f} s, ")
    lines[-1] += (
        f"finished {meta['finished_at']}, load average at end {meta['load_average_at_end']}."
    )
    for where, cost in (costs or {}).items():
        lines.append(f"\n### Cost per webhook ({where})\n\n{cost_markdown(cost)}")
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


async def machine(database_url: str, amqp_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        props = connection.transport.connection.server_properties  # type: ignore[union-attr]
        rabbitmq = props.get("version", "unknown")
    rabbitmq = rabbitmq.decode() if isinstance(rabbitmq, bytes) else str(rabbitmq)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgres": postgres,
        "postgres_synchronous_commit": fsync,
        "rabbitmq": rabbitmq,
        "git_commit": _git_commit(),
        # Other work on the machine skews every number: the load when the run began.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write(
    path: Path,
    info: dict[str, Any],
    results: list[Result],
    skipped: list[Skipped],
    meta: dict[str, Any],
    *,
    costs: dict[str, dict[str, Any]] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": info,
        "run": meta,
        "results": [r.as_json() for r in results],
        "skipped": [asdict(s) for s in skipped],
        "cost": costs or {},
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    page = markdown(info, results, skipped, meta, costs)
    path.with_suffix(".md").write_text(page, encoding="utf-8")
