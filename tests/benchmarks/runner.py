"""`python -m tests.benchmarks [--smoke] [--only PART,...]`: run the parts, print, write JSON.

Each part measures its subject and its baseline in this same run and returns `Result`s; a part
whose service is not built yet, or whose tool is missing, is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.logging import configure_logging
from tests.benchmarks import report
from tests.benchmarks.cost import at_capacity
from tests.benchmarks.cost import markdown as cost_markdown
from tests.benchmarks.environment import BUILD, Bench, bench_environment
from tests.benchmarks.report import Result, Skip, Skipped


@dataclass(frozen=True)
class Part:
    name: str
    module: str
    needs_module: str | None = None  # a service module that must exist
    needs_tool: str | None = None  # a program that must be on PATH (full runs only)

    def missing(self, smoke: bool) -> str | None:
        if self.needs_module and not _importable(self.needs_module):
            return f"{self.needs_module} is not there yet"
        if self.needs_tool and not smoke and shutil.which(self.needs_tool) is None:
            return f"`{self.needs_tool}` is not installed (`make bench` installs it)"
        return None


PARTS = (
    Part("decode", "tests.benchmarks.decode"),
    Part("ingress", "tests.benchmarks.ingress", "services.ingress.app", "wrk"),
    Part("worker", "tests.benchmarks.worker"),
    Part("endtoend", "tests.benchmarks.endtoend", "services.ingress.app"),
    Part("replay", "tests.benchmarks.replay", "services.replay.command"),
    Part("peer", "tests.benchmarks.peer"),
)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is missing too
        return False


async def run_part(part: Part, bench: Bench, results: list[Result], skipped: list[Skipped]) -> bool:
    """Run one part; False when it failed (skips are not failures)."""
    reason = part.missing(bench.smoke)
    if reason is not None:
        skipped.append(Skipped(part.name, reason))
        print(f"[bench] {part.name}: skipped, {reason}", flush=True)
        return True
    started = time.perf_counter()
    print(f"[bench] {part.name} ...", flush=True)
    module = importlib.import_module(part.module)
    measure: Callable[[Bench], Awaitable[list[Result]]] = module.run
    try:
        found = await measure(bench)
    except Skip as exc:
        skipped.append(Skipped(part.name, str(exc)))
        print(f"[bench] {part.name}: skipped, {exc}", flush=True)
        return True
    except Exception as exc:
        traceback.print_exc()
        skipped.append(Skipped(part.name, f"FAILED: {type(exc).__name__}: {exc}"[:500]))
        return False
    results.extend(found)
    for result in found:
        print(f"[bench]   {result.name}: {result.value:,.2f} {result.unit}", flush=True)
    print(f"[bench] {part.name} done in {time.perf_counter() - started:.0f} s", flush=True)
    return True


async def main_async(smoke: bool, only: Sequence[str], out: Path) -> int:
    configure_logging("bench", "error", "console")
    started = time.perf_counter()
    results: list[Result] = []
    skipped: list[Skipped] = []
    ok = True
    costs: dict[str, dict[str, Any]] = {}
    async with bench_environment(smoke) as bench:
        machine = await report.machine(bench.urls.database(bench.name), bench.urls.amqp)
        for part in PARTS:
            if only and part.name not in only:
                continue
            ok = await run_part(part, bench, results, skipped) and ok
        costs = bench.costs
    ingress = next((r for r in results if r.name == "ingress_cpu_per_webhook"), None)
    if ingress is not None and "worker" in costs:
        costs = {"capacity": at_capacity(ingress.details, costs["worker"]), **costs}
    seconds = time.perf_counter() - started
    meta = {
        "smoke": smoke,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(seconds, 1),
    }
    report.write(out, machine, results, skipped, meta, costs=costs)
    print()
    print(report.table(results, skipped))
    for where, cost in costs.items():
        print(f"\nCost per webhook ({where}):\n{cost_markdown(cost)}")
    print(f"\n{len(results)} results in {seconds:.0f} s; written to {out}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no targets judged")
    parser.add_argument(
        "--only", default="", help="comma-separated parts: " + ", ".join(p.name for p in PARTS)
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - {p.name for p in PARTS}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    out = args.out or BUILD / ("smoke-results.json" if args.smoke else "results.json")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        code = runner.run(main_async(args.smoke, only, out))
    sys.exit(code)
