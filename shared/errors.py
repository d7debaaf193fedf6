"""The one exception hierarchy of DeskLedger: every error a user sees names what was wrong."""


class DeskLedgerError(Exception):
    """Base of every error DeskLedger raises on purpose."""

    # The exit status of a command that stops on this error.
    exit_code = 1


class SettingsError(DeskLedgerError):
    """A setting is missing or malformed; the message names the variable and what is expected."""

    exit_code = 2


class MigrationError(DeskLedgerError):
    """The database schema cannot be brought up to date; the message says which file and why."""


class DecodeError(DeskLedgerError):
    """A webhook body that does not decode into a domain event.

    Carries the kind, the JSON path and the reason, e.g.
    ``ticket_changed: trigger.ticket_id: expected an integer, got "abc"``.
    """

    def __init__(self, kind: str, path: str, reason: str) -> None:
        self.kind = kind
        self.path = path
        self.reason = reason
        where = f"{path}: " if path else ""
        super().__init__(f"{kind}: {where}{reason}")
