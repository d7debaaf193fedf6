"""`services.runner`: every command fails the same way, with one line and an exit status."""

from __future__ import annotations

import argparse
import json

import pytest

from services import runner
from services.replay.locks import ReplayBusy
from shared.errors import DeskLedgerError, MigrationError
from shared.settings import Settings, load_settings

SETTINGS: Settings = load_settings(environ={}, dotenv=None).replace(log_format="json")


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (MigrationError("0002_x.sql was changed"), 1, "deskledger migrate: 0002_x.sql was changed"),
        (ReplayBusy("another replay is running"), 3, "deskledger migrate: another replay"),
        (
            ConnectionRefusedError(111, "Connect call failed"),
            1,
            "deskledger migrate: ConnectionRefusedError: [Errno 111] Connect call failed "
            "(PostgreSQL at postgresql://localhost:5432/deskledger); the hint",
        ),
    ],
)
def test_expected_failures_are_one_line_and_a_status(
    capsys: pytest.CaptureFixture[str], error: Exception, status: int, line: str
) -> None:
    async def main() -> int:
        raise error

    code = runner.run("migrate", SETTINGS, main, uses="PostgreSQL", hint="the hint")
    assert code == status
    # The structured log line (logs go to stderr), then the line for a person.
    started, logged, said = capsys.readouterr().err.strip().splitlines()
    assert json.loads(started)["event"] == "deskledger_started"
    assert json.loads(logged)["event"] == "migrate_failed"
    assert said.startswith(line)


def test_the_exit_status_of_main_is_the_commands() -> None:
    async def main() -> int:
        return 0

    assert runner.run("worker", SETTINGS, main) == 0


def test_an_unexpected_error_is_not_hidden() -> None:
    async def main() -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        runner.run("worker", SETTINGS, main)


@pytest.mark.parametrize("raw", ["0", "-1", "x", "1.5"])
def test_positive_int_refuses_what_is_not_a_count(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        runner.positive_int(raw)


def test_positive_numbers() -> None:
    assert runner.positive_int("3") == 3
    assert runner.positive_float("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError):
        runner.positive_float("0")


def test_every_error_of_ours_has_an_exit_status() -> None:
    assert DeskLedgerError.exit_code == 1
    assert ReplayBusy.exit_code == 3
