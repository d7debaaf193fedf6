"""The README's promises stay true: two commands, every setting documented."""

from __future__ import annotations

from pathlib import Path

from services.cli import COMMAND_MODULES, build_parser
from shared.settings import SETTINGS

README = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README


def test_readme_documents_every_setting() -> None:
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in README]
    assert missing == []


def test_readme_lists_every_subcommand() -> None:
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    commands = set(actions[0].choices or ())
    assert len(commands) == len(COMMAND_MODULES)
    for command in commands:
        assert f"deskledger {command}" in README
