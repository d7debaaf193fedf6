"""Settings: one typed, frozen object built once from the environment (and an optional `.env`).

Every variable is listed in `SETTINGS` with its default and what it expects, so `--help`, the
README table and the error messages all come from the same place.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import SettingsError


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.hostname:
        raise SettingsError(
            f"{name}: expected a URL like {schemes[0]}://host:port/..., got {raw!r}"
        )
    return raw


N = TypeVar("N", int, float)


def _ranged(convert: Callable[[str], N], what: str, low: N, high: N) -> Callable[[str, str], N]:
    def parse(name: str, raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise SettingsError(f"{name}: expected {what} from {low} to {high}, got {raw!r}")
        return value

    return parse


def _int(low: int, high: int) -> Callable[[str, str], int]:
    return _ranged(int, "an integer", low, high)


def _float(low: float, high: float) -> Callable[[str, str], float]:
    return _ranged(float, "a number", low, high)


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"", "0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def _secrets(name: str, raw: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in raw.split(",") if part.strip())
    if any(len(value) < 8 for value in values):
        raise SettingsError(f"{name}: expected comma-separated secrets of 8 characters or more")
    return values


def _zone(name: str, raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(
            f"{name}: expected an IANA time zone like Europe/Moscow, got {raw!r}"
        ) from exc


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw.lower() not in choices:
            raise SettingsError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return raw.lower()

    return parse


def _spool_dir(name: str, raw: str) -> Path | None:
    """A directory, or `none` (or empty) for no spool; relative paths are the working dir's."""
    if raw.strip().lower() in {"", "none"}:
        return None
    return Path(raw)


def _prefix(name: str, raw: str) -> str:
    if not raw or len(raw) > 100 or not all(c.isalnum() or c in "-_." for c in raw):
        raise SettingsError(f"{name}: expected 1-100 letters, digits, '-', '_' or '.', got {raw!r}")
    return raw


def _token(name: str, raw: str) -> str:
    value = raw.strip()
    if value and (len(value) < 8 or any(c.isspace() for c in value)):
        raise SettingsError(f"{name}: expected a token of 8 characters or more, without spaces")
    return value


@dataclass(frozen=True)
class Setting:
    """One environment variable: the field it fills, its default and its parser."""

    env: str
    field: str
    default: str
    parse: Callable[[str, str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "database_url",
        "postgresql://localhost:5432/deskledger",
        lambda n, r: _url(n, r, ("postgresql", "postgres")),
        "PostgreSQL; `migrate` creates the database if it is missing",
    ),
    Setting(
        "AMQP_URL",
        "amqp_url",
        "amqp://guest:guest@localhost:5672/",
        lambda n, r: _url(n, r, ("amqp", "amqps")),
        "RabbitMQ",
    ),
    Setting(
        "DESKLEDGER_AMQP_PREFIX",
        "amqp_prefix",
        "deskledger",
        _prefix,
        "prefix of every exchange and queue name",
    ),
    Setting(
        "DESKLEDGER_SECRETS",
        "secrets",
        "",
        _secrets,
        "comma-separated values accepted in the webhook's `secret` field",
    ),
    Setting(
        "DESKLEDGER_ALLOW_ANY_SECRET",
        "allow_any_secret",
        "0",
        _bool,
        "development only: accept any secret when DESKLEDGER_SECRETS is empty",
    ),
    Setting(
        "DESKLEDGER_HTTP_HOST",
        "http_host",
        "0.0.0.0",  # noqa: S104 - a service listens on all
        lambda n, r: r,
        "ingress listen address",
    ),
    Setting("DESKLEDGER_HTTP_PORT", "http_port", "8080", _int(1, 65535), "ingress listen port"),
    Setting(
        "DESKLEDGER_MAX_BODY_BYTES",
        "max_body_bytes",
        "1048576",
        _int(1024, 64 * 1024 * 1024),
        "larger bodies get 413",
    ),
    Setting(
        "DESKLEDGER_SOURCE_TIMEZONE",
        "source_timezone",
        "Europe/Moscow",
        _zone,
        "zone of UseDesk's naive `YYYY-MM-DD HH:MM:SS` dates",
    ),
    Setting(
        "DESKLEDGER_LOG_FORMAT",
        "log_format",
        "",
        _choice("", "json", "console"),
        "`json` or `console` (default: console when stderr is a terminal, else json)",
    ),
    Setting(
        "LOG_LEVEL",
        "log_level",
        "info",
        _choice("debug", "info", "warning", "error"),
        "debug, info, warning or error",
    ),
    Setting(
        "DESKLEDGER_INGRESS_LOG_SAMPLE",
        "ingress_log_sample",
        "1",
        _int(1, 1_000_000),
        "the ingress logs one `webhook_accepted` line in N (refusals and spooled webhooks always);"
        " 1: every webhook",
    ),
    Setting(
        "DESKLEDGER_PUBLISH_TIMEOUT",
        "publish_timeout",
        "5",
        _float(0.1, 120),
        "seconds to wait for the broker's confirm before answering 503",
    ),
    Setting(
        "DESKLEDGER_READ_TIMEOUT",
        "read_timeout",
        "10",
        _float(0.1, 300),
        "seconds a client may take to send its whole request body",
    ),
    Setting(
        "DESKLEDGER_MAX_IN_FLIGHT",
        "max_in_flight",
        "1024",
        _int(1, 1_000_000),
        "webhooks per ingress process whose body has arrived and that wait to be parsed or"
        " confirmed, beyond which it answers 503 at once (bodies still arriving count in"
        " DESKLEDGER_MAX_BODY_READERS)",
    ),
    Setting(
        "DESKLEDGER_MAX_BODY_READERS",
        "max_body_readers",
        "256",
        _int(1, 1_000_000),
        "request bodies still arriving that one ingress process waits for at once (not counted"
        " in DESKLEDGER_MAX_IN_FLIGHT); a newer one beyond it cuts the oldest off with 408",
    ),
    Setting(
        "DESKLEDGER_DRAIN_SECONDS",
        "drain_seconds",
        "5",
        _float(0, 300),
        "after SIGTERM, seconds /readyz answers 503 before the ingress stops listening",
    ),
    Setting(
        "DESKLEDGER_DELIVERY_LIMIT",
        "delivery_limit",
        "20",
        _int(1, 10_000),
        "deliveries of one message before the queue dead-letters it (x-delivery-limit)",
    ),
    Setting(
        "DESKLEDGER_PREFETCH",
        "prefetch",
        "2000",
        _int(1, 65535),
        "unacknowledged messages a worker holds",
    ),
    Setting(
        "DESKLEDGER_BATCH_SIZE",
        "batch_size",
        "500",
        _int(1, 100_000),
        "messages a worker commits in one transaction at most",
    ),
    Setting(
        "DESKLEDGER_BATCH_MS",
        "batch_ms",
        "50",
        _int(0, 60_000),
        "milliseconds a worker waits to fill a batch",
    ),
    Setting(
        "DESKLEDGER_WORKER_METRICS_PORT",
        "worker_metrics_port",
        "9100",
        _int(0, 65535),
        "worker /metrics, /healthz and /readyz port (0: off)",
    ),
    Setting(
        "DESKLEDGER_SPOOL_DIR",
        "spool_dir",
        "var/spool",
        _spool_dir,
        "the ingress's durable local spool for webhooks the broker cannot confirm (relative to"
        " the working directory); `none` turns it off",
    ),
    Setting(
        "DESKLEDGER_SPOOL_MAX_BYTES",
        "spool_max_bytes",
        "1073741824",
        _int(1024 * 1024, 2**50),
        "bytes of spool per ingress process, past which it refuses (503)",
    ),
    Setting(
        "DESKLEDGER_SPOOL_FORWARD_RATE",
        "spool_forward_rate",
        "1000",
        _int(1, 1_000_000),
        "spooled webhooks per second an ingress process forwards to the broker once it"
        " confirms again (live webhooks go first)",
    ),
    Setting(
        "DESKLEDGER_COMPANY_ID",
        "company_id",
        "",
        lambda n, r: _int(0, 2**62)(n, r) if r else None,
        "UseDesk account id for payloads that carry none (comments); optional",
    ),
    Setting(
        "USEDESK_API_URL",
        "usedesk_api_url",
        "https://api.usedesk.ru",
        lambda n, r: _url(n, r, ("https", "http")),
        "UseDesk REST API base, for `reconcile` (newer accounts: https://secure.usedesk.com/uapi)",
    ),
    Setting(
        "USEDESK_API_TOKEN",
        "usedesk_api_token",
        "",
        _token,
        "the API channel's token, for `reconcile` (it refuses to start without it); secret",
    ),
    Setting(
        "DESKLEDGER_RECONCILE_RATE",
        "reconcile_rate",
        "1",
        _float(0.01, 100),
        "UseDesk API requests per second that `reconcile` may make",
    ),
)


