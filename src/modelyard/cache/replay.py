"""One stored form per answer — the non-streamed JSON body — and the conversions around it.

A streamed answer is folded into that body as it passes (:class:`StreamAccumulator`); a cached
body is answered as it was stored (with a fresh id and ``created``) or replayed as a stream
(:func:`replay_stream`) whose content — text, reasoning, tool calls, finish reason, usage — equals
the original's. So ``stream`` does not split the cache: a streamed request can hit an answer first
given without streaming, and the other way round.

Ids: the protocols promise a unique id per answer, so every hit gets a fresh ``chatcmpl-…`` /
``msg_…`` id (and an OpenAI ``created`` of now); tool-call ids are kept, since a client may
already hold them. ``usage`` is the original answer's (what the answer is worth); the ledger
records the hit itself at zero upstream cost.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelyard.providers.base import WireProtocol
from modelyard.translate.mapping import new_anthropic_id, new_openai_id

__all__ = ["StreamAccumulator", "fresh_body", "replay_stream"]

JSONDict = dict[str, Any]
TEXT_PIECE_CHARS = 512
"""Replayed text arrives in pieces of this many characters (clients render progressively)."""


def fresh_body(protocol: WireProtocol, stored: bytes) -> tuple[bytes, JSONDict]:
    """The stored body with a fresh id (and ``created``), as bytes and as a dict."""
    body: JSONDict = orjson.loads(stored)
    if protocol is WireProtocol.ANTHROPIC:
        body["id"] = new_anthropic_id()
    else:
        body["id"] = new_openai_id()
        body["created"] = int(time.time())
    return orjson.dumps(body), body


# -- stored body → stream -------------------------------------------------------------------------
def _data(payload: JSONDict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: str, payload: JSONDict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _pieces(text: str) -> list[str]:
    return [text[i : i + TEXT_PIECE_CHARS] for i in range(0, len(text), TEXT_PIECE_CHARS)] or [""]


def _openai_stream(body: JSONDict, include_usage: bool) -> list[bytes]:
    base: JSONDict = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if body.get("system_fingerprint") is not None:
        base["system_fingerprint"] = body["system_fingerprint"]

    def chunk(index: int, delta: JSONDict, finish: str | None = None) -> bytes:
        return _data({**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

    out: list[bytes] = []
    for choice in body.get("choices") or ():
        index = int(choice.get("index", 0))
        message = choice.get("message") or {}
        content = "" if isinstance(message.get("content"), str) else None
        out.append(chunk(index, {"role": "assistant", "content": content}))
        for field in ("reasoning_content", "reasoning"):
            if isinstance(message.get(field), str) and message[field]:
                out += [chunk(index, {field: piece}) for piece in _pieces(message[field])]
        if isinstance(message.get("content"), str) and message["content"]:
            out += [chunk(index, {"content": piece}) for piece in _pieces(message["content"])]
        if message.get("refusal"):
            out.append(chunk(index, {"refusal": message["refusal"]}))
        for number, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            delta = {
                "index": number,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
            }
            out.append(chunk(index, {"tool_calls": [delta]}))
        out.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and body.get("usage") is not None:
        out.append(_data({**base, "choices": [], "usage": body["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return out


def _anthropic_stream(body: JSONDict) -> list[bytes]:
    usage = dict(body.get("usage") or {})
    start_usage = {**usage, "output_tokens": min(1, int(usage.get("output_tokens") or 0))}
    message = {**body, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    out = [_event("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(body.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            out.append(_event("content_block_start", _start(index, {"type": "text", "text": ""})))
            out += [
                _event("content_block_delta", _delta(index, {"type": "text_delta", "text": p}))
                for p in _pieces(block.get("text", ""))
            ]
        elif kind == "tool_use":
            empty = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            out.append(_event("content_block_start", _start(index, empty)))
            partial = orjson.dumps(block.get("input") or {}).decode()
            out.append(
                _event(
                    "content_block_delta",
                    _delta(index, {"type": "input_json_delta", "partial_json": partial}),
                )
            )
        elif kind == "thinking":
            out.append(_event("content_block_start", _start(index, {"type": "thinking", "thinking": ""})))
            out += [
                _event("content_block_delta", _delta(index, {"type": "thinking_delta", "thinking": p}))
                for p in _pieces(block.get("thinking", ""))
            ]
            if block.get("signature"):
                out.append(
                    _event(
                        "content_block_delta",
                        _delta(index, {"type": "signature_delta", "signature": block["signature"]}),
                    )
                )
        else:  # redacted_thinking and anything newer: sent whole in its start event
            out.append(_event("content_block_start", _start(index, block)))
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": body.get("stop_reason") or "end_turn", "stop_sequence": body.get("stop_sequence")}
    out.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": int(usage.get("output_tokens") or 0)},
            },
        )
    )
    out.append(_event("message_stop", {"type": "message_stop"}))
    return out


def _start(index: int, block: JSONDict) -> JSONDict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: JSONDict) -> JSONDict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def replay_stream(protocol: WireProtocol, body: JSONDict, request: JSONDict) -> list[bytes]:
    """A stored (fresh-id) body as the SSE events of a stream in ``protocol``. OpenAI's usage chunk
    is sent only when the request asked for it (``stream_options.include_usage``)."""
    if protocol is WireProtocol.ANTHROPIC:
        return _anthropic_stream(body)
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    return _openai_stream(body, include_usage)


# -- stream → stored body -------------------------------------------------------------------------
class StreamAccumulator:
    """Folds a stream's SSE bytes (as sent to the client) into the equivalent non-streamed body.

    :meth:`body` is None unless the stream ended cleanly: OpenAI ``[DONE]`` after a finish reason
    on every choice; Anthropic ``message_stop`` after a stop reason. Error events, cut streams and
    anything unparsable make it None, so they are never stored.
    """

    def __init__(self, protocol: WireProtocol, max_bytes: int) -> None:
        self._protocol = protocol
        self._max_bytes = max_bytes
        self._size = 0
        self._buffer = b""
        self.failed = False
        self._done = False
        # OpenAI
        self._head: JSONDict = {}
        self._choices: dict[int, JSONDict] = {}
        self._usage: Any = None
        # Anthropic
        self._message: JSONDict | None = None
        self._blocks: dict[int, JSONDict] = {}
        self._partial_json: dict[int, str] = {}

    def feed(self, chunk: bytes) -> None:
        if self.failed:
            return
        self._size += len(chunk)
        if self._size > self._max_bytes:
            self.failed = True
            return
        self._buffer += chunk
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in raw.split(b"\n"):
                if line.startswith(b"data:"):
                    self._on_data(line[5:].strip())

    def _on_data(self, data: bytes) -> None:
        if self._done or not data:
            return
        if data == b"[DONE]":
            self._done = True
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(event, dict) or ("error" in event and event.get("type") in (None, "error")):
            self.failed = True
            return
        try:
            if self._protocol is WireProtocol.ANTHROPIC:
                self._on_anthropic(event)
            else:
                self._on_openai(event)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.failed = True

    def _on_openai(self, event: JSONDict) -> None:
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in event and name not in self._head:
                self._head[name] = event[name]
        if event.get("usage") is not None:
            self._usage = event["usage"]
        for choice in event.get("choices") or ():
            index = int(choice.get("index", 0))
            state = self._choices.setdefault(
                index,
                {
                    "index": index,
                    "message": {"role": "assistant", "content": None},
                    "finish_reason": None,
                    "logprobs": None,
                },
            )
            message = state["message"]
            delta = choice.get("delta") or {}
            for field in ("content", "reasoning_content", "reasoning", "refusal"):
                piece = delta.get(field)
                if isinstance(piece, str):
                    message[field] = (message.get(field) or "") + piece
            for call in delta.get("tool_calls") or ():
                calls = message.setdefault("tool_calls", [])
                number = int(call.get("index", len(calls)))
                while len(calls) <= number:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                target = calls[number]
                if call.get("id"):
                    target["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    target["function"]["name"] += function["name"]
                if function.get("arguments"):
                    target["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    def _on_anthropic(self, event: JSONDict) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._message = dict(event["message"])
        elif kind == "content_block_start":
            self._blocks[int(event["index"])] = dict(event["content_block"])
        elif kind == "content_block_delta":
            index = int(event["index"])
            block = self._blocks[index]
            delta = event["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif dtype == "input_json_delta":
                self._partial_json[index] = self._partial_json.get(index, "") + delta["partial_json"]
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif dtype == "signature_delta":
                block["signature"] = delta["signature"]
        elif kind == "content_block_stop":
            index = int(event["index"])
            if index in self._partial_json:
                text = self._partial_json.pop(index)
                self._blocks[index]["input"] = orjson.loads(text) if text else {}
        elif kind == "message_delta":
            assert self._message is not None
            self._message.update({k: v for k, v in (event.get("delta") or {}).items()})
            self._message["usage"] = {**(self._message.get("usage") or {}), **(event.get("usage") or {})}
        elif kind == "message_stop":
            self._done = True
        elif kind == "error":
            self.failed = True

    def body(self) -> bytes | None:
        """The equivalent non-streamed body, or None if the stream did not end cleanly."""
        if self.failed or not self._done:
            return None
        if self._protocol is WireProtocol.ANTHROPIC:
            message = self._message
            if message is None or not message.get("stop_reason") or self._partial_json:
                return None
            message = {**message, "content": [self._blocks[i] for i in sorted(self._blocks)]}
            return orjson.dumps(message)
        if not self._choices or any(not c["finish_reason"] for c in self._choices.values()):
            return None
        body = {
            "id": self._head.get("id"),
            "object": "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
            "choices": [self._choices[i] for i in sorted(self._choices)],
        }
        if self._usage is not None:
            body["usage"] = self._usage
        if self._head.get("system_fingerprint") is not None:
            body["system_fingerprint"] = self._head["system_fingerprint"]
        return orjson.dumps(body)
