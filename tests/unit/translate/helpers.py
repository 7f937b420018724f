"""Builders for recorded-style SSE payloads and readers for translated events."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from modelyard.providers.base import JSONDict, SSEEvent

OPENAI_ID = "chatcmpl-AHb8ruT7mm4zd5QOkAWqCUa1RtWgb"
CREATED = 1727462400
GPT = "gpt-4o-2024-08-06"
FINGERPRINT = "fp_5050236cbd"

_ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)


def openai_chunk(
    delta: JSONDict | None = None,
    *,
    finish_reason: str | None = None,
    usage: JSONDict | None = None,
    choices: list[JSONDict] | None = None,
) -> SSEEvent:
    """An OpenAI chunk as OpenAI streams it with ``include_usage`` (``usage: null`` on every chunk)."""
    chunk: JSONDict = {
        "id": OPENAI_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": GPT,
        "system_fingerprint": FINGERPRINT,
        "choices": choices
        if choices is not None
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }
    return SSEEvent(data=orjson.dumps(chunk))


def openai_usage(prompt: int, completion: int, cached: int = 0) -> JSONDict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


OPENAI_DONE = SSEEvent(data=b"[DONE]")


def anthropic_sse(payload: JSONDict) -> SSEEvent:
    """An Anthropic event as its API sends it (``event:`` line named after the payload type)."""
    return SSEEvent(data=orjson.dumps(payload), event=str(payload["type"]))


def decode(events: list[SSEEvent]) -> list[JSONDict]:
    """The JSON payloads of translated events; checks each Anthropic event is named after its type."""
    out: list[JSONDict] = []
    for event in events:
        payload = orjson.loads(event.data)
        if event.event is not None:
            assert payload["type"] == event.event
        out.append(payload)
    return out


def types_of(events: list[SSEEvent]) -> list[str]:
    return [str(e.event) if e.event is not None else e.data.decode()[:12] for e in events]


def feed_all(translator: Any, events: list[SSEEvent]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    for event in events:
        out.extend(translator.feed(event))
    out.extend(translator.finish())
    return out


def anthropic_final_message(events: list[SSEEvent]) -> Message:
    """Rebuild the message with the Anthropic SDK's own accumulator, validating every event."""
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for payload in decode(events):
        if payload["type"] == "ping":
            continue
        event = _ANTHROPIC_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    return Message.model_validate(snapshot.model_dump())


def openai_final_completion(events: list[SSEEvent]) -> ChatCompletion:
    """Rebuild the completion with the OpenAI SDK's own accumulator, validating every chunk."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    assert events[-1].data == b"[DONE]"
    for event in events[:-1]:
        assert event.event is None
        state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(event.data)))
    return ChatCompletion.model_validate(state.get_final_completion().model_dump())
