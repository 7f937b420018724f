"""Streaming: OpenAI ``chat.completion.chunk`` events -> Anthropic Messages stream events.

The output follows Anthropic's sequence exactly::

    message_start, ping,
    (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta, message_stop

Blocks are numbered from 0 in order. Reasoning (``reasoning_content``) becomes a thinking block,
text a text block, and each OpenAI tool call (a new ``index`` in ``delta.tool_calls``) a tool_use
block whose argument fragments are passed on unchanged as ``input_json_delta`` events.

``message_delta`` is held back until ``[DONE]`` (or :meth:`OpenAIToAnthropicStream.finish`)
because with ``stream_options.include_usage`` the usage arrives in a last chunk after the one
carrying ``finish_reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.errors import UpstreamError
from modelyard.providers.base import JSONDict, SSEEvent
from modelyard.translate.mapping import (
    as_int,
    map_finish_reason_to_anthropic,
    new_anthropic_id,
    new_tool_use_id,
    openai_cached_tokens,
    openai_error_status,
)
from modelyard.translate.responses import reasoning_text

_PROVIDER = "openai"


@dataclass(slots=True)
class _ToolCallState:
    """One upstream tool call: its block index once its content_block_start has been sent."""

    call_id: str
    name: str
    block_index: int | None = None
    pending_arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _OpenBlock:
    index: int
    kind: str  # "text", "thinking" or "tool_use"
    tool_key: int | None = None


def anthropic_event(payload: JSONDict) -> SSEEvent:
    """An Anthropic SSE event: named after ``payload["type"]``, data the JSON payload."""
    return SSEEvent(data=orjson.dumps(payload), event=str(payload["type"]))


class OpenAIToAnthropicStream:
    """Feed OpenAI chat.completion.chunk SSE events (including the final ``data: [DONE]``); get
    Anthropic events.

    ``usage`` is ``(input_tokens, output_tokens)`` as reported in the Anthropic events, where
    ``input_tokens`` excludes cached prompt tokens (see ``cache_read_input_tokens``).
    """

    def __init__(self, *, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._message_id = message_id or new_anthropic_id()
        self._started = False
        self._ended = False
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._tools: dict[int, _ToolCallState] = {}
        self._finish_reason: str | None = None
        self._refused = False
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cache_read_tokens: int | None = None

    @property
    def usage(self) -> tuple[int, int]:
        return (self._input_tokens or 0, self._output_tokens or 0)

    @property
    def cache_read_input_tokens(self) -> int | None:
        """Cached prompt tokens the upstream reported (``None`` if it said nothing)."""
        return self._cache_read_tokens

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        """Translate one upstream event; returns the Anthropic events it produces (maybe none)."""
        data = event.data.strip()
        if not data or self._ended:
            return []
        if data == b"[DONE]":
            return self.finish()
        chunk = self._parse(data)
        out = self._ensure_started()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._record_usage(usage)
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is refused at request time; ignore stray choices
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out.extend(self._on_delta(delta))
            if choice.get("finish_reason") is not None:
                self._finish_reason = str(choice["finish_reason"])
                out.extend(self._close_blocks())  # as Anthropic does; message_delta waits for usage
        return out

    def finish(self) -> list[SSEEvent]:
        """Close the message (call at the end of the upstream stream). Idempotent."""
        if self._ended:
            return []
        out = self._ensure_started() + self._close_blocks()
        usage: JSONDict = {}
        if self._input_tokens is not None:
            usage["input_tokens"] = self._input_tokens
        if self._cache_read_tokens is not None:
            usage["cache_read_input_tokens"] = self._cache_read_tokens
        usage["output_tokens"] = self._output_tokens or 0
        out.append(
            anthropic_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
                    "usage": usage,
                }
            )
        )
        out.append(anthropic_event({"type": "message_stop"}))
        self._ended = True
        return out

    def _close_blocks(self) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for key, state in self._tools.items():
            if state.block_index is None:  # a tool call whose name never came: still deliver it
                out.extend(self._start_tool(key, state))
        out.extend(self._close_open())
        return out

    def _parse(self, data: bytes) -> JSONDict:
        try:
            chunk: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"the upstream sent a stream event that is not JSON: {data[:200]!r}",
                status=502,
                provider=_PROVIDER,
                model=self._model,
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamError(
                f"the upstream sent a stream event that is not a JSON object: {data[:200]!r}",
                status=502,
                provider=_PROVIDER,
                model=self._model,
            )
        error = chunk.get("error")
        if isinstance(error, dict):
            raise UpstreamError(
                str(error.get("message") or "the upstream reported an error mid-stream"),
                status=openai_error_status(error),
                provider=_PROVIDER,
                model=self._model,
                upstream_type=str(error["type"]) if error.get("type") else None,
            )
        return chunk

    def _record_usage(self, usage: JSONDict) -> None:
        prompt = as_int(usage.get("prompt_tokens"))
        cached = openai_cached_tokens(usage)
        self._cache_read_tokens = cached
        self._input_tokens = max(prompt - (cached or 0), 0)
        self._output_tokens = as_int(usage.get("completion_tokens"))

    def _stop_reason(self) -> str:
        if self._refused:
            return "refusal"
        reason = map_finish_reason_to_anthropic(self._finish_reason)
        if self._tools and reason in (None, "end_turn"):
            return "tool_use"  # some servers finish tool calls with "stop" or not at all
        return reason or "end_turn"

    def _ensure_started(self) -> list[SSEEvent]:
        if self._started:
            return []
        self._started = True
        message: JSONDict = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens or 0, "output_tokens": 1},
        }
        return [
            anthropic_event({"type": "message_start", "message": message}),
            anthropic_event({"type": "ping"}),
        ]

    def _on_delta(self, delta: JSONDict) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        reasoning = reasoning_text(delta)
        if reasoning:
            out.extend(self._block_delta("thinking", {"type": "thinking_delta", "thinking": reasoning}))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.extend(self._block_delta("text", {"type": "text_delta", "text": content}))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refused = True
            out.extend(self._block_delta("text", {"type": "text_delta", "text": refusal}))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, dict):
                    out.extend(self._on_tool_call(call, position))
        return out

    def _block_delta(self, kind: str, delta: JSONDict) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        if self._open is None or self._open.kind != kind:
            start: JSONDict = (
                {"type": "thinking", "thinking": "", "signature": ""}
                if kind == "thinking"
                else {"type": "text", "text": ""}
            )
            out.extend(self._start_block(kind, start))
        assert self._open is not None
        out.append(
            anthropic_event({"type": "content_block_delta", "index": self._open.index, "delta": delta})
        )
        return out

    def _start_block(self, kind: str, content_block: JSONDict, tool_key: int | None = None) -> list[SSEEvent]:
        out = self._close_open()
        index = self._next_index
        self._next_index += 1
        self._open = _OpenBlock(index=index, kind=kind, tool_key=tool_key)
        out.append(
            anthropic_event({"type": "content_block_start", "index": index, "content_block": content_block})
        )
        return out

    def _close_open(self) -> list[SSEEvent]:
        if self._open is None:
            return []
        index = self._open.index
        self._open = None
        return [anthropic_event({"type": "content_block_stop", "index": index})]

    def _on_tool_call(self, call: JSONDict, position: int) -> list[SSEEvent]:
        key = call.get("index")
        if not isinstance(key, int):
            key = position
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        call_id = call.get("id")
        state = self._tools.get(key)
        if state is None:
            state = _ToolCallState(call_id="", name="")
            self._tools[key] = state
        if state.block_index is None:
            if isinstance(call_id, str) and call_id:
                state.call_id = call_id
            if isinstance(name, str) and name:
                state.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state.pending_arguments.append(arguments)
        if state.block_index is None:
            # Wait for the name: content_block_start must carry it.
            return self._start_tool(key, state) if state.name else []
        return self._flush_arguments(state)

    def _start_tool(self, key: int, state: _ToolCallState) -> list[SSEEvent]:
        if not state.call_id:
            state.call_id = new_tool_use_id()
        block = {"type": "tool_use", "id": state.call_id, "name": state.name, "input": {}}
        out = self._start_block("tool_use", block, tool_key=key)
        state.block_index = self._next_index - 1
        out.extend(self._flush_arguments(state))
        return out

    def _flush_arguments(self, state: _ToolCallState) -> list[SSEEvent]:
        # Fragments of a tool call whose block was already closed (a server interleaving parallel
        # calls) still go to that call's index: arguments are never dropped.
        out = [
            anthropic_event(
                {
                    "type": "content_block_delta",
                    "index": state.block_index,
                    "delta": {"type": "input_json_delta", "partial_json": fragment},
                }
            )
            for fragment in state.pending_arguments
        ]
        state.pending_arguments.clear()
        return out
