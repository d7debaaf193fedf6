"""What is running, said three ways (issue 17): `deskledger --version`, the first log line of
every command, and the `deskledger_build_info` metric."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services import runner
from services.cli import main
from shared.build import VERSION, register_build_info
from shared.settings import load_settings

SETTINGS = load_settings(environ={}, dotenv=None).replace(log_format="json")


def test_version_is_the_installed_packages() -> None:
    assert metadata.version("deskledger") == VERSION


def test_deskledger_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"deskledger {VERSION}"


@pytest.mark.parametrize("service", ["ingress", "worker", "migrate", "replay", "reconcile"])
def test_the_first_log_line_of_every_command_names_the_version(
    capsys: pytest.CaptureFixture[str], service: str
) -> None:
    async def command() -> int:
        return 0

    assert runner.run(service, SETTINGS, command) == 0
    first = json.loads(capsys.readouterr().err.splitlines()[0])
    assert first["event"] == "deskledger_started"
    assert (first["command"], first["version"]) == (service, VERSION)


def test_build_info_is_exported_once_per_registry() -> None:
    registry = CollectorRegistry()
    register_build_info(registry)
    register_build_info(registry)  # a second command in one process: no duplicate
    text = generate_latest(registry).decode()
    assert 'deskledger_build_info{python="' in text
    assert f'version="{VERSION}"}} 1.0' in text
