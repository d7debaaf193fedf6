"""The ingress's durable local spool: webhooks the broker could not confirm, kept on disk.

`append` returns only once the record is on disk (written and `fdatasync`ed), so a 200 after it
is as durable as the disk. Appends are group-committed: while one batch is being written and
synced in a thread, the requests that arrive meanwhile wait together for the next one, so a
burst costs one sync per batch, not one per webhook. The bytes are reserved when a request asks,
so the spool never grows past `DESKLEDGER_SPOOL_MAX_BYTES`: beyond it `SpoolFull`, and a failing
disk is `SpoolFailed`; both are 503, never a 200.

Records go to segment files (`segment`) in this process's own slot (`slot`); the forwarder reads
them back in order (`next_batch`), reports what the broker confirmed (`confirmed`), and a
segment is deleted once every record in it was confirmed (`tidy`). Segments a previous process
left, in this slot or in any unlocked one (`adopt`), are forwarded the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.ingress import segment, slot
from services.ingress.slot import Segment, Slot
from shared import envelope
from shared.errors import DeskLedgerError, SettingsError

log = structlog.get_logger()

# A segment is closed and a new one begun past this size; drained segments are deleted whole.
SEGMENT_BYTES = 8 * 1024 * 1024
MAX_SLOTS = 1024
# /readyz says "room" while at least this much is free: a few webhooks more, not just one byte.
ROOM_BYTES = 64 * 1024


class SpoolRefused(DeskLedgerError):
    """The spool did not take the webhook; nothing is promised."""


class SpoolFull(SpoolRefused):
    """The spool holds DESKLEDGER_SPOOL_MAX_BYTES already."""


class SpoolFailed(SpoolRefused):
    """Writing or syncing the spool failed (the disk is failing or full)."""


@dataclass
class _Waiting:
    frame: bytes
    received_at: float
    done: asyncio.Future[None]


def spool_root(spool_dir: Path, amqp_prefix: str) -> Path:
    """Where one deployment's slots live: records are forwarded to the exchange of `prefix`."""
    return spool_dir / amqp_prefix


def check_writable(spool_dir: Path) -> None:
    """Raise `SettingsError` (exit 2) when the spool directory cannot be created or written."""
    probe = spool_dir / f".probe-{os.getpid()}"
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"DESKLEDGER_SPOOL_DIR: cannot write to {spool_dir.absolute()}"
            f" ({type(exc).__name__}: {exc.strerror or exc}); give the ingress a writable"
            " directory, or set it to `none` to run without a spool"
        ) from None


