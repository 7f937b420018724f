"""AnthropicToOpenAIStream: recorded-style Anthropic event streams -> exact OpenAI chunk sequences."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import UpstreamError
from modelyard.providers.base import JSONDict, SSEEvent
from modelyard.translate import AnthropicToOpenAIStream

from .helpers import anthropic_sse, decode, feed_all, openai_final_completion

MODEL = "claude-sonnet-4-20250514"


def _message_start(input_tokens: int = 25, **usage: int) -> SSEEvent:
    return anthropic_sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": MODEL,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1, **usage},
            },
        }
    )


def _block_start(index: int, block: JSONDict) -> SSEEvent:
    return anthropic_sse({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: JSONDict) -> SSEEvent:
    return anthropic_sse({"type": "content_block_delta", "index": index, "delta": delta})


def _block_stop(index: int) -> SSEEvent:
    return anthropic_sse({"type": "content_block_stop", "index": index})


def _message_delta(stop_reason: str, output_tokens: int) -> SSEEvent:
    return anthropic_sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
    )


PING = anthropic_sse({"type": "ping"})
MESSAGE_STOP = anthropic_sse({"type": "message_stop"})


def _text_stream() -> list[SSEEvent]:
    return [
        _message_start(),
        _block_start(0, {"type": "text", "text": ""}),
        PING,
        _delta(0, {"type": "text_delta", "text": "Hello"}),
        _delta(0, {"type": "text_delta", "text": "!"}),
        _block_stop(0),
        _message_delta("end_turn", 15),
        MESSAGE_STOP,
    ]


def _tool_stream() -> list[SSEEvent]:
    """Text then two tool_use blocks, as the Messages API streams them."""
    return [
        _message_start(472),
        _block_start(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "Okay, let's check the weather for San Francisco, CA:"}),
        _block_stop(0),
        _block_start(
            1,
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}},
        ),
        _delta(1, {"type": "input_json_delta", "partial_json": ""}),
        _delta(1, {"type": "input_json_delta", "partial_json": '{"location":'}),
        _delta(1, {"type": "input_json_delta", "partial_json": ' "San Francisc'}),
        _delta(1, {"type": "input_json_delta", "partial_json": 'o, CA", "unit": "fahrenheit"}'}),
        _block_stop(1),
        _block_start(2, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
        _delta(2, {"type": "input_json_delta", "partial_json": '{"tz": "PST"}'}),
        _block_stop(2),
        _message_delta("tool_use", 89),
        MESSAGE_STOP,
    ]


def _chunk(delta: JSONDict, finish_reason: str | None = None, *, usage: bool = True) -> JSONDict:
    chunk: JSONDict = {
        "id": "chatcmpl-fixed",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-compat",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage:
        chunk["usage"] = None
    return chunk


def _stream(include_usage: bool = True) -> AnthropicToOpenAIStream:
    return AnthropicToOpenAIStream(
        model="gpt-compat", include_usage=include_usage, completion_id="chatcmpl-fixed", created=1700000000
    )


def test_text_stream_exact_sequence_with_usage() -> None:
    stream = _stream()
    events = feed_all(stream, _text_stream())
    assert all(e.event is None for e in events)
    assert events[-1] == SSEEvent(data=b"[DONE]")
    assert decode(events[:-1]) == [
        _chunk({"role": "assistant", "content": "", "refusal": None}),
        _chunk({"content": "Hello"}),
        _chunk({"content": "!"}),
        _chunk({}, "stop"),
        {
            "id": "chatcmpl-fixed",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-compat",
            "system_fingerprint": None,
            "choices": [],
            "usage": {
                "prompt_tokens": 25,
                "completion_tokens": 15,
                "total_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        },
    ]
    assert stream.usage == (25, 15)


def test_text_stream_without_usage_has_no_usage_keys() -> None:
    events = feed_all(_stream(include_usage=False), _text_stream())
    assert decode(events[:-1]) == [
        _chunk({"role": "assistant", "content": "", "refusal": None}, usage=False),
        _chunk({"content": "Hello"}, usage=False),
        _chunk({"content": "!"}, usage=False),
        _chunk({}, "stop", usage=False),
    ]
    assert events[-1].data == b"[DONE]"


def test_sdk_accumulates_text_stream() -> None:
    completion = openai_final_completion(feed_all(_stream(), _text_stream()))
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 40


def test_tool_stream_exact_sequence() -> None:
    payloads = decode(feed_all(_stream(include_usage=False), _tool_stream())[:-1])
    assert payloads == [
        _chunk({"role": "assistant", "content": "", "refusal": None}, usage=False),
        _chunk({"content": "Okay, let's check the weather for San Francisco, CA:"}, usage=False),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            usage=False,
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}, usage=False),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "San Francisc'}}]}, usage=False),
        _chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": 'o, CA", "unit": "fahrenheit"}'}}]},
            usage=False,
        ),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_02",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            },
            usage=False,
        ),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": "PST"}'}}]}, usage=False),
        _chunk({}, "tool_calls", usage=False),
    ]


def test_tool_arguments_reassemble_exactly_and_sdk_parses_them() -> None:
    events = feed_all(_stream(), _tool_stream())
    completion = openai_final_completion(events)
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        (
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
        ),
        ("toolu_02", "get_time", '{"tz": "PST"}'),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_thinking_stream_becomes_reasoning_content() -> None:
    events = [
        _message_start(),
        _block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        _delta(0, {"type": "thinking_delta", "thinking": "Let me solve this step by step:\n\n1. "}),
        _delta(0, {"type": "thinking_delta", "thinking": "27 * 453 = 12231"}),
        _delta(
            0,
            {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
        ),
        _block_stop(0),
        _block_start(1, {"type": "text", "text": ""}),
        _delta(1, {"type": "text_delta", "text": "27 * 453 = 12,231"}),
        _block_stop(1),
        _message_delta("end_turn", 30),
        MESSAGE_STOP,
    ]
    payloads = decode(feed_all(_stream(include_usage=False), events)[:-1])
    assert [p["choices"][0]["delta"] for p in payloads] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"reasoning_content": "Let me solve this step by step:\n\n1. "},
        {"reasoning_content": "27 * 453 = 12231"},
        {"content": "27 * 453 = 12,231"},
        {},
    ]


def test_pings_and_block_stops_produce_nothing() -> None:
    stream = _stream()
    stream.feed(_message_start())
    assert stream.feed(PING) == []
    assert stream.feed(_block_stop(0)) == []


def test_cache_usage_counts_in_prompt_tokens() -> None:
    stream = _stream()
    events = [
        _message_start(3, cache_read_input_tokens=2000, cache_creation_input_tokens=100),
        _message_delta("end_turn", 7),
        MESSAGE_STOP,
    ]
    payloads = decode(feed_all(stream, events)[:-1])
    assert payloads[-1]["usage"] == {
        "prompt_tokens": 2103,
        "completion_tokens": 7,
        "total_tokens": 2110,
        "prompt_tokens_details": {"cached_tokens": 2000},
    }
    assert stream.usage == (2103, 7)


def test_message_delta_with_cumulative_input_tokens_updates_usage() -> None:
    stream = _stream()
    feed_all(
        stream,
        [
            _message_start(0),
            anthropic_sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                    "usage": {"input_tokens": 50, "output_tokens": 9, "cache_read_input_tokens": None},
                }
            ),
            MESSAGE_STOP,
        ],
    )
    assert stream.usage == (50, 9)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reason_mapping_in_final_chunk(stop_reason: str, finish: str) -> None:
    payloads = decode(
        feed_all(_stream(False), [_message_start(), _message_delta(stop_reason, 1), MESSAGE_STOP])[:-1]
    )
    assert payloads[-1]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 503),
        ("api_error", 500),
        ("rate_limit_error", 429),
        ("invalid_request_error", 400),
    ],
)
def test_error_event_raises_upstream_error(error_type: str, status: int) -> None:
    stream = _stream()
    stream.feed(_message_start())
    error = anthropic_sse({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    with pytest.raises(UpstreamError, match="Overloaded") as info:
        stream.feed(error)
    assert info.value.status == status
    assert info.value.upstream_type == error_type
    assert info.value.provider == "anthropic"


def test_finish_after_truncated_stream_closes_with_done_and_is_idempotent() -> None:
    stream = _stream(include_usage=False)
    stream.feed(_message_start())
    stream.feed(_block_start(0, {"type": "text", "text": ""}))
    stream.feed(_delta(0, {"type": "text_delta", "text": "cut"}))
    closing = stream.finish()
    assert [orjson.loads(e.data) if e.data != b"[DONE]" else "[DONE]" for e in closing] == [
        _chunk({}, "stop", usage=False),
        "[DONE]",
    ]
    assert stream.finish() == []
    assert stream.feed(MESSAGE_STOP) == []


def test_finish_on_empty_stream_still_yields_a_valid_completion() -> None:
    events = _stream().finish()
    completion = openai_final_completion(events)
    assert completion.choices[0].message.content == ""
    assert completion.choices[0].finish_reason == "stop"


def test_defaults_generate_id_and_created() -> None:
    stream = AnthropicToOpenAIStream(model="m", include_usage=False)
    first = orjson.loads(stream.feed(_message_start())[0].data)
    assert first["id"].startswith("chatcmpl-") and len(first["id"]) == 38
    assert isinstance(first["created"], int) and first["created"] > 1_700_000_000


def test_server_tool_blocks_are_not_tool_calls() -> None:
    events = [
        _message_start(),
        _block_start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        _delta(0, {"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
        _block_stop(0),
        _block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        _delta(1, {"type": "input_json_delta", "partial_json": "{}"}),
        _block_stop(1),
        _message_delta("tool_use", 5),
        MESSAGE_STOP,
    ]
    payloads = decode(feed_all(_stream(False), events)[:-1])
    deltas = [p["choices"][0]["delta"] for p in payloads]
    assert deltas[1]["tool_calls"][0]["index"] == 0
    assert deltas[1]["tool_calls"][0]["id"] == "toolu_1"
    assert deltas[2] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}


def test_malformed_event_raises_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON"):
        _stream().feed(SSEEvent(data=b"{nope", event="content_block_delta"))
