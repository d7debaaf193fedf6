"""The webhook's only proof of origin: its `secret` field (UseDesk signs nothing)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


class SecretCheck:
    """Accepts a payload whose `secret` equals one of the configured values.

    Compared in constant time against every value, so neither the match nor which value matched
    shows in the answer time. `allow_any` (development only) accepts any string secret when none
    is configured.
    """

    def __init__(self, secrets: tuple[str, ...], allow_any: bool) -> None:
        self._secrets = tuple(secret.encode("utf-8") for secret in secrets)
        self._allow_any = allow_any and not secrets

    def accepts(self, payload: Mapping[str, object]) -> bool:
        given = payload.get("secret")
        if not isinstance(given, str):
            return False
        if self._allow_any:
            return True
        candidate = given.encode("utf-8", "surrogatepass")
        matched = False
        for secret in self._secrets:
            matched |= hmac.compare_digest(candidate, secret)
        return matched
