"""Content types of webhook bodies: the one parser of a `Content-Type` header.

The decoder, the form parser and the ingress's redaction all read the media type and its
parameters (`boundary`, `charset`) through `media_type`. The header comes from the sender and
is read before authentication, so what reaches the `email` package's parameter parser (quadratic
in the number of `;`) is bounded first.

A declared `charset` (UseDesk sends `windows-1251` when "Send to UTF-8" is off) names the codec
the body is read with (`MediaType.codec`). The name is the sender's, read before
authentication, and Python's codec registry caches every name it is asked for, unknown ones
included: so a name is looked up only once it matches one of the codecs and aliases Python
ships, compared without case or punctuation ("Windows-1251", "windows_1251", "CP1251").
"""

from __future__ import annotations

import codecs
import encodings
import functools
import pkgutil
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from encodings.aliases import aliases

from shared.errors import DecodeError

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
FORMS = frozenset({URLENCODED, MULTIPART})
# A real header value has one or two parameters; within this the parser costs microseconds.
MAX_HEADER_PARAMS = 32
# Codecs Python ships that are no charset a body could be written in.
_NOT_CHARSETS = frozenset(
    {"charmap", "idna", "mbcs", "oem", "punycode", "raw_unicode_escape", "undefined"}
    | {"unicode_escape"}
)
# Read as UTF-8: ASCII is a subset, and a mislabelled UTF-8 body had better be read than lost.
_UTF8 = frozenset({"utf-8", "ascii"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class MediaType:
    type: str  # lower case, without parameters: "application/json"
    boundary: str | None = None
    charset: str | None = None

    @property
    def is_json(self) -> bool:
        return self.type == JSON or self.type.endswith("+json")

    @property
    def is_form(self) -> bool:
        return self.type in FORMS

    def codec(self) -> str | None:
        """Python's codec for the declared charset, None for UTF-8 (or none declared); a
        `DecodeError` for a charset Python does not know."""
        return None if self.charset is None else charset_codec(self.charset)


def check_params(value: str, header: str) -> None:
    """Refuse a header value the `email` parser would spend quadratic time on."""
    if value.count(";") > MAX_HEADER_PARAMS:
        raise DecodeError("unknown", "", f"{header} has more than {MAX_HEADER_PARAMS} parameters")


# The same few headers arrive on nearly every request: parse each once.
@functools.lru_cache(maxsize=256)
def media_type(content_type: str) -> MediaType:
    """`Content-Type` as a `MediaType`; a `DecodeError` for one with too many parameters."""
    if ";" not in content_type:
        return MediaType(content_type.strip().lower())
    check_params(content_type, "Content-Type")
    message = Message()
    message["content-type"] = content_type
    return MediaType(
        message.get_content_type(),
        boundary=_param(message, "boundary"),
        charset=_param(message, "charset"),
    )


def _param(message: Message, name: str) -> str | None:
    value = message.get_param(name)
    return None if value is None else collapse_rfc2231_value(value)


@functools.lru_cache(maxsize=64)
def charset_codec(charset: str) -> str | None:
    """The codec name of `charset` ("windows-1251" → "cp1251"), None for UTF-8 and ASCII."""
    info = _codec_info(_codec_modules().get(_NOT_ALNUM.sub("", charset.lower())))
    # The attribute `bytes.decode` itself checks: base64 or rot13 is no text encoding.
    if info is None or not getattr(info, "_is_text_encoding", True):
        shown = charset if len(charset) <= 40 else charset[:37] + "..."
        raise DecodeError("unknown", "", f"unknown charset {shown!r}")
    return None if info.name in _UTF8 else info.name


def _codec_info(module: str | None) -> codecs.CodecInfo | None:
    try:
        return None if module is None else codecs.lookup(module)
    except LookupError:
        return None


@functools.cache
def _codec_modules() -> dict[str, str]:
    """Every codec module and alias of the standard library, by its name in lower-case letters
    and digits: "windows1251" → "cp1251", "cp1251" → "cp1251"."""
    modules = {module.name for module in pkgutil.iter_modules(encodings.__path__)}
    modules = (modules | set(aliases.values())) - _NOT_CHARSETS - {"aliases"}
    names = {_NOT_ALNUM.sub("", module): module for module in modules}
    for alias, module in aliases.items():
        if module in modules:
            names.setdefault(_NOT_ALNUM.sub("", alias), module)
    return names


@functools.lru_cache(maxsize=64)
def edits_like_ascii(codec: str | None) -> bool:
    """Whether a body in `codec` can be edited byte by byte as if it were ASCII: every ASCII
    byte stands for that character, and no other byte ever takes part in one. True of UTF-8
    (None) and of the single-byte charsets (windows-1251, koi8-r); false of UTF-16, UTF-7,
    Shift JIS or ISO-2022, where a byte search for `secret` can miss what the parser reads."""
    if codec is None:
        return True
    every_byte = bytes(range(256)).decode(codec, "replace")
    return (
        len(every_byte) == 256
        and every_byte[:128] == bytes(range(128)).decode("ascii")
        and all(ord(char) >= 128 for char in every_byte[128:])
    )


def text(body: bytes, codec: str, what: str) -> str:
    """`body` read in `codec`; a `DecodeError` naming `what` when it is not valid there."""
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        raise DecodeError("unknown", "", f"{what} is not valid {charset_name(codec)}") from exc


def charset_name(codec: str) -> str:
    return "UTF-8" if codec == "utf-8" else codec
