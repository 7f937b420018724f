"""Readers for the SSE streams a client receives, and the event grammars each protocol promises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    """One received server-sent event: its name (``None`` when unnamed) and raw data."""

    name: str | None
    data: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)


def parse_sse(stream: bytes) -> list[Event]:
    """Strict parse of a whole stream: every event ends with a blank line, nothing else allowed."""
    assert stream.endswith(b"\n\n") or not stream, (
        f"the stream does not end with a blank line: {stream[-80:]!r}"
    )
    events = []
    for block in stream.split(b"\n\n")[:-1]:
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            field, _, value = line.partition(b": ")
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append(Event(name, b"\n".join(data)))
    return events


# Anthropic: message_start, ping*, then blocks, then message_delta, message_stop; pings may come
# anywhere after message_start. One letter per event so the order can be checked by a regex.
_ANTHROPIC_LETTERS = {
    "message_start": "M",
    "ping": "p",
    "content_block_start": "s",
    "content_block_delta": "d",
    "content_block_stop": "e",
    "message_delta": "D",
    "message_stop": "S",
    "error": "E",
}
_ANTHROPIC_GRAMMAR = re.compile(r"Mp*(sp*(dp*)*ep*)*Dp*S")


def check_anthropic_stream(events: list[Event]) -> None:
    """Assert the exact event order of Anthropic's Messages stream, with names matching ``type``."""
    letters = ""
    for event in events:
        assert event.name in _ANTHROPIC_LETTERS, f"unknown Anthropic event {event.name!r}"
        assert event.json["type"] == event.name, f"event {event.name} carries type {event.json['type']}"
        letters += _ANTHROPIC_LETTERS[event.name]
    assert _ANTHROPIC_GRAMMAR.fullmatch(letters), f"Anthropic event order broken: {letters}"
    open_index: int | None = None
    next_index = 0
    for event in events:
        payload = event.json
        if event.name == "content_block_start":
            assert payload["index"] == next_index, "content blocks are numbered from 0 in order"
            open_index = next_index
            next_index += 1
        elif event.name in ("content_block_delta", "content_block_stop"):
            assert payload["index"] == open_index, (
                f"{event.name} for block {payload['index']}, open {open_index}"
            )


def check_openai_stream(events: list[Event], *, include_usage: bool) -> None:
    """Assert OpenAI's chunk sequence: unnamed events, one finish_reason, usage chunk, ``[DONE]``."""
    assert all(e.name is None for e in events), "OpenAI streams have no event names"
    assert events and events[-1].data == b"[DONE]", "an OpenAI stream ends with data: [DONE]"
    chunks = [e.json for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1, "every chunk carries the same id"
    finishes = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1, "exactly one chunk carries a finish_reason"
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", "the first delta carries the role"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"], "the last chunk carries the usage"
        assert all(c["usage"] is None for c in chunks[:-1]), "other chunks have usage: null"
        assert finishes[0] == len(chunks) - 2
    else:
        assert finishes[0] == len(chunks) - 1
        assert all(c.get("usage") is None for c in chunks)


def openai_text(events: list[Event], field: str = "content") -> str:
    """The concatenated ``delta[field]`` of an OpenAI stream."""
    out = ""
    for event in events:
        if event.data == b"[DONE]":
            continue
        for choice in event.json.get("choices") or []:
            out += choice["delta"].get(field) or ""
    return out


def openai_tool_calls(events: list[Event]) -> dict[int, dict[str, str]]:
    """Tool calls reassembled from streamed deltas: index -> {id, name, arguments}."""
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        if event.data == b"[DONE]":
            continue
        for choice in event.json.get("choices") or []:
            for call in choice["delta"].get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                if call.get("id"):
                    assert not entry["id"], "a tool call id is sent once"
                    entry["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    entry["name"] = function["name"]
                entry["arguments"] += function.get("arguments") or ""
    return calls


def anthropic_blocks(events: list[Event]) -> list[dict[str, Any]]:
    """Content blocks reassembled from an Anthropic stream (tool input as the raw JSON text)."""
    blocks: list[dict[str, Any]] = []
    for event in events:
        payload = event.json
        if event.name == "content_block_start":
            block = dict(payload["content_block"])
            if block["type"] == "tool_use":
                block["partial_json"] = ""
            blocks.append(block)
        elif event.name == "content_block_delta":
            block, delta = blocks[payload["index"]], payload["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] += delta["signature"]
            elif kind == "input_json_delta":
                block["partial_json"] += delta["partial_json"]
    return blocks
