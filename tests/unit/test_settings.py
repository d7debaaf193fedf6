"""Settings: defaults, parsing, one clear error naming the variable, no secrets in repr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import SETTINGS, load_settings, settings_help


def test_defaults_match_the_interface() -> None:
    settings = load_settings(environ={}, dotenv=None)
    assert settings.database_url == "postgresql://localhost:5432/deskledger"
    assert settings.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert settings.amqp_prefix == "deskledger"
    assert settings.secrets == ()
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == 8080
    assert settings.max_body_bytes == 1048576
    assert str(settings.source_timezone) == "Europe/Moscow"
    assert settings.log_level == "info"
    assert settings.publish_timeout == 5.0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DESKLEDGER_HTTP_PORT", "eighty", "DESKLEDGER_HTTP_PORT: expected an integer"),
        ("DESKLEDGER_HTTP_PORT", "70000", "DESKLEDGER_HTTP_PORT: expected an integer"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL: expected a URL"),
        ("AMQP_URL", "localhost", "AMQP_URL: expected a URL"),
        ("DESKLEDGER_SOURCE_TIMEZONE", "Mars/Olympus", "DESKLEDGER_SOURCE_TIMEZONE: expected"),
        ("DESKLEDGER_ALLOW_ANY_SECRET", "maybe", "DESKLEDGER_ALLOW_ANY_SECRET: expected"),
        ("DESKLEDGER_SECRETS", "short", "DESKLEDGER_SECRETS: expected"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: expected one of"),
        ("DESKLEDGER_AMQP_PREFIX", "a b", "DESKLEDGER_AMQP_PREFIX: expected"),
        ("DESKLEDGER_PUBLISH_TIMEOUT", "-1", "DESKLEDGER_PUBLISH_TIMEOUT: expected a number"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        load_settings(environ={variable: value}, dotenv=None)


def test_secrets_never_appear_in_repr() -> None:
    settings = load_settings(
        environ={
            "DESKLEDGER_SECRETS": "alpha-secret-1, beta-secret-2",
            "DATABASE_URL": "postgresql://app:pg-password-9@db:5432/x",
            "AMQP_URL": "amqp://app:mq-password-9@mq:5672/",
        },
        dotenv=None,
    )
    assert settings.secrets == ("alpha-secret-1", "beta-secret-2")
    text = repr(settings) + str(settings)
    for secret in ("alpha-secret-1", "beta-secret-2", "pg-password-9", "mq-password-9"):
        assert secret not in text
    assert "<2 secret(s)>" in text


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# local\nexport DESKLEDGER_HTTP_PORT=9000\nLOG_LEVEL='debug'\nDESKLEDGER_AMQP_PREFIX=x\n"
    )
    settings = load_settings(environ={"DESKLEDGER_AMQP_PREFIX": "env"}, dotenv=dotenv)
    assert (settings.http_port, settings.log_level, settings.amqp_prefix) == (9000, "debug", "env")


def test_malformed_dotenv_line_names_file_and_line(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LOG_LEVEL=info\nthis is not a setting\n")
    with pytest.raises(SettingsError, match=r"\.env:2: expected KEY=VALUE"):
        load_settings(environ={}, dotenv=dotenv)


def test_help_lists_every_variable() -> None:
    text = settings_help()
    for setting in SETTINGS:
        assert setting.env in text


def test_cli_exits_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services", "migrate"],
        env={"DESKLEDGER_MAX_BODY_BYTES": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "DESKLEDGER_MAX_BODY_BYTES" in lines[0]
