"""One directory of the spool, owned by one ingress process at a time.

`<DESKLEDGER_SPOOL_DIR>/<DESKLEDGER_AMQP_PREFIX>/slot-N/` holds segment files, a `lock` file and
a `cursor.json`. A process owns a slot while it holds an exclusive `flock` on its lock file: the
kernel releases it when the process dies, however it dies (SIGKILL too), so a slot whose lock can
be taken belongs to nobody, and a live process never loses its own. Each process writes into one
slot of its own (with `--processes N`, N slots) and also takes over any other slot it finds
unlocked, to forward what a previous process left there.

A slot emptied by its owner is removed (lock file last). Another process may have opened that
lock file just before: after taking a lock, `claim` checks that the path still names the file it
locked, so nobody ever owns a removed slot.

`cursor.json` says how far the records were confirmed by the broker (segment number and offset,
written after the confirms, not fsynced: a stale cursor only means records forwarded again, which
the worker recognises by their delivery id), and the forwarded/failed counts of its last owner,
for `deskledger status`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from services.ingress import segment

log = structlog.get_logger()

LOCK = "lock"
CURSOR = "cursor.json"
SLOT_PREFIX = "slot-"


@dataclass
class Segment:
    """A segment file: what is durable in it, and how far it was forwarded."""

    path: Path
    number: int
    size: int  # bytes of sound records (the end of the last one): what may be read
    disk_bytes: int  # bytes the file takes (a torn tail included), counted against the cap
    forwarded_to: int  # every record before this offset was confirmed by the broker
    records: int = 0  # records not forwarded yet
    oldest: float | None = None  # receipt time (epoch) of its oldest record not forwarded yet
    sealed: bool = True  # nothing will be appended any more

    @property
    def drained(self) -> bool:
        return self.forwarded_to >= self.size


@dataclass
class Slot:
    path: Path
    lock_fd: int
    segments: list[Segment] = field(default_factory=list)
    forwarded: int = 0
    failed: int = 0
    _saved: tuple[int, int, int, int] | None = None  # what the cursor file says now

    @property
    def next_number(self) -> int:
        return max((s.number for s in self.segments), default=0) + 1

    def recover(self) -> None:
        """Read what a previous owner left: every segment checked record by record."""
        cursor = read_cursor(self.path)
        for path in sorted(self.path.glob(f"*{segment.SUFFIX}")):
            number = segment.segment_number(path)
            if number is not None:
                self.segments.append(_recovered(path, number, cursor))
        self.segments.sort(key=lambda s: s.number)
        if self.segments:
            log.info(
                "spool_slot_recovered",
                slot=str(self.path),
                segments=len(self.segments),
                records=sum(s.records for s in self.segments),
            )

    def save_cursor(self) -> None:
        """Where forwarding stands; atomic by rename, not fsynced (see the module doc)."""
        head = next((s for s in self.segments if not s.drained), None)
        number, offset = (head.number, head.forwarded_to) if head else (self.next_number, 0)
        if self._saved == (number, offset, self.forwarded, self.failed):
            return  # nothing new: an idle spool writes nothing
        self._saved = (number, offset, self.forwarded, self.failed)
        cursor = {
            "segment": number,
            "offset": offset,
            "forwarded": self.forwarded,
            "failed": self.failed,
            "pid": os.getpid(),
            "updated_at": time.time(),
        }
        temporary = self.path / f".{CURSOR}.{os.getpid()}"
        temporary.write_text(json.dumps(cursor), encoding="utf-8")
        os.replace(temporary, self.path / CURSOR)

    def release(self) -> None:
        """Give the slot up; remove it when it holds nothing."""
        try:
            if self.segments:
                self.save_cursor()
            else:
                _remove(self.path)
        finally:
            os.close(self.lock_fd)


def claim(path: Path) -> Slot | None:
    """The slot at `path` if no live process holds it (created when missing), else None."""
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # removed by its last owner after we opened it
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Slot(path, fd)


def slot_paths(root: Path) -> list[Path]:
    """The slot directories under `root`, in order."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(SLOT_PREFIX) and p.is_dir()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def read_cursor(path: Path) -> dict[str, Any]:
    """A slot's cursor; empty when missing or unreadable (forwarding then starts over)."""
    try:
        loaded = json.loads((path / CURSOR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def figures(root: Path) -> dict[str, Any]:
    """What `deskledger status` shows of one deployment's spool, read from its files without
    taking any lock (a slot's owner may be writing and deleting meanwhile): bytes, records not
    yet forwarded, the oldest one's age, and what the owners last wrote in their cursors."""
    total: dict[str, Any] = {"dir": str(root), "slots": 0, "bytes": 0, "records": 0}
    total |= {"forwarded": 0, "failed": 0, "oldest_record_age_s": None}
    oldest: list[float] = []
    for path in slot_paths(root):
        cursor = read_cursor(path)
        total["slots"] += 1
        total["forwarded"] += int(cursor.get("forwarded", 0))
        total["failed"] += int(cursor.get("failed", 0))
        for file in sorted(path.glob(f"*{segment.SUFFIX}")):
            number = segment.segment_number(file)
            if number is None:
                continue
            with contextlib.suppress(FileNotFoundError):  # forwarded and deleted meanwhile
                found = _recovered(file, number, cursor, quiet=True)
                total["bytes"] += found.disk_bytes
                total["records"] += found.records
                oldest += [found.oldest] if found.records and found.oldest else []
    if oldest:
        total["oldest_record_age_s"] = round(max(0.0, time.time() - min(oldest)), 1)
    return total


def _recovered(path: Path, number: int, cursor: dict[str, Any], *, quiet: bool = False) -> Segment:
    start = len(segment.MAGIC)
    found = Segment(path, number, start, path.stat().st_size, start)
    # The cursor is believed only where it falls on a record boundary this scan finds.
    resume = cursor.get("offset") if cursor.get("segment") == number else None
    first: bytes | None = None
    for record in segment.records(path, quiet=quiet):
        found.size = record.end
        if record.end == resume:  # every record up to here was confirmed
            found.forwarded_to, found.records, first = record.end, 0, None
        else:
            found.records += 1
            first = first or record.payload
    if isinstance(cursor.get("segment"), int) and cursor["segment"] > number:
        # Forwarded entirely; only its deletion was lost.
        found.forwarded_to, found.records, first = found.size, 0, None
    if first is not None:
        found.oldest = segment.received_at(first)
    return found


def _remove(path: Path) -> None:
    for name in (CURSOR, LOCK):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
    with contextlib.suppress(OSError):  # the prefix's directory, when no other slot is left
        path.parent.rmdir()
