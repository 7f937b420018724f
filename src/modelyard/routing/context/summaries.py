"""Summaries of older turns, cached per conversation prefix.

A prefix is identified by a chained hash over its messages (and the tenant, so one tenant's
summary is never served to another): ``h_k = blake2b(h_{k-1} + canonical JSON of message k)``.
The next turn of the same conversation shares the prefix, finds its summary under the same hash
and reuses it without calling the model. When the conversation has grown so that the cached
summary plus the newer turns no longer fit, the fold moves forward: the model is given the previous
summary and only the turns since, so each call stays small.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.providers.base import JSONDict

__all__ = ["SummaryCache", "SummaryRequest", "prefix_hashes", "summary_request", "transcript"]

SummaryCall = Callable[[JSONDict], Awaitable[str]]

_INSTRUCTION = (
    "You condense conversations. Write a short summary of the conversation below so that it can "
    "continue without it: keep names, numbers, decisions, open questions and what the user wants. "
    "Write plain sentences, at most {words} words."
)


def prefix_hashes(tenant: str, messages: list[Any]) -> list[str]:
    """Hash of each prefix: element k covers ``messages[:k+1]``."""
    state = hashlib.blake2b(tenant.encode(), digest_size=16).digest()
    out: list[str] = []
    for message in messages:
        state = hashlib.blake2b(
            state + orjson.dumps(message, option=orjson.OPT_SORT_KEYS), digest_size=16
        ).digest()
        out.append(state.hex())
    return out


@dataclass(frozen=True, slots=True)
class CachedSummary:
    text: str
    covers: int
    """How many non-system messages the summary stands for."""


class SummaryCache:
    """Least-recently-used summaries by prefix hash, with hit and call counters."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, CachedSummary] = OrderedDict()
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedSummary | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, summary: CachedSummary) -> None:
        self._entries[key] = summary
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type") == "tool_use":
                parts.append(f"[called {block.get('name')} with {orjson.dumps(block.get('input')).decode()}]")
            elif block.get("type") == "tool_result":
                parts.append("[tool result] " + _text_of(block.get("content")))
    return "\n".join(parts)


def transcript(messages: list[Any]) -> str:
    """Messages of either protocol as ``Role: text`` lines."""
    lines: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user")).capitalize()
        text = _text_of(message.get("content"))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                text += f"\n[called {fn.get('name')} with {fn.get('arguments')}]"
        if text:
            lines.append(f"{role}: {text}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    body: JSONDict
    """An OpenAI chat.completions body for the summarizer model."""


def summary_request(
    model: str, previous: str | None, newer: list[Any], max_tokens: int, max_input_chars: int
) -> SummaryRequest:
    """The summarizer's request: the previous summary (if any) and the turns to fold in. A
    transcript longer than ``max_input_chars`` keeps its end (the latest turns matter most)."""
    text = transcript(newer)
    if previous:
        text = f"Summary so far:\n{previous}\n\nLater conversation:\n{text}"
    if len(text) > max_input_chars:
        text = "[...]\n" + text[len(text) - max_input_chars :]
    words = max(20, int(max_tokens * 0.6))
    return SummaryRequest(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": _INSTRUCTION.format(words=words)},
                {"role": "user", "content": text},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    )
