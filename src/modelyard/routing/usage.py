"""Token usage of one answer, read from native bodies and streams (OpenAI or Anthropic).

Streams are sniffed as they pass, cheaply: only events that can carry usage are parsed. When a
stream ends early (cut, client gone) without a usage report, completion tokens are estimated
from the text relayed (≈ 4 characters a token, at least one per content event) and marked so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.providers.base import SSEEvent, WireProtocol

CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    """Every prompt-cache write (Anthropic), both lifetimes."""
    cache_write_1h: int = 0
    """The part of ``cache_write`` written with the 1-hour lifetime (priced apart)."""
    reported: bool = False
    """True when the upstream reported the numbers; False when estimated."""
    content_events: int = 0
    content_chars: int = 0

    def add_openai(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        details = usage.get("prompt_tokens_details") or {}
        self.cache_read = int(details.get("cached_tokens") or 0)
        self.tokens_in = int(usage.get("prompt_tokens") or 0) - self.cache_read
        self.tokens_out = int(usage.get("completion_tokens") or 0)
        self.reported = True

    def add_anthropic(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:
            self.tokens_in = int(usage.get("input_tokens") or 0)
        if "cache_read_input_tokens" in usage:
            self.cache_read = int(usage.get("cache_read_input_tokens") or 0)
        if "cache_creation_input_tokens" in usage:
            self.cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        split = usage.get("cache_creation")
        if isinstance(split, dict) and "ephemeral_1h_input_tokens" in split:
            self.cache_write_1h = min(int(split.get("ephemeral_1h_input_tokens") or 0), self.cache_write)
        if "output_tokens" in usage:
            self.tokens_out = int(usage.get("output_tokens") or 0)
            self.reported = True

    def from_response(self, protocol: WireProtocol, body: bytes | dict[str, Any]) -> None:
        data = orjson.loads(body) if isinstance(body, bytes) else body
        if not isinstance(data, dict):
            return
        if protocol is WireProtocol.ANTHROPIC:
            self.add_anthropic(data.get("usage"))
        else:
            self.add_openai(data.get("usage"))

    def estimate_if_unreported(self, prompt_tokens_estimate: int) -> None:
        """Fill in numbers for a stream that ended without its usage report."""
        if self.reported:
            return
        if not self.tokens_in:
            self.tokens_in = prompt_tokens_estimate
        self.tokens_out = max(self.tokens_out, self.content_events, -(-self.content_chars // CHARS_PER_TOKEN))


class UsageSniffer:
    """Feed a stream's native events; keeps a :class:`Usage` current."""

    __slots__ = ("protocol", "usage")

    def __init__(self, protocol: WireProtocol, usage: Usage) -> None:
        self.protocol = protocol
        self.usage = usage

    def feed(self, event: SSEEvent) -> None:
        data = event.data
        if self.protocol is WireProtocol.OPENAI:
            if b'"content":"' in data or b'"arguments":"' in data:
                # OpenAI-format servers send about one token per content chunk.
                self.usage.content_events += 1
            if b'"usage":{' in data:
                chunk = orjson.loads(data)
                self.usage.add_openai(chunk.get("usage"))
            return
        kind = event.event
        if kind == "content_block_delta":
            self.usage.content_events += 1
            self.usage.content_chars += max(0, len(data) - 80)  # minus the event's JSON envelope
        elif kind in ("message_start", "message_delta"):
            payload = orjson.loads(data)
            usage = (
                payload.get("usage")
                if kind == "message_delta"
                else (payload.get("message") or {}).get("usage")
            )
            self.usage.add_anthropic(usage)
