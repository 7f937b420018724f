"""Pure translation, no I/O: Responses input items → chat messages (and what each kind of bad
item gets), chat answers → Responses objects and events, and the stream collector that decides
whether an answer was complete enough to store."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelyard.conversations.collect import AnswerCollector
from modelyard.conversations.neutral import expanded_body, new_turn
from modelyard.errors import InvalidRequestError
from modelyard.providers.base import WireProtocol
from modelyard.translate.responses_api import (
    from_chat,
    input_items,
    input_to_messages,
    output_to_messages,
    response_skeleton,
    to_chat,
)
from modelyard.translate.responses_api_stream import ResponsesStream


def test_input_items_to_messages() -> None:
    messages = input_to_messages(
        [
            {"role": "developer", "content": "rules"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ]
    )
    assert messages[0] == {"role": "developer", "content": "rules"}
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/y.png", "detail": "low"},
    }
    assert messages[2]["role"] == "assistant" and messages[2]["content"] == "calling"
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (None, "input"),
        ([1], "input[0]"),
        ([{"type": "computer_call"}], "input[0].type"),
        ([{"role": "user", "content": 5}], "input[0].content"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text"),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            "input[0].content[0].file_data",
        ),
        ([{"type": "function_call", "name": "f"}], "input[0]"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}], "input[0].arguments"),
        ([{"type": "function_call_output", "call_id": "c", "output": 3}], "input[0].output"),
    ],
)
def test_bad_items_name_their_place(value: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        input_to_messages(value)
    assert info.value.param == param


def test_request_options_map_to_chat() -> None:
    body = {
        "model": "m",
        "input": "hi",
        "instructions": "sys",
        "max_output_tokens": 9,
        "temperature": 0.5,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
        },
        "stream": True,
    }
    chat, new = to_chat(body, [{"role": "user", "content": "earlier"}])
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "hi"},
    ]
    assert new == [{"role": "user", "content": "hi"}]
    assert chat["max_tokens"] == 9 and chat["temperature"] == 0.5
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"]["name"] == "out"
    assert chat["stream_options"] == {"include_usage": True}


def test_chat_answer_to_response_and_back() -> None:
    chat = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "hm",
                    "tool_calls": [{"id": "c9", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 1}},
    }
    response = from_chat(chat, response_skeleton({"model": "m", "input": "x"}, "resp_1"))
    assert response["status"] == "incomplete" and response["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert [o["type"] for o in response["output"]] == ["message", "function_call"]
    assert (
        response["usage"]["input_tokens_details"]["cached_tokens"] == 1
        and response["usage"]["total_tokens"] == 7
    )
    assert output_to_messages(response["output"]) == [
        {
            "role": "assistant",
            "content": "hm",
            "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ]
    assert input_items("hi")[0]["content"] == [{"type": "input_text", "text": "hi"}]


def test_stream_events_in_order() -> None:
    stream = ResponsesStream(response_skeleton({"model": "m", "input": "x"}, "resp_2"))
    events = stream.start()
    events += stream.feed({"choices": [{"index": 0, "delta": {"content": "he"}}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {"content": "llo"}}]})
    events += stream.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}
                        ]
                    },
                }
            ]
        }
    )
    events += stream.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    events += stream.feed({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}})
    events += stream.finish()
    kinds = [e.event for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = orjson.loads(events[-1].data)["response"]
    assert final["output"][0]["content"][0]["text"] == "hello"
    assert final["output"][1]["arguments"] == '{"a":1}' and final["usage"]["output_tokens"] == 5


def _sse(*payloads: Any, event: str | None = None) -> bytes:
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        name = (payload.get("type") if isinstance(payload, dict) else None) if event == "auto" else None
        out += (f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n"
    return out


def test_collector_openai_needs_a_clean_end() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]},
        {"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]},
    ]
    done = AnswerCollector(WireProtocol.OPENAI)
    done.feed(_sse(*chunks, b"[DONE]"))
    assert done.complete and done.message() == {"role": "assistant", "content": "ab"}
    cut = AnswerCollector(WireProtocol.OPENAI)
    cut.feed(_sse(chunks[0], {"error": {"message": "cut"}}, b"[DONE]"))
    assert not cut.complete and cut.failed
    unfinished = AnswerCollector(WireProtocol.OPENAI)
    unfinished.feed(_sse(chunks[0], b"[DONE]"))
    assert not unfinished.complete


def test_collector_anthropic_tool_use() -> None:
    events = [
        {"type": "message_start", "message": {}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}},
    ]
    collector = AnswerCollector(WireProtocol.ANTHROPIC)
    collector.feed(_sse(*events, event="auto"))
    assert not collector.complete
    collector.feed(_sse({"type": "message_stop"}, event="auto"))
    assert collector.complete
    assert collector.message()["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"q":1}'}}
    ]
    failed = AnswerCollector(WireProtocol.ANTHROPIC)
    failed.feed(
        _sse(
            events[0],
            {"type": "error", "error": {"type": "overloaded_error"}},
            {"type": "message_stop"},
            event="auto",
        )
    )
    assert failed.failed and not failed.complete


def test_anthropic_turn_and_expansion() -> None:
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "be nice"}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    system, messages = new_turn(WireProtocol.ANTHROPIC, body)
    assert system == "be nice" and messages == [{"role": "user", "content": "hi"}]
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]
    out = expanded_body(
        WireProtocol.ANTHROPIC,
        {"model": "m", "messages": [{"role": "user", "content": "now"}]},
        "stored",
        history,
    )
    assert out["system"] == "stored"
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    openai_out = expanded_body(
        WireProtocol.OPENAI,
        {"model": "m", "messages": [{"role": "user", "content": "now"}]},
        "stored",
        history,
    )
    assert (
        openai_out["messages"][0] == {"role": "system", "content": "stored"}
        and len(openai_out["messages"]) == 4
    )
