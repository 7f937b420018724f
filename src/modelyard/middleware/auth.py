"""The master key check: constant-time, in the caller's error shape, before any body is read."""

from __future__ import annotations

import hashlib
import hmac

from modelyard.errors import AuthenticationError


class MasterKeyAuth:
    """Accepts ``Authorization: Bearer <key>``, ``x-api-key`` or ``api-key``; nothing when no key is set."""

    def __init__(self, master_key: str | None) -> None:
        # Compare digests, so neither content nor length of the key leaks through timing.
        self._digest = hashlib.sha256(master_key.encode()).digest() if master_key else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def check(self, headers: dict[str, str]) -> None:
        if self._digest is None:
            return
        presented = self.presented_key(headers)
        if presented is None:
            raise AuthenticationError(
                "missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        candidate = hashlib.sha256(presented.encode()).digest()
        if not hmac.compare_digest(candidate, self._digest):
            raise AuthenticationError(
                "invalid API key (it is not the gateway's key; check MODELYARD_MASTER_KEY)"
            )

    @staticmethod
    def presented_key(headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        return headers.get("x-api-key") or headers.get("api-key") or None
