"""Streaming: Anthropic Messages stream events -> OpenAI ``chat.completion.chunk`` events.

Output shape, as OpenAI streams it: a first chunk with ``delta: {"role": "assistant", "content": "",
"refusal": null}``; content, ``reasoning_content`` and ``tool_calls`` deltas; a chunk with an empty
delta and the ``finish_reason``; with ``include_usage`` a last chunk with ``"choices": []`` and the
usage (every other chunk then has ``"usage": null``); and ``data: [DONE]``.

Tool calls are numbered from 0 by their own count, not by Anthropic content block index.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelyard.errors import UpstreamError
from modelyard.providers.base import JSONDict, SSEEvent
from modelyard.translate.mapping import (
    anthropic_error_status,
    anthropic_usage_to_openai,
    as_int,
    map_stop_reason_to_openai,
    new_openai_id,
)

_PROVIDER = "anthropic"
DONE_EVENT = SSEEvent(data=b"[DONE]")


class AnthropicToOpenAIStream:
    """Feed Anthropic SSE events; get OpenAI chat.completion.chunk events.

    ``usage`` is ``(prompt_tokens, completion_tokens)`` in OpenAI's sense: prompt tokens include
    cache reads and cache writes.
    """

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = completion_id or new_openai_id()
        self._created = created if created is not None else int(time.time())
        self._role_sent = False
        self._finish_sent = False
        self._done = False
        self._tool_index_by_block: dict[int, int] = {}
        self._stop_reason: str | None = None
        self._usage: JSONDict = {}

    @property
    def usage(self) -> tuple[int, int]:
        mapped = anthropic_usage_to_openai(self._usage)
        return (mapped["prompt_tokens"], mapped["completion_tokens"])

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        """Translate one upstream event; returns the OpenAI events it produces (maybe none).

        Raises UpstreamError for an Anthropic ``event: error`` so the caller can report it in its
        own protocol.
        """
        data = event.data.strip()
        if not data or self._done:
            return []
        payload = self._parse(data)
        kind = payload.get("type") or event.event
        if kind == "error":
            raise self._error(payload)
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
            return self._role_chunk()
        if kind == "content_block_start":
            return self._role_chunk() + self._on_block_start(payload)
        if kind == "content_block_delta":
            return self._role_chunk() + self._on_block_delta(payload)
        if kind == "message_delta":
            return self._on_message_delta(payload)
        if kind == "message_stop":
            return self.finish()
        return []  # ping, content_block_stop, and event types added later

    def finish(self) -> list[SSEEvent]:
        """Emit the final chunk(s) and ``data: [DONE]`` if not yet done. Idempotent."""
        if self._done:
            return []
        out = self._role_chunk() + self._finish_chunk()
        if self._include_usage:
            usage_chunk = self._base()
            usage_chunk["choices"] = []
            usage_chunk["usage"] = anthropic_usage_to_openai(self._usage)
            out.append(SSEEvent(data=orjson.dumps(usage_chunk)))
        out.append(DONE_EVENT)
        self._done = True
        return out

    def _parse(self, data: bytes) -> JSONDict:
        try:
            payload: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"the upstream sent a stream event that is not JSON: {data[:200]!r}",
                status=502,
                provider=_PROVIDER,
                model=self._model,
            ) from exc
        if not isinstance(payload, dict):
            raise UpstreamError(
                f"the upstream sent a stream event that is not a JSON object: {data[:200]!r}",
                status=502,
                provider=_PROVIDER,
                model=self._model,
            )
        return payload

    def _error(self, payload: JSONDict) -> UpstreamError:
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        error_type = error.get("type")
        error_type = error_type if isinstance(error_type, str) else None
        return UpstreamError(
            str(error.get("message") or "the upstream reported an error mid-stream"),
            status=anthropic_error_status(error_type),
            provider=_PROVIDER,
            model=self._model,
            upstream_type=error_type,
        )

    def _base(self) -> JSONDict:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: JSONDict, finish_reason: str | None = None) -> SSEEvent:
        chunk = self._base()
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if self._include_usage:
            chunk["usage"] = None
        return SSEEvent(data=orjson.dumps(chunk))

    def _role_chunk(self) -> list[SSEEvent]:
        if self._role_sent:
            return []
        self._role_sent = True
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _finish_chunk(self) -> list[SSEEvent]:
        if self._finish_sent:
            return []
        self._finish_sent = True
        return [self._chunk({}, map_stop_reason_to_openai(self._stop_reason) or "stop")]

    def _on_block_start(self, payload: JSONDict) -> list[SSEEvent]:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": str(block["text"])})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": str(block["thinking"])})]
        if kind != "tool_use":
            return []  # redacted thinking and server-tool blocks have no OpenAI shape
        tool_index = len(self._tool_index_by_block)
        self._tool_index_by_block[as_int(payload.get("index"))] = tool_index
        tool_input = block.get("input")
        # Anthropic starts tool_use blocks with input {} and streams the JSON; a non-empty input
        # here (some compatible servers) is the whole input.
        arguments = orjson.dumps(tool_input).decode() if tool_input else ""
        call = {
            "index": tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": arguments},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _on_block_delta(self, payload: JSONDict) -> list[SSEEvent]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": str(delta["text"])})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": str(delta["thinking"])})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tool_index_by_block.get(as_int(payload.get("index")))
            if tool_index is None:
                return []  # input of a server-tool block: not a client tool call
            call = {"index": tool_index, "function": {"arguments": str(delta["partial_json"])}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # signature_delta, citations_delta, empty deltas

    def _on_message_delta(self, payload: JSONDict) -> list[SSEEvent]:
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop_reason = str(delta["stop_reason"])
        usage = payload.get("usage")
        if isinstance(usage, dict):
            # message_delta usage is cumulative; newer API versions repeat the input counts here.
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        return self._role_chunk() + self._finish_chunk()
