"""Mid-stream failover (opt-in per model: ``routing.mid_stream_failover``).

When a text stream fails after the commit point, instead of ending it with an error event the
answer is continued on another deployment: the text already sent becomes an assistant turn (a
prefill for Anthropic-format upstreams; an explicit "continue" turn for OpenAI-format ones), and
the new deployment's stream is spliced onto the caller's stream — its opening events dropped, its
block indexes and ids made continuous — so the caller's SDK sees one well-formed stream.

Only plain text answers fail over; a stream carrying tool calls or thinking ends with the error
event as usual (a half-sent tool call cannot be continued faithfully).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelyard.providers.base import JSONDict, SSEEvent, WireProtocol
from modelyard.providers.sse import SSEDecoder

CONTINUE_INSTRUCTION = (
    "Your previous answer was interrupted. Continue it exactly where it stopped, without repeating "
    "anything and without any preamble."
)


class ContinuationTracker:
    """Watches the caller-protocol bytes going out: the text so far, and what a splice needs."""

    def __init__(self, client: WireProtocol) -> None:
        self.client = client
        self.text: list[str] = []
        self.eligible = True
        """False once anything but text (a tool call, thinking) was sent."""
        self.openai_id: str | None = None
        self.anthropic_index = -1
        """Index of the last content block started (Anthropic)."""
        self.block_open = False
        self._decoder = SSEDecoder()

    def observe(self, chunk: bytes) -> None:
        if not self.eligible:
            return
        for event in self._decoder.feed(chunk):
            self._observe_event(event)

    def _observe_event(self, event: SSEEvent) -> None:
        if event.data == b"[DONE]":
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if self.client is WireProtocol.OPENAI:
            self.openai_id = self.openai_id or data.get("id")
            for choice in data.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("tool_calls") or delta.get("reasoning_content"):
                    self.eligible = False
                if isinstance(delta.get("content"), str):
                    self.text.append(delta["content"])
            return
        kind = data.get("type")
        if kind == "content_block_start":
            self.anthropic_index = int(data.get("index", self.anthropic_index + 1))
            self.block_open = True
            if (data.get("content_block") or {}).get("type") != "text":
                self.eligible = False
        elif kind == "content_block_stop":
            self.block_open = False
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.text.append(str(delta.get("text", "")))

    @property
    def partial(self) -> str:
        return "".join(self.text)


def continuation_body(client: WireProtocol, body: JSONDict, partial: str) -> JSONDict:
    """The original request, asking the next deployment to carry on from ``partial``."""
    messages = list(body.get("messages") or [])
    out = dict(body)
    if client is WireProtocol.ANTHROPIC:
        if partial.strip():
            messages.append({"role": "assistant", "content": partial.rstrip()})  # prefill: it continues
    elif partial:
        messages.append({"role": "assistant", "content": partial})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    out["messages"] = messages
    return out


async def splice(
    client: WireProtocol, tracker: ContinuationTracker, first: bytes, rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """The continuation's events, rewritten to continue the caller's stream seamlessly."""
    decoder = SSEDecoder()
    index_shift = tracker.anthropic_index if tracker.block_open else tracker.anthropic_index + 1
    skipped_block_start = not tracker.block_open

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    async for chunk in chunks():
        for event in decoder.feed(chunk):
            if event.data == b"[DONE]":
                yield event.encode()
                continue
            try:
                data: Any = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                yield event.encode()
                continue
            if client is WireProtocol.OPENAI:
                choices = data.get("choices") or []
                if (
                    choices
                    and (choices[0].get("delta") or {}).get("role")
                    and not (choices[0].get("delta") or {}).get("content")
                ):
                    continue  # the opening role chunk: the caller already had one
                if tracker.openai_id:
                    data["id"] = tracker.openai_id
                yield SSEEvent(orjson.dumps(data)).encode()
                continue
            kind = data.get("type")
            if kind in ("message_start", "ping"):
                continue
            if "index" in data:
                if kind == "content_block_start" and data["index"] == 0 and not skipped_block_start:
                    skipped_block_start = True  # continues the block the caller still has open
                    continue
                data["index"] = int(data["index"]) + max(0, index_shift)
            yield SSEEvent(orjson.dumps(data), event.event).encode()
