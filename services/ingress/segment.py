"""The spool's file format: segment files of framed records, each record one broker message.

A segment starts with `MAGIC` and holds records back to back:

    length  u32 little-endian   bytes of the payload (1 .. MAX_RECORD_BYTES)
    crc     u32 little-endian   zlib.crc32 of the length field and the payload
    payload                     `SpooledMessage`, msgpack

The checksum covers the length too, so a length torn or flipped by a crash is not believed.
Reading stops at the first record that does not check out: if nothing follows it, it is a torn
tail (a crash while appending, never acknowledged: its request got no 200); otherwise the segment
is damaged from there on. Either way what follows is skipped and logged, never misread: a frame
is only trusted when its whole length and checksum agree. The writer never appends to a segment
it did not create in this process, so a torn tail stays the last thing in its file.

The payload is the exact message the broker would have received: the properties and body that
`shared.envelope.properties` gives, read back with `shared.envelope.from_message`, so a forwarded
record carries the same `delivery_id` and headers as a direct publish would have.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import msgspec
import structlog

from shared import envelope

log = structlog.get_logger()

MAGIC = b"DLSPOOL1"
HEADER = struct.Struct("<II")
LENGTH_BYTES = 4
# A webhook body is at most DESKLEDGER_MAX_BODY_BYTES (64 MiB at most) plus its properties.
MAX_RECORD_BYTES = 80 * 1024 * 1024
SUFFIX = ".seg"


class SpooledMessage(msgspec.Struct, array_like=True, frozen=True):
    """One record's payload; it reads like a consumed message (`envelope.IncomingMessage`)."""

    message_id: str | None
    content_type: str | None
    timestamp: datetime | None
    headers: dict[str, str]
    body: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpooledMessage)


def encode(delivery: envelope.Delivery) -> bytes:
    """`delivery` as one framed record, ready to append."""
    properties = envelope.properties(delivery)
    payload = _encoder.encode(
        SpooledMessage(
            message_id=properties.message_id,
            content_type=properties.content_type,
            timestamp=properties.timestamp,
            headers={k: str(v) for k, v in (properties.headers or {}).items()},
            body=delivery.body,
        )
    )
    crc = zlib.crc32(payload, zlib.crc32(len(payload).to_bytes(LENGTH_BYTES, "little")))
    return HEADER.pack(len(payload), crc) + payload


def decode(payload: bytes) -> envelope.Delivery:
    """The delivery a record's payload holds (raises `msgspec.DecodeError` when it is none)."""
    return envelope.from_message(_decoder.decode(payload))


def received_at(payload: bytes) -> float | None:
    """The receipt time (epoch seconds) of a record's webhook; None if it does not decode."""
    try:
        return decode(payload).received_at.timestamp()
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # where its frame starts in the segment
    end: int  # where the next one starts
    payload: bytes


def segment_name(number: int) -> str:
    return f"{number:016d}{SUFFIX}"


def segment_number(path: Path) -> int | None:
    """The number in a segment's file name; None for other files."""
    if path.suffix != SUFFIX or not path.stem.isdigit():
        return None
    return int(path.stem)


def records(
    path: Path, start: int = 0, end: int | None = None, *, quiet: bool = False
) -> Generator[Record, None, None]:
    """The sound records of a segment from byte `start` (a record boundary) up to `end`.

    Reads frame by frame; stops at a torn or damaged record and logs it (unless `quiet`). A file
    without the magic has no records.
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size if end is None else end
        magic = file.read(len(MAGIC))
        if magic != MAGIC:
            if magic and not quiet:
                log.error("spool_segment_unreadable", path=str(path), reason="no spool magic")
            return
        offset = max(start, len(MAGIC))
        file.seek(offset)
        while offset < size:
            record = _next(file, offset, size)
            if record is None:
                if not quiet:
                    _skipped(path, file, offset, size)
                return
            yield record
            offset = record.end


def _next(file: BinaryIO, offset: int, size: int) -> Record | None:
    if size - offset < HEADER.size:
        return None
    header = file.read(HEADER.size)
    length, crc = HEADER.unpack(header)
    if not 0 < length <= MAX_RECORD_BYTES or offset + HEADER.size + length > size:
        return None
    payload = file.read(length)
    if len(payload) != length or zlib.crc32(payload, zlib.crc32(header[:LENGTH_BYTES])) != crc:
        return None
    return Record(offset, offset + HEADER.size + length, payload)


def _skipped(path: Path, file: BinaryIO, offset: int, size: int) -> None:
    """Log what `records` could not read: a torn tail, or damage with data after it."""
    file.seek(offset)
    rest = file.read(size - offset)
    length = HEADER.unpack_from(rest)[0] if len(rest) >= HEADER.size else None
    # Torn: the last record was being written (or the file grew without its data, zeros).
    torn = length is None or offset + HEADER.size + length >= size or not rest.strip(b"\0")
    log.warning(
        "spool_torn_tail_skipped" if torn else "spool_damaged_records_skipped",
        path=str(path),
        offset=offset,
        bytes_skipped=size - offset,
    )