def _secret_free_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    """Everything DeskLedger reads from its environment, parsed and checked once."""

    database_url: str
    amqp_url: str
    amqp_prefix: str
    secrets: tuple[str, ...]
    allow_any_secret: bool
    http_host: str
    http_port: int
    max_body_bytes: int
    source_timezone: ZoneInfo
    log_format: str
    log_level: str
    ingress_log_sample: int
    publish_timeout: float
    read_timeout: float
    max_in_flight: int
    max_body_readers: int
    drain_seconds: float
    delivery_limit: int
    prefetch: int
    batch_size: int
    batch_ms: int
    worker_metrics_port: int
    spool_dir: Path | None
    spool_max_bytes: int
    spool_forward_rate: int
    company_id: int | None
    usedesk_api_url: str
    usedesk_api_token: str
    reconcile_rate: float

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["secrets"] = f"<{len(self.secrets)} secret(s)>"
        shown["usedesk_api_token"] = "***" if self.usedesk_api_token else ""
        shown["database_url"] = _secret_free_url(self.database_url)
        shown["amqp_url"] = _secret_free_url(self.amqp_url)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def safe_database_url(self) -> str:
        return _secret_free_url(self.database_url)

    @property
    def safe_amqp_url(self) -> str:
        return _secret_free_url(self.amqp_url)


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a `.env` file; `#` comments, blank lines and `export ` are allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").strip()
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build the settings; the process environment wins over `.env`."""
    merged: dict[str, str] = read_dotenv(dotenv) if dotenv is not None else {}
    merged.update(os.environ if environ is None else environ)
    values = {s.field: s.parse(s.env, merged.get(s.env, s.default)) for s in SETTINGS}
    if not values["log_format"]:
        values["log_format"] = "console" if sys.stderr.isatty() else "json"
    return Settings(**values)


def settings_help() -> str:
    """The settings table for `--help` epilogs."""
    width = max(len(s.env) for s in SETTINGS)
    lines = ["settings (environment variables, or a .env file in the working directory):"]
    for s in SETTINGS:
        default = f" [default: {s.default}]" if s.default else ""
        lines.append(f"  {s.env:<{width}}  {s.help}{default}")
    return "\n".join(lines)
