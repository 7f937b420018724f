"""OpenAIToAnthropicStream: recorded-style OpenAI chunk streams -> exact Anthropic event sequences."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import UpstreamError
from modelyard.providers.base import SSEEvent
from modelyard.translate import OpenAIToAnthropicStream

from .helpers import (
    OPENAI_DONE,
    anthropic_final_message,
    decode,
    feed_all,
    openai_chunk,
    openai_usage,
    types_of,
)

ROLE = {"role": "assistant", "content": "", "refusal": None}


def _text_stream() -> list[SSEEvent]:
    return [
        openai_chunk(ROLE),
        openai_chunk({"content": "Hello"}),
        openai_chunk({"content": "! How can I help?"}),
        openai_chunk({}, finish_reason="stop"),
        openai_chunk(choices=[], usage=openai_usage(19, 10)),
        OPENAI_DONE,
    ]


def _tool_stream() -> list[SSEEvent]:
    """Two parallel tool calls after some text, as gpt-4o streams them."""
    return [
        openai_chunk(ROLE),
        openai_chunk({"content": "Checking."}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"lo'}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'cation": "Par'}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'is, France"}'}}]}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2nd",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": '}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}),
        openai_chunk({}, finish_reason="tool_calls"),
        openai_chunk(choices=[], usage=openai_usage(80, 41, cached=64)),
        OPENAI_DONE,
    ]


def test_text_stream_exact_sequence() -> None:
    stream = OpenAIToAnthropicStream(model="local-llama", message_id="msg_fixed")
    events = feed_all(stream, _text_stream())
    assert decode(events) == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_fixed",
                "type": "message",
                "role": "assistant",
                "model": "local-llama",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 1},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "! How can I help?"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 19, "cache_read_input_tokens": 0, "output_tokens": 10},
        },
        {"type": "message_stop"},
    ]
    assert stream.usage == (19, 10)


def test_message_delta_waits_for_done_so_usage_is_included() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    chunks = _text_stream()
    emitted_before_done = [e for c in chunks[:-1] for e in stream.feed(c)]
    assert "message_delta" not in types_of(emitted_before_done)
    assert types_of(stream.feed(OPENAI_DONE)) == ["message_delta", "message_stop"]


def test_sdk_accumulates_text_stream() -> None:
    message = anthropic_final_message(feed_all(OpenAIToAnthropicStream(model="m"), _text_stream()))
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! How can I help?"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 10
    assert message.usage.input_tokens == 19


def test_parallel_tool_calls_exact_sequence() -> None:
    events = decode(feed_all(OpenAIToAnthropicStream(model="m", message_id="msg_x"), _tool_stream()))
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "name": "get_weather",
        "input": {},
    }
    assert events[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"lo'}
    assert events[10]["content_block"]["id"] == "call_2nd"
    assert events[14] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 16, "cache_read_input_tokens": 64, "output_tokens": 41},
    }


def test_tool_arguments_reassemble_exactly() -> None:
    events = decode(feed_all(OpenAIToAnthropicStream(model="m"), _tool_stream()))
    by_index: dict[int, str] = {}
    for e in events:
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta":
            by_index[e["index"]] = by_index.get(e["index"], "") + e["delta"]["partial_json"]
    assert by_index == {1: '{"location": "Paris, France"}', 2: '{"tz": "CET"}'}


def test_sdk_accumulates_tool_stream() -> None:
    message = anthropic_final_message(feed_all(OpenAIToAnthropicStream(model="m"), _tool_stream()))
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first = message.content[1]
    assert first.type == "tool_use"
    assert (first.id, first.name, first.input) == (
        "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "get_weather",
        {"location": "Paris, France"},
    )
    assert message.content[2].input == {"tz": "CET"}
    assert message.stop_reason == "tool_use"
    assert message.usage.cache_read_input_tokens == 64


def test_reasoning_content_becomes_thinking_block_before_text() -> None:
    chunks = [
        openai_chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        openai_chunk({"reasoning_content": "The user wants "}),
        openai_chunk({"reasoning_content": "a greeting."}),
        openai_chunk({"content": "Hi!"}),
        openai_chunk({}, finish_reason="stop"),
        OPENAI_DONE,
    ]
    events = feed_all(OpenAIToAnthropicStream(model="deepseek-r1"), chunks)
    payloads = decode(events)
    assert payloads[2] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert payloads[3]["delta"] == {"type": "thinking_delta", "thinking": "The user wants "}
    assert payloads[5] == {"type": "content_block_stop", "index": 0}
    assert payloads[6]["content_block"] == {"type": "text", "text": ""}
    message = anthropic_final_message(events)
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "The user wants a greeting."
    assert message.content[1].type == "text"


def test_without_usage_chunk_the_stream_still_closes_properly() -> None:
    chunks = [
        openai_chunk(ROLE),
        openai_chunk({"content": "x"}),
        openai_chunk({}, finish_reason="length"),
        OPENAI_DONE,
    ]
    stream = OpenAIToAnthropicStream(model="m")
    payloads = decode(feed_all(stream, chunks))
    assert payloads[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 0},
    }
    assert stream.usage == (0, 0)


def test_finish_without_done_closes_open_block_and_is_idempotent() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    stream.feed(openai_chunk(ROLE))
    stream.feed(openai_chunk({"content": "partial"}))  # upstream cut off: no finish_reason, no [DONE]
    closing = stream.finish()
    assert types_of(closing) == ["content_block_stop", "message_delta", "message_stop"]
    assert stream.finish() == []
    assert stream.feed(OPENAI_DONE) == []
    assert stream.feed(openai_chunk({"content": "late"})) == []


def test_empty_upstream_stream_still_yields_a_complete_message() -> None:
    events = OpenAIToAnthropicStream(model="m").finish()
    assert types_of(events) == ["message_start", "ping", "message_delta", "message_stop"]
    assert anthropic_final_message(events).content == []


def test_role_only_first_chunk_opens_no_block() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    assert types_of(stream.feed(openai_chunk(ROLE))) == ["message_start", "ping"]
    assert stream.feed(openai_chunk({"content": ""})) == []


def test_tool_call_with_late_name_waits_for_the_name() -> None:
    chunks = [
        openai_chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"arguments": '{"a"'}}
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ": 1}"}}]}),
        openai_chunk({}, finish_reason="tool_calls"),
        OPENAI_DONE,
    ]
    events = feed_all(OpenAIToAnthropicStream(model="m"), chunks)
    payloads = decode(events)
    assert payloads[2]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert anthropic_final_message(events).content[0].input == {"a": 1}


def test_tool_call_without_id_gets_one_and_stop_finish_becomes_tool_use() -> None:
    chunks = [
        openai_chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        openai_chunk({}, finish_reason="stop"),
        OPENAI_DONE,
    ]
    payloads = decode(feed_all(OpenAIToAnthropicStream(model="m"), chunks))
    assert payloads[2]["content_block"]["id"].startswith("toolu_")
    assert payloads[-2]["delta"]["stop_reason"] == "tool_use"


def test_whole_tool_call_in_one_chunk_llama_cpp_style() -> None:
    call = {"index": 0, "id": "abc", "type": "function", "function": {"name": "f", "arguments": '{"q": "x"}'}}
    chunks = [openai_chunk({"tool_calls": [call]}), openai_chunk({}, finish_reason="tool_calls"), OPENAI_DONE]
    events = feed_all(OpenAIToAnthropicStream(model="m"), chunks)
    assert anthropic_final_message(events).content[0].input == {"q": "x"}


def test_refusal_delta_is_text_with_refusal_stop() -> None:
    chunks = [
        openai_chunk({"refusal": "I can't help with that."}),
        openai_chunk({}, finish_reason="stop"),
        OPENAI_DONE,
    ]
    message = anthropic_final_message(feed_all(OpenAIToAnthropicStream(model="m"), chunks))
    assert message.content[0].type == "text"
    assert message.content[0].text == "I can't help with that."
    assert message.stop_reason == "refusal"


def test_vllm_usage_chunk_with_null_choices() -> None:
    chunks = [
        openai_chunk({"content": "x"}),
        openai_chunk({}, finish_reason="stop"),
        SSEEvent(
            data=orjson.dumps(
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "choices": None,
                    "usage": {"prompt_tokens": 7, "completion_tokens": 1},
                }
            )
        ),
        OPENAI_DONE,
    ]
    stream = OpenAIToAnthropicStream(model="m")
    feed_all(stream, chunks)
    assert stream.usage == (7, 1)


def test_error_chunk_raises_upstream_error() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    stream.feed(openai_chunk(ROLE))
    error = SSEEvent(
        data=orjson.dumps({"error": {"message": "model overloaded", "type": "server_error", "code": 503}})
    )
    with pytest.raises(UpstreamError, match="model overloaded") as info:
        stream.feed(error)
    assert info.value.status == 503
    assert info.value.upstream_type == "server_error"


def test_malformed_chunk_raises_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON") as info:
        OpenAIToAnthropicStream(model="m").feed(SSEEvent(data=b"{oops"))
    assert info.value.status == 502


def test_blank_and_keepalive_events_are_ignored() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    assert stream.feed(SSEEvent(data=b"")) == []
    assert stream.feed(SSEEvent(data=b"  \n")) == []


def test_every_event_is_named_after_its_type() -> None:
    for event in feed_all(OpenAIToAnthropicStream(model="m"), _tool_stream()):
        assert event.event == orjson.loads(event.data)["type"]
