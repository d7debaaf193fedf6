"""Content types of webhook bodies: the one parser of a `Content-Type` header.

The decoder, the form parser and the ingress's redaction all read the media type and its
parameters (`boundary`, `charset`) through `media_type`. The header comes from the sender and
is read before authentication, so what reaches the `email` package's parameter parser (quadratic
in the number of `;`) is bounded first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

from shared.errors import DecodeError

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
FORMS = frozenset({URLENCODED, MULTIPART})
# A real header value has one or two parameters; within this the parser costs microseconds.
MAX_HEADER_PARAMS = 32


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
