"""Redaction of secrets from any text that may reach a log, an error or a trace."""

from __future__ import annotations

import re


class Redactor:
    """Masks API-key-shaped strings and any known secret value."""

    _PATTERN = re.compile(
        r"(sk-ant-[A-Za-z0-9_\-]{8,}|sk-[A-Za-z0-9_\-]{8,}|myd_[A-Za-z0-9]{8,}|"
        r"(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|AKIA[0-9A-Z]{16})"
    )

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets = sorted({s for s in (secrets or []) if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return self._PATTERN.sub("[REDACTED]", text)
