"""The spool's files: framing, torn tails, group commit, bounds, slots (no broker involved)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from services.ingress import segment, slot
from services.ingress.spool import Spool, SpoolFailed, SpoolFull
from shared import envelope
from shared.errors import SettingsError


def delivery(number: int = 0, size: int = 100) -> envelope.Delivery:
    body = b'{"ticket":{"id":%d},"pad":"%s"}' % (number, b"x" * size)
    return envelope.accepted("ticket_created", "application/json", body, body + b"raw")


def write_segment(path: Path, deliveries: list[envelope.Delivery]) -> list[int]:
    """A segment holding `deliveries`; the offset where each record ends."""
    data, ends = bytearray(segment.MAGIC), []
    for one in deliveries:
        data += segment.encode(one)
        ends.append(len(data))
    path.write_bytes(bytes(data))
    return ends


def read_back(path: Path) -> list[envelope.Delivery]:
    return [segment.decode(r.payload) for r in segment.records(path)]


# --- framing ----------------------------------------------------------------------------------


def test_a_record_is_the_message_the_broker_would_have_received() -> None:
    original = delivery(7)
    frame = segment.encode(original)
    back = segment.decode(frame[segment.HEADER.size :])
    assert back == original
    assert envelope.properties(back) == envelope.properties(original)


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 40, -1])
def test_a_torn_tail_is_skipped_and_logged_never_misread(tmp_path: Path, cut: int) -> None:
    path = tmp_path / segment.segment_name(1)
    sent = [delivery(n) for n in range(3)]
    ends = write_segment(path, sent)
    with path.open("r+b") as file:  # the last record was being appended when the power went
        file.truncate(ends[1] + cut)
    with structlog.testing.capture_logs() as logs:
        assert read_back(path) == sent[: 2 if cut > 0 else 1]
    assert [entry["event"] for entry in logs] == ["spool_torn_tail_skipped"]


def test_zeros_after_the_last_record_are_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / segment.segment_name(1)
    sent = [delivery(n) for n in range(2)]
    write_segment(path, sent)
    with path.open("ab") as file:  # a file system that grew the file but kept no data
        file.write(bytes(4096))
    with structlog.testing.capture_logs() as logs:
        assert read_back(path) == sent
    assert logs[0]["event"] == "spool_torn_tail_skipped"


def test_a_damaged_record_stops_the_reading_of_its_segment(tmp_path: Path) -> None:
    path = tmp_path / segment.segment_name(1)
    sent = [delivery(n) for n in range(3)]
    ends = write_segment(path, sent)
    data = bytearray(path.read_bytes())
    data[ends[0] + segment.HEADER.size + 20] ^= 0x01  # one bit of the second record's payload
    path.write_bytes(bytes(data))
    with structlog.testing.capture_logs() as logs:
        assert read_back(path) == sent[:1]
    assert logs[0]["event"] == "spool_damaged_records_skipped"


def test_a_flipped_length_is_not_believed(tmp_path: Path) -> None:
    path = tmp_path / segment.segment_name(1)
    sent = [delivery(n) for n in range(3)]
    ends = write_segment(path, sent)
    data = bytearray(path.read_bytes())
    data[ends[0]] ^= 0x04  # the second record's length, 4 bytes off
    path.write_bytes(bytes(data))
    assert read_back(path) == sent[:1]


# --- the spool --------------------------------------------------------------------------------


async def test_concurrent_appends_share_fsyncs_and_read_back_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = 0
    real = os.fdatasync

    def counted(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    spool = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    sent = [delivery(n) for n in range(200)]
    await asyncio.gather(*(spool.append(d) for d in sent))
    assert spool.records == 200
    assert syncs < 50, f"{syncs} fsyncs for 200 appends: no group commit"
    held, records = spool.next_batch(1000) or (None, [])
    assert held is not None
    assert [segment.decode(r.payload) for r in records] == sent
    await spool.close()  # leaves the records on disk
    assert read_back(held.path) == sent


async def test_a_full_spool_refuses_and_keeps_nothing(tmp_path: Path) -> None:
    spool = await asyncio.to_thread(Spool.open, tmp_path, "p", 2000)
    await spool.append(delivery(1, size=800))
    with pytest.raises(SpoolFull):
        await spool.append(delivery(2, size=800))
    assert spool.records == 1
    assert spool.bytes <= 2000
    await spool.close()


async def test_a_failing_disk_refuses_then_recovers_on_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    await spool.append(delivery(1))

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(SpoolFailed, match="Input/output error"):
        await spool.append(delivery(2))
    assert not spool.has_room
    monkeypatch.undo()
    await spool.append(delivery(3))
    assert spool.has_room
    segments = sorted(spool.home.path.glob("*.seg"))
    assert len(segments) == 2
    assert [d.body for d in read_back(segments[0])] == [delivery(1).body]
    assert [d.body for d in read_back(segments[1])] == [delivery(3).body]
    await spool.close()


async def test_forwarded_segments_are_deleted_and_an_empty_slot_removed(tmp_path: Path) -> None:
    spool = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    await spool.append(delivery(1))
    found = spool.next_batch(10)
    assert found is not None
    held, records = found
    spool.confirmed(held, records, sent=0)  # not confirmed: kept
    spool.tidy()
    assert held.path.exists()
    spool.confirmed(held, records, sent=1)
    spool.tidy()
    assert not held.path.exists()
    assert spool.records == 0
    await spool.close()
    assert not (tmp_path / "p").exists()


async def test_a_killed_process_leaves_its_slot_to_the_next_one(tmp_path: Path) -> None:
    first = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    sent = [delivery(n) for n in range(5)]
    for one in sent:
        await first.append(one)
    found = first.next_batch(2)
    assert found is not None
    first.confirmed(found[0], found[1], sent=2)
    first.tidy()  # the cursor says two were confirmed
    os.close(first.home.lock_fd)  # what the kernel does for a SIGKILLed process

    second = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    assert second.home.path == first.home.path
    assert second.records == 3
    found = second.next_batch(10)
    assert found is not None
    assert [segment.decode(r.payload) for r in found[1]] == sent[2:]
    await second.close()


async def test_each_process_has_its_own_slot_and_takes_over_unlocked_ones(
    tmp_path: Path,
) -> None:
    first = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    second = await asyncio.to_thread(Spool.open, tmp_path, "p", 1 << 30)
    assert first.home.path != second.home.path
    await second.append(delivery(1))
    assert first.claim_orphans() == []  # held by a live owner
    await second.close()  # not empty: the slot stays, unlocked
    orphans = first.claim_orphans()
    assert [o.path for o in orphans] == [second.home.path]
    first.adopt(orphans)
    assert first.records == 1
    await first.close()


def test_a_slot_held_by_another_process_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "slot-0"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from services.ingress import slot; "
            "s = slot.claim(Path(sys.argv[1])); print(s is not None, flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == b"True"
            assert slot.claim(path) is None
        finally:
            holder.kill()
    claimed = slot.claim(path)  # its owner died: the kernel released the lock
    assert claimed is not None
    claimed.release()


def test_an_unusable_spool_directory_is_a_settings_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(SettingsError, match="DESKLEDGER_SPOOL_DIR: cannot write to"):
        Spool.open(blocker / "spool", "p", 1 << 30)
