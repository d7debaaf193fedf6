"""Schemathesis against the live ingress, from the description it serves (`make chaos`).

The ingress runs as a real process accepting any secret, so generated webhooks go all the way
to RabbitMQ; a worker then drains them. Passes when: every answer is one the description
documents, no 5xx, the ingress never logged an unhandled error and is still alive, and every
kept webhook got an outcome row with nothing dead-lettered.

`negative_data_rejection` is left out on purpose: the ingress keeps whatever object carries a
valid secret (it checks structure, the worker checks meaning and records what it cannot decode
as `rejected`), and answers a `ping` without a secret 200 by contract.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

import asyncpg
import pytest

from shared.settings import Settings
from tests.helpers.checker import record
from tests.helpers.ingress import ingress_process
from tests.helpers.services import REPO
from tests.helpers.worker import drain, queue_depths

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

VENV = REPO / "build" / "chaos-venv"
SCHEMATHESIS = Path(os.environ.get("DESKLEDGER_SCHEMATHESIS", VENV / "bin" / "schemathesis"))
MAX_EXAMPLES = int(os.environ.get("DESKLEDGER_SCHEMATHESIS_EXAMPLES", "300"))
TRACEBACK = "Traceback (most recent call last)"
# aiohttp logs a request it cannot parse (NUL in a header, say) with a traceback, then answers
# 400 itself: the client's fault, not a crash.
CLIENT_FAULT = re.compile(r"^aiohttp\.http_exceptions\.\w+: ", re.MULTILINE)


def _schemathesis() -> Path:
    if SCHEMATHESIS.exists():
        return SCHEMATHESIS
    if os.environ.get("DESKLEDGER_CHAOS"):
        raise AssertionError(f"{SCHEMATHESIS} is missing: `make chaos` installs it")
    pytest.skip("schemathesis is not installed (make chaos installs it under build/)")


async def test_schemathesis_finds_no_undocumented_answer_and_no_crash(
    settings: Settings, db: asyncpg.Connection
) -> None:
    binary = _schemathesis()
    any_secret = settings.replace(secrets=(), allow_any_secret=True)
    async with ingress_process(any_secret) as ingress:
        with tempfile.TemporaryDirectory(prefix="deskledger-schemathesis-") as tmp:
            process = await asyncio.create_subprocess_exec(
                str(binary),
                "run",
                ingress.base_url + "/openapi.yaml",
                "--checks=all",
                "--exclude-checks=negative_data_rejection",
                "--phases=examples,coverage,fuzzing",
                f"--max-examples={MAX_EXAMPLES}",
                "--workers=1",
                "--generation-database=none",
                "--no-color",
                cwd=tmp,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output = (await asyncio.wait_for(process.communicate(), 500))[0].decode()
        alive = ingress.process.returncode is None
        log = ingress.log()
    (REPO / "build" / "chaos").mkdir(parents=True, exist_ok=True)
    (REPO / "build" / "chaos" / "schemathesis-ingress.log").write_text(log, encoding="utf-8")
    generated = re.search(r"(\d+) generated", output)
    cases = int(generated.group(1)) if generated else 0
    unhandled = log.count(TRACEBACK) - len(CLIENT_FAULT.findall(log))
    crashes = (0 if alive else 1) + unhandled
    record("schemathesis", faults=0, bad_inputs=cases, crashes=crashes)
    assert process.returncode == 0, output[-6000:]
    assert crashes == 0, log[-6000:]
    assert cases > 0, output[-2000:]

    await drain(settings)
    assert await queue_depths(settings) == (0, 0), "left in the queue or dead-lettered"
    unsettled = await db.fetchval("SELECT count(*) FROM deliveries WHERE outcome IS NULL")
    assert unsettled == 0
