"""Round trips through both directions keep every tool input, tool call id, result and image."""

from __future__ import annotations

import orjson

from modelyard.providers.base import JSONDict, SSEEvent
from modelyard.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

from .helpers import OPENAI_DONE, anthropic_final_message, feed_all, openai_chunk, openai_final_completion

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
URL_IMAGE = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}

ANTHROPIC_CONVERSATION: JSONDict = {
    "model": "m",
    "max_tokens": 512,
    "system": "You are a weather bot.",
    "messages": [
        {
            "role": "user",
            "content": [IMAGE, URL_IMAGE, {"type": "text", "text": "Where is this, and its weather?"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking two things."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "locate",
                    "input": {"image": 0, "hints": ["tower", "river"], "nested": {"z": 1, "a": None}},
                },
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "Paris"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": "rate limited",
                    "is_error": True,
                },
                {"type": "text", "text": "Retry the weather."},
            ],
        },
    ],
    "stop_sequences": ["STOP"],
    "temperature": 0.3,
    "tools": [
        {"name": "locate", "description": "Find a place", "input_schema": {"type": "object"}},
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "u-9"},
}


def test_anthropic_request_survives_a_round_trip() -> None:
    back = openai_request_to_anthropic(anthropic_request_to_openai(ANTHROPIC_CONVERSATION))
    assert back == ANTHROPIC_CONVERSATION


def test_tool_input_key_order_survives() -> None:
    back = openai_request_to_anthropic(anthropic_request_to_openai(ANTHROPIC_CONVERSATION))
    tool_input = back["messages"][1]["content"][1]["input"]
    assert list(tool_input) == ["image", "hints", "nested"]
    assert list(tool_input["nested"]) == ["z", "a"]


OPENAI_CONVERSATION: JSONDict = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "15C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "[tool error] timeout"},
        {"role": "assistant", "content": "Paris is 15C; Rome timed out."},
        {"role": "user", "content": "ok"},
    ],
    "max_tokens": 300,
    "stop": ["END"],
    "tools": [
        {
            "type": "function",
            "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}},
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "w"}},
    "parallel_tool_calls": False,
    "user": "alice",
}


def test_openai_request_survives_a_round_trip() -> None:
    back = anthropic_request_to_openai(openai_request_to_anthropic(OPENAI_CONVERSATION))
    assert back == OPENAI_CONVERSATION


def test_openai_response_round_trip_keeps_tool_calls() -> None:
    resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Calling.",
                    "refusal": None,
                    "reasoning_content": "Need two calls.",
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":1,"b":[true]}'},
                        },
                        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }
    back = anthropic_response_to_openai(openai_response_to_anthropic(resp, model="claude"), model="gpt")
    assert back["choices"][0]["message"] == resp["choices"][0]["message"]  # type: ignore[index]
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert back["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64},
    }


def test_anthropic_response_round_trip_keeps_tool_use_and_thinking() -> None:
    resp = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "plan", "signature": ""},
            {"type": "text", "text": "On it."},
            {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {"q": "ü €", "n": [1, 2.5]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 12, "cache_read_input_tokens": 1000},
    }
    back = openai_response_to_anthropic(anthropic_response_to_openai(resp, model="gpt"), model="claude")
    assert back["content"] == resp["content"]
    assert back["stop_reason"] == "tool_use"
    assert back["usage"] == resp["usage"]


def _tool_chunks() -> list[SSEEvent]:
    fragments = ['{"path": "/tmp/a b', '.txt", "mode": ', '"w", "data": "line1\\nline2 \\u00e9"}']
    chunks = [
        openai_chunk({"role": "assistant", "content": "", "refusal": None}),
        openai_chunk({"content": "Writing "}),
        openai_chunk({"content": "the file."}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "write", "arguments": ""},
                    }
                ]
            }
        ),
    ]
    chunks += [openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments]
    chunks += [
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_r",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"p":'},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "x"}'}}]}),
        openai_chunk({}, finish_reason="tool_calls"),
        openai_chunk(choices=[], usage={"prompt_tokens": 30, "completion_tokens": 25, "total_tokens": 55}),
        OPENAI_DONE,
    ]
    return chunks


def test_stream_round_trip_openai_to_anthropic_to_openai_keeps_exact_arguments() -> None:
    to_anthropic = OpenAIToAnthropicStream(model="claude")
    to_openai = AnthropicToOpenAIStream(model="gpt", include_usage=True)
    out: list[SSEEvent] = []
    for event in feed_all(to_anthropic, _tool_chunks()):
        out.extend(to_openai.feed(event))
    out.extend(to_openai.finish())
    completion = openai_final_completion(out)
    message = completion.choices[0].message
    assert message.content == "Writing the file."
    assert message.tool_calls is not None
    assert [(c.id, c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        ("call_w", '{"path": "/tmp/a b.txt", "mode": "w", "data": "line1\\nline2 \\u00e9"}'),
        ("call_r", '{"p": "x"}'),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 25)
    assert to_openai.usage == (30, 25)
    assert to_anthropic.usage == (30, 25)


def test_stream_round_trip_anthropic_to_openai_to_anthropic() -> None:
    def sse(payload: JSONDict) -> SSEEvent:
        return SSEEvent(data=orjson.dumps(payload), event=str(payload["type"]))

    upstream = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_a",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "c",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                },
            }
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            }
        ),
        sse({"type": "content_block_stop", "index": 0}),
        sse(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_q", "name": "search", "input": {}},
            }
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"q": "caf'},
            }
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'é"}'},
            }
        ),
        sse({"type": "content_block_stop", "index": 1}),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 17},
            }
        ),
        sse({"type": "message_stop"}),
    ]
    to_openai = AnthropicToOpenAIStream(model="gpt", include_usage=True)
    back_to_anthropic = OpenAIToAnthropicStream(model="c")
    out: list[SSEEvent] = []
    for event in feed_all(to_openai, upstream):
        out.extend(back_to_anthropic.feed(event))
    out.extend(back_to_anthropic.finish())
    message = anthropic_final_message(out)
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].thinking == "hmm"  # type: ignore[union-attr]
    assert (message.content[1].id, message.content[1].input) == ("toolu_q", {"q": "café"})  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 17)
