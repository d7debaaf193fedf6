"""`make bench` cannot rot: its smoke run (tiny sizes, no targets, no wrk, no peer venv) passes.

Speed is never asserted here; only that every part runs (or says why it cannot) and reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.environment import REPO
from tests.benchmarks.runner import PARTS

# Parts a smoke run skips on purpose, whatever the machine has.
SMOKE_SKIPS = {"peer"}


@pytest.mark.timeout(120)
def test_smoke_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert {"cpu_model", "cores", "python", "postgres", "rabbitmq"} <= set(report["machine"])
    skipped = {s["part"]: s["reason"] for s in report["skipped"]}
    assert not [reason for reason in skipped.values() if reason.startswith("FAILED")]
    reported = {r["name"].split("_")[0] for r in report["results"]}
    for part in PARTS:
        if part.name not in skipped:
            assert part.name in reported, f"{part.name} neither reported nor skipped"
    assert set(skipped) >= SMOKE_SKIPS
    for result in report["results"]:
        assert result["meets_target"] is None, result  # a smoke run judges nothing
        assert result["value"] > 0, result