class Spool:
    def __init__(self, root: Path, max_bytes: int, home: Slot) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.home = home
        self.slots = [home]
        self.healthy = True  # the last write succeeded
        self.appended = asyncio.Event()  # set by every batch written; the forwarder clears it
        self._stored = sum(s.disk_bytes for s in home.segments)
        self._reserved = 0
        self._active: Segment | None = None
        self._fd: int | None = None
        self._waiting: list[_Waiting] = []
        self._flushing: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, spool_dir: Path, amqp_prefix: str, max_bytes: int) -> Spool:
        """Claim a slot of our own and recover what it holds (blocking: run it in a thread)."""
        check_writable(spool_dir)
        root = spool_root(spool_dir, amqp_prefix)
        try:
            home = _claim_home(root)
        except OSError as exc:
            raise SettingsError(
                f"DESKLEDGER_SPOOL_DIR: cannot use {root.absolute()} ({type(exc).__name__}: {exc})"
            ) from None
        log.info("spool_opened", slot=str(home.path), max_bytes=max_bytes)
        return cls(root, max_bytes, home)

    # --- figures ---------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return self._stored + self._reserved

    @property
    def records(self) -> int:
        return sum(s.records for s in self._segments())

    def oldest_age(self) -> float:
        """Seconds since the oldest record not forwarded yet was received (0: none)."""
        oldest = [s.oldest for s in self._segments() if s.records and s.oldest is not None]
        return max(0.0, time.time() - min(oldest)) if oldest else 0.0

    @property
    def has_room(self) -> bool:
        return self.healthy and self.bytes + ROOM_BYTES <= self.max_bytes

    def _segments(self) -> list[Segment]:
        return [s for held in self.slots for s in held.segments]

    # --- appending -------------------------------------------------------------------------

    async def append(self, delivery: envelope.Delivery) -> None:
        """Return once `delivery` is on disk; `SpoolFull` or `SpoolFailed` otherwise."""
        frame = segment.encode(delivery)
        if self.bytes + len(frame) > self.max_bytes:
            raise SpoolFull(f"the spool holds {self.bytes} of {self.max_bytes} bytes")
        self._reserved += len(frame)
        done = asyncio.get_running_loop().create_future()
        waiting = _Waiting(frame, delivery.received_at.timestamp(), done)
        self._waiting.append(waiting)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_all())
        # Shielded: a request that goes away must not cancel the batch it shares with others.
        await asyncio.shield(waiting.done)

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._flush(batch)
        finally:
            self._flushing = None

    async def _flush(self, batch: list[_Waiting]) -> None:
        data = b"".join(w.frame for w in batch)
        self._reserved -= len(data)
        try:
            if self._active is None or self._active.size >= SEGMENT_BYTES:
                await self._rotate()
            assert self._active is not None
            assert self._fd is not None
            await asyncio.to_thread(_write, self._fd, data, self._active.size)
        except OSError as exc:
            await self._failed(batch, exc)
            return
        self.healthy = True
        active = self._active
        active.size += len(data)
        active.disk_bytes += len(data)
        self._stored += len(data)
        active.records += len(batch)
        if active.oldest is None or active.records == len(batch):
            active.oldest = min(w.received_at for w in batch)
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_result(None)
        self.appended.set()

    async def _rotate(self) -> None:
        self._seal()
        number = self.home.next_number
        path = self.home.path / segment.segment_name(number)
        self._fd = await asyncio.to_thread(_create, path)
        start = len(segment.MAGIC)
        self._active = Segment(path, number, start, start, start, sealed=False)
        self.home.segments.append(self._active)
        self._stored += start

    def _seal(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if self._active is not None:
            self._active.sealed = True
        self._fd, self._active = None, None

    async def _failed(self, batch: list[_Waiting], exc: OSError) -> None:
        """Nothing of `batch` is promised; later appends go to a fresh segment."""
        self.healthy = False
        reason = f"{type(exc).__name__}: {exc}"
        log.error("spool_write_failed", error=reason, records=len(batch))
        if self._fd is not None and self._active is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._active.size)
        self._seal()
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_exception(SpoolFailed(f"the spool could not write: {reason}"))

    # --- forwarding ------------------------------------------------------------------------

    def next_batch(self, limit: int) -> tuple[Segment, list[segment.Record]] | None:
        """Up to `limit` records not forwarded yet, all of one segment, oldest first
        (blocking: run it in a thread)."""
        for held in self.slots:
            for found in list(held.segments):
                if found.drained:
                    continue
                reader = segment.records(found.path, found.forwarded_to, found.size)
                with contextlib.closing(reader):
                    batch = list(itertools.islice(reader, limit))
                if batch:
                    return found, batch
                # Unreadable from here (logged by the reader): nothing more can be sent.
                found.forwarded_to, found.records = found.size, 0
        return None

    def confirmed(self, found: Segment, records: list[segment.Record], sent: int) -> None:
        """The first `sent` of `records` (a batch of `found`) were confirmed by the broker."""
        if not records:
            return
        if sent:
            found.forwarded_to = records[sent - 1].end
            found.records = max(0, found.records - sent)
            found.oldest = segment.received_at(records[sent - 1].payload)
            owner = self._owner(found)
            owner.forwarded += sent
        if sent < len(records):
            self._owner(found).failed += len(records) - sent

    def tidy(self) -> None:
        """Delete every segment whose records were all confirmed; give up drained slots."""
        if self._active is not None and self._active.drained and self._flushing is None:
            self._seal()  # nothing new since: the next append starts a new segment
        for held in self.slots:
            for found in [s for s in held.segments if s.sealed and s.drained]:
                with contextlib.suppress(FileNotFoundError):
                    found.path.unlink()
                held.segments.remove(found)
                self._stored -= found.disk_bytes
            with contextlib.suppress(OSError):
                held.save_cursor()
        for held in [s for s in self.slots if s is not self.home and not s.segments]:
            self.slots.remove(held)
            held.release()
            log.info("spool_slot_drained", slot=str(held.path))

    def claim_orphans(self) -> list[Slot]:
        """Claim and read every unlocked slot another process left (blocking: run it in a
        thread, then give the result to `adopt`)."""
        held = {s.path for s in self.slots}
        orphans = []
        for path in slot.slot_paths(self.root):
            orphan = None if path in held else slot.claim(path)
            if orphan is not None:
                orphan.recover()
                orphans.append(orphan)
        return orphans

    def adopt(self, orphans: list[Slot]) -> None:
        """Forward what `orphans` hold too."""
        for orphan in orphans:
            self.slots.append(orphan)
            self._stored += sum(s.disk_bytes for s in orphan.segments)
            records = sum(s.records for s in orphan.segments)
            log.info("spool_slot_adopted", slot=str(orphan.path), records=records)

    def _owner(self, found: Segment) -> Slot:
        return next(s for s in self.slots if found in s.segments)

    async def close(self) -> None:
        """Finish the batch being written, then give up every slot (removed if empty)."""
        while self._flushing is not None:
            await self._flushing
        self._seal()
        self.tidy()
        for held in self.slots:
            held.release()
        self.slots = []


def _claim_home(root: Path) -> Slot:
    """The first slot no live process holds, with what it holds read back."""
    for number in range(MAX_SLOTS):
        home = slot.claim(root / f"{slot.SLOT_PREFIX}{number}")
        if home is not None:
            home.recover()
            return home
    raise SettingsError(f"DESKLEDGER_SPOOL_DIR: all {MAX_SLOTS} slots of {root} are locked")


def _create(path: Path) -> int:
    """A new segment file with its magic, durable with its directory entry."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, segment.MAGIC)
        os.fsync(fd)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(fd: int, data: bytes, offset: int) -> None:
    """Write `data` at `offset` and sync it (fdatasync also syncs the file's new size)."""
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)
    os.fdatasync(fd)
