"""What one webhook costs: CPU in each process, bytes written, and the sizing that follows.

`Meter` snapshots, before and after a measured window, the CPU time of every process that does
the work — our own (by pid), PostgreSQL (every `postgres` process, plus what the postmaster has
reaped from backends that ended in the window) and RabbitMQ (`beam.smp`) — the bytes each has
written to disk (`/proc/PID/io`, `write_bytes`: what reached the block layer, WAL and data files
and the broker's message store alike), and PostgreSQL's WAL (`pg_current_wal_lsn()` and
`pg_stat_wal`). `Meter.per_webhook(n)` divides the differences by the webhooks handled.

The CPU and WAL figures are machine-wide for PostgreSQL and RabbitMQ: a run measured while other
work uses them counts that work too. The bench runs alone (its advisory lock) for that reason.

`sizing` turns a cost per webhook into "webhooks per second per core" and "cores for a helpdesk
of N webhooks/s" — with the utilisation an operator should plan for (`PLANNED_UTILISATION`), so
that a burst does not meet a saturated machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
# Plan cores so that the steady load uses at most this share of them.
PLANNED_UTILISATION = 0.6
HELPDESK_RATES = (10, 100, 1_000, 10_000)
WAL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn, s.wal_records, s.wal_fpi
FROM pg_stat_wal AS s
"""
TABLE_BYTES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public'
"""


@dataclass(frozen=True)
class Usage:
    """CPU seconds used and bytes written so far by one group of processes."""

    cpu_seconds: float = 0.0
    written_bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu_seconds + other.cpu_seconds, self.written_bytes + other.written_bytes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.cpu_seconds - other.cpu_seconds, self.written_bytes - other.written_bytes)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _written(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def usage_of(pids: list[int], reaped: bool = False) -> Usage:
    """`utime + stime` of `pids` (fields 14, 15 of proc(5)); with `reaped`, also what each has
    collected from children it waited for (16, 17: the postmaster's ended backends)."""
    ticks = 0
    written = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        ticks += int(fields[11]) + int(fields[12])
        if reaped:
            ticks += int(fields[13]) + int(fields[14])
        written += _written(pid)
    return Usage(ticks / CLOCK_TICK, written)


def pids_named(name: str) -> list[int]:
    """Processes whose command name (`comm`) is `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _postgres() -> Usage:
    pids = pids_named("postgres")
    # The postmaster is the one whose parent is not a postgres process.
    parents = {pid: (_stat(pid) or ["", "0"])[1] for pid in pids}
    postmasters = [pid for pid, ppid in parents.items() if int(ppid) not in parents]
    backends = [pid for pid in pids if pid not in postmasters]
    return usage_of(postmasters, reaped=True) + usage_of(backends) if pids else Usage()


@dataclass
class Snapshot:
    at: float
    usage: dict[str, Usage]
    wal_bytes: int
    wal_records: int
    wal_fpi: int
    table_bytes: dict[str, int]


@dataclass
class Meter:
    """Snapshots of the processes in `ours` (name → pid), PostgreSQL, RabbitMQ and the WAL."""

    database_url: str
    ours: Mapping[str, int]
    snapshots: list[Snapshot] = field(default_factory=list)

    async def snapshot(self) -> None:
        usage = {name: usage_of([pid]) for name, pid in self.ours.items()}
        usage["postgresql"] = _postgres()
        usage["rabbitmq"] = usage_of(pids_named("beam.smp"))
        conn = await asyncpg.connect(self.database_url)
        try:
            wal = await conn.fetchrow(WAL)
            tables = {row["relname"]: row["bytes"] for row in await conn.fetch(TABLE_BYTES)}
        finally:
            await conn.close()
        assert wal is not None
        self.snapshots.append(
            Snapshot(
                time.monotonic(), usage, wal["lsn"], wal["wal_records"], wal["wal_fpi"], tables
            )
        )

    def per_webhook(self, webhooks: int) -> dict[str, Any]:
        """The costs between the first and last snapshot, per webhook handled in between."""
        first, last = self.snapshots[0], self.snapshots[-1]
        n = max(webhooks, 1)
        used = {name: last.usage[name] - first.usage[name] for name in last.usage}
        cpu = {name: round(u.cpu_seconds * 1e6 / n, 1) for name, u in used.items()}
        disk = {name: round(u.written_bytes / n) for name, u in used.items()}
        tables = {
            name: round((size - first.table_bytes.get(name, 0)) / n)
            for name, size in sorted(last.table_bytes.items())
            if size - first.table_bytes.get(name, 0) > 0
        }
        return {
            "webhooks": webhooks,
            "seconds": round(last.at - first.at, 2),
            "cpu_us": cpu,
            "cpu_us_total": round(sum(cpu.values()), 1),
            "disk_written_bytes": disk,
            "wal_bytes": round((last.wal_bytes - first.wal_bytes) / n),
            "wal_records": round((last.wal_records - first.wal_records) / n, 1),
            "wal_full_page_images": round((last.wal_fpi - first.wal_fpi) / n, 2),
            "table_bytes": tables,
            "table_bytes_total": sum(tables.values()),
        }


async def reset_statements(conn: asyncpg.Connection) -> bool:
    """Start `pg_stat_statements` afresh for the connection's database; False when the server
    does not preload it (`shared_preload_libraries`): the per-statement figures are then left out,
    the run goes on."""
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database"
            " WHERE datname = current_database()), 0)"
        )
    except asyncpg.PostgresError:
        return False
    return True


def sizing(cpu_us_per_webhook: float) -> dict[str, Any]:
    """Webhooks/s one core sustains, and the cores a helpdesk of N webhooks/s needs."""
    per_core = 1e6 / cpu_us_per_webhook if cpu_us_per_webhook > 0 else 0.0
    return {
        "webhooks_per_second_per_core": round(per_core),
        "planned_utilisation": PLANNED_UTILISATION,
        "cores_for": {
            str(rate): round(rate * cpu_us_per_webhook / 1e6 / PLANNED_UTILISATION, 2)
            for rate in HELPDESK_RATES
        },
    }


def markdown(cost: Mapping[str, Any]) -> str:
    """The cost table for results.md and docs/benchmarks.md."""
    cpu: dict[str, float] = cost["cpu_us"]
    disk: dict[str, int] = cost["disk_written_bytes"]
    lines = [
        f"Measured over {cost['webhooks']:,} webhooks in {cost['seconds']} s "
        f"({cost.get('where', '')}).",
        "",
        "| process | CPU µs per webhook | bytes written to disk per webhook |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {cpu[name]:,.0f} | {disk.get(name, 0):,} |" for name in cpu]
    lines.append(f"| **all** | **{cost['cpu_us_total']:,.0f}** | {sum(disk.values()):,} |")
    lines += [
        "",
        f"PostgreSQL WAL: {cost['wal_bytes']:,} bytes, {cost['wal_records']} records and "
        f"{cost['wal_full_page_images']} full-page images per webhook. Table growth per webhook "
        "(with indexes and TOAST): "
        + ", ".join(f"{name} {size:,} B" for name, size in cost["table_bytes"].items())
        + f"; {cost['table_bytes_total']:,} B in all.",
    ]
    if "machine_busy_share" in cost:
        lines.append(
            f"The machine's cores were {cost['machine_busy_share']:.0%} busy over the window "
            "(these processes and the load generator)."
        )
    size = cost["sizing"]
    cores = ", ".join(f"{int(rate):,}/s: {n} cores" for rate, n in size["cores_for"].items())
    lines += [
        "",
        f"Webhooks per second per core: **{size['webhooks_per_second_per_core']:,}** (all the "
        f"processes above together). Cores for a helpdesk, planned at "
        f"{size['planned_utilisation']:.0%} utilisation: {cores}.",
    ]
    return "\n".join(lines) + "\n"


def at_capacity(ingress: dict[str, Any], worker: dict[str, Any]) -> dict[str, Any]:
    """A webhook's cost with every stage running flat out: the ingress under wrk (its CPU and
    RabbitMQ's while it publishes) plus the worker draining a queue (its CPU, PostgreSQL's and
    RabbitMQ's while it consumes). Bytes written come from the worker's drain only."""
    cpu = {
        "ingress": round(ingress["ingress_cpu_us"], 1),
        "worker": worker["cpu_us"]["worker"],
        "postgresql": worker["cpu_us"]["postgresql"],
        "rabbitmq": round((ingress.get("rabbitmq_cpu_us") or 0) + worker["cpu_us"]["rabbitmq"], 1),
    }
    cost = {key: value for key, value in worker.items() if key not in ("cpu_us", "sizing")}
    cost["cpu_us"] = cpu
    cost["cpu_us_total"] = round(sum(cpu.values()), 1)
    cost["where"] = (
        "each stage at its own capacity: the ingress under wrk at 64 connections (with "
        "RabbitMQ taking its publishes), the worker draining a pre-filled queue (with PostgreSQL "
        "and RabbitMQ); bytes and WAL from the drain"
    )
    cost["sizing"] = sizing(cost["cpu_us_total"])
    return cost
