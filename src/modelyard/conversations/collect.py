"""Rebuild a streamed answer's assistant message (neutral form) from the SSE bytes the client got.

The collector sees exactly what was sent to the client, in the client's protocol, so what is
stored is what the client saw. It reports ``complete`` only once the stream's own terminal event
arrived without an error before it (OpenAI: ``data: [DONE]`` after a ``finish_reason``;
Anthropic: ``message_stop``): a cut, failed or abandoned stream is never stored.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.conversations.model import JSONDict
from modelyard.providers.base import SSEEvent, WireProtocol
from modelyard.providers.sse import SSEDecoder


class AnswerCollector:
    """Feed the stream's chunks; read :attr:`complete` and :meth:`message`."""

    def __init__(self, client: WireProtocol) -> None:
        self._client = client
        self._decoder = SSEDecoder()
        self._text: list[str] = []
        self._calls: dict[int, JSONDict] = {}
        self._finished = False
        self.failed = False
        self.complete = False

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            if self.failed or self.complete:
                return
            if self._client is WireProtocol.ANTHROPIC:
                self._anthropic(event)
            else:
                self._openai(event)

    def message(self) -> JSONDict:
        out: JSONDict = {"role": "assistant", "content": "".join(self._text) if self._text else None}
        if self._calls:
            out["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": "".join(call["args"]) or "{}"},
                }
                for _, call in sorted(self._calls.items())
            ]
        elif out["content"] is None:
            out["content"] = ""
        return out

    @staticmethod
    def _json(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None

    def _openai(self, event: SSEEvent) -> None:
        if event.data.strip() == b"[DONE]":
            self.complete = self._finished
            self.failed = not self._finished
            return
        chunk = self._json(event.data)
        if not isinstance(chunk, dict) or "error" in chunk:
            self.failed = True
            return
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = self._calls.setdefault(int(call.get("index", 0)), {"id": "", "name": "", "args": []})
                if call.get("id"):
                    slot["id"] = call["id"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    slot["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    slot["args"].append(fn["arguments"])
            if choice.get("finish_reason"):
                self._finished = True

    def _anthropic(self, event: SSEEvent) -> None:
        payload = self._json(event.data)
        kind = event.event or (payload.get("type") if isinstance(payload, dict) else None)
        if kind == "error" or not isinstance(payload, dict):
            self.failed = kind == "error" or self.failed
            return
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._calls[int(payload.get("index", 0))] = {
                    "id": str(block.get("id")),
                    "name": str(block.get("name")),
                    "args": [],
                }
            elif block.get("type") == "text" and block.get("text"):
                self._text.append(str(block["text"]))
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._text.append(str(delta.get("text", "")))
            elif delta.get("type") == "input_json_delta":
                call = self._calls.get(int(payload.get("index", 0)))
                if call is not None:
                    call["args"].append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            if (payload.get("delta") or {}).get("stop_reason"):
                self._finished = True
        elif kind == "message_stop":
            self.complete = True


__all__ = ["AnswerCollector"]
