"""Totals of a `make chaos` run: `python -m tests.faults.summary build/chaos/summary.jsonl`.

Each fault test appended one JSON line (see `checker.record`); this adds them up, prints the
table `docs/reliability.md` quotes, and exits 1 when anything was lost, doubled or crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROWS = (
    ("faults", "faults injected", False),
    ("sent", "webhooks sent", False),
    ("attempts", "HTTP requests (retries too)", False),
    ("acknowledged", "acknowledged (200)", False),
    ("spooled", "of them from the ingress's spool", False),
    ("stored", "stored (one event each)", False),
    ("lost", "lost", True),
    ("duplicated", "duplicated", True),
    ("failures", "other checker failures", True),
    ("bad_inputs", "bad inputs tried", False),
    ("crashes", "crashes", True),
)


def totals(path: Path) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    tests = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            tests += 1
            counts.update({k: v for k, v in json.loads(line).items() if isinstance(v, int)})
    return counts, tests


def render(counts: Counter[str], tests: int, seconds: float | None) -> str:
    took = f", {seconds / 60:.1f} min" if seconds is not None else ""
    lines = [f"chaos summary: {tests} tests{took}"]
    for key, label, must_be_zero in ROWS:
        note = "  (must be 0)" if must_be_zero else ""
        lines.append(f"  {label:<30} {counts[key]:>8}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--since", type=float, help="start time (epoch seconds) of the run")
    args = parser.parse_args(argv)
    if not args.path.exists():
        print(f"chaos summary: {args.path} is missing: no fault test recorded anything")
        return 1
    counts, tests = totals(args.path)
    seconds = time.time() - args.since if args.since else None
    print(render(counts, tests, seconds))
    bad = [label for key, label, must_be_zero in ROWS if must_be_zero and counts[key]]
    if bad or not counts["faults"]:
        print(f"chaos: FAILED ({', '.join(bad) or 'no fault injected'})")
        return 1
    print("chaos: nothing acknowledged was lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
