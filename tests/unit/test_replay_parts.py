"""The replay's small parts: progress reporting, ticket ranges, the command line."""

from __future__ import annotations

import io

import pytest
from structlog.testing import capture_logs

from services.cli import build_parser
from services.replay.command import rebuild_summary
from services.replay.comparison import TableComparison
from services.replay.loader import ranges
from services.replay.progress import Progress
from services.replay.rebuild import RebuildReport


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_logs_structured_lines_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    with capture_logs() as logs:
        progress = Progress("rebuild", 10, interval=0, stream=stream)
        progress.advance(4)
        progress.advance(5)
        progress.close(rows_written=3)
    assert stream.getvalue() == ""
    assert [line["event"] for line in logs] == [
        "replay_progress",
        "replay_progress",
        "replay_phase_done",
    ]
    assert logs[1]["events_done"] == 9
    assert logs[1]["events_total"] == 10
    assert {"events_per_second", "eta_seconds"} <= logs[1].keys()
    assert logs[2]["events_total"] == 9  # the total was an estimate
    assert logs[2]["rows_written"] == 3


def test_progress_draws_a_bar_with_rate_on_a_terminal() -> None:
    stream = Terminal()
    with capture_logs() as logs:
        progress = Progress("rebuild", 10, interval=0, stream=stream)
        progress.advance(10)
        progress.close()
    assert "rebuild: 100%" in stream.getvalue()
    assert "events/s" in stream.getvalue()
    assert [line["event"] for line in logs] == ["replay_phase_done"]


def test_ticket_ranges_cover_every_id_once() -> None:
    assert ranges([]) == [(None, None)]
    assert ranges([None]) == [(None, None)]
    assert ranges([30, 10, 30]) == [(None, 10), (10, 30), (30, None)]


def test_every_level_of_the_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["replay", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--projection", "--dry-run", "--reprocess-rejected", "--lock-timeout"):
        assert option in text
    assert "exit status" in text
    assert "ticket_status_changes" in text


def test_summary_names_the_differences_by_table_and_key() -> None:
    report = RebuildReport(("tickets", "ticket_comments"), events=1200, swapped=True)
    report.comparisons = [
        TableComparison("tickets", 3, 3, {"missing": 0, "unexpected": 0, "changed": 1}),
        TableComparison(
            "ticket_comments",
            4,
            5,
            {"missing": 1, "unexpected": 0, "changed": 0},
            [("412900873", "missing")],
        ),
    ]
    report.comparisons[0].keys = [("3318841", "changed")]
    line = rebuild_summary(report, 0.5, dry_run=False)
    assert line == (
        "replay: 1200 events in 0.50 s (2,400 events/s); 2 differences - "
        "tickets: 1 changed (keys 3318841); ticket_comments: 1 missing (keys 412900873); "
        "swapped in: tickets, ticket_comments"
    )
