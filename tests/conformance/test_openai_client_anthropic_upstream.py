"""An OpenAI client served by an Anthropic upstream: the translation, checked on the wire.

The client must receive what OpenAI itself would send: a ``chat.completion`` the SDK's types
accept, or chunks in OpenAI's order (role first, one finish_reason, the usage chunk when asked for,
``[DONE]``); tool_use ids kept as tool call ids, streamed input fragments reassembling to exactly
the recorded JSON, thinking as ``reasoning_content``, stop reasons and usage mapped.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletion

from tests.fakes import FakeUpstream
from tests.fakes.bodies import (
    ANTHROPIC_THINKING,
    ANTHROPIC_THOUGHTFUL_ANSWER,
    ANTHROPIC_TOOL_TEXT,
    ANTHROPIC_TOOL_USES,
    OPENAI_TOOLS,
    TEXT_ANSWER,
    TRUNCATED_ANSWER,
    openai_chat,
)
from tests.fakes.config import ANTHROPIC_KEY
from tests.fakes.sse import check_openai_stream, openai_text, openai_tool_calls, parse_sse

Fakes = tuple[FakeUpstream, FakeUpstream]


def post(client: httpx.Client, body: dict[str, object]) -> ChatCompletion:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return ChatCompletion.model_validate(response.json())


def test_text_completion(oa_http: httpx.Client, upstreams: Fakes) -> None:
    completion = post(oa_http, openai_chat("an-rec-text", temperature=0.3, stop="END", user="u-1"))
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == TEXT_ANSWER
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (14, 10, 24)
    sent = upstreams[1].last()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.json
    assert body["model"] == "rec-text"
    assert body["system"] == "Answer briefly."
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["max_tokens"] == 4096, "server.default_anthropic_max_tokens when the caller gives none"
    assert body["temperature"] == 0.3 and body["stop_sequences"] == ["END"]


def test_tool_use_becomes_tool_calls(oa_http: httpx.Client, upstreams: Fakes) -> None:
    completion = post(
        oa_http, openai_chat("an-rec-tools", tools=OPENAI_TOOLS, tool_choice="auto", max_tokens=300)
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ANTHROPIC_TOOL_TEXT
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        (i, n, orjson.loads(a)) for i, n, a in ANTHROPIC_TOOL_USES
    ]
    sent = upstreams[1].last().json
    assert sent["max_tokens"] == 300
    assert sent["tools"][0] == {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": OPENAI_TOOLS[0]["function"]["parameters"],
    }
    assert sent["tool_choice"] == {"type": "auto"}


def test_thinking_becomes_reasoning_content(oa_http: httpx.Client, upstreams: Fakes) -> None:
    response = oa_http.post("/v1/chat/completions", json=openai_chat("an-rec-thinking"))
    message = response.json()["choices"][0]["message"]
    assert message["reasoning_content"] == ANTHROPIC_THINKING
    assert message["content"] == ANTHROPIC_THOUGHTFUL_ANSWER


def test_max_tokens_stop_becomes_length(oa_http: httpx.Client, upstreams: Fakes) -> None:
    completion = post(oa_http, openai_chat("an-rec-length", max_completion_tokens=8))
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == TRUNCATED_ANSWER
    assert upstreams[1].last().json["max_tokens"] == 8


def stream(client: httpx.Client, body: dict[str, object]) -> bytes:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_raw())


@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "include_usage"])
def test_streamed_text(oa_http: httpx.Client, upstreams: Fakes, include_usage: bool) -> None:
    body = openai_chat("an-rec-text", stream=True, include_usage=include_usage)
    events = parse_sse(stream(oa_http, body))
    check_openai_stream(events, include_usage=include_usage)
    assert openai_text(events) == TEXT_ANSWER
    chunks = [e.json for e in events[:-1]]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop"
    if include_usage:
        usage = chunks[-1]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (14, 10, 24)
    assert upstreams[1].last().json["stream"] is True
    assert "stream_options" not in upstreams[1].last().json


def test_streamed_parallel_tool_calls_keep_ids_and_exact_arguments(
    oa_http: httpx.Client, upstreams: Fakes
) -> None:
    events = parse_sse(
        stream(oa_http, openai_chat("an-rec-tools", stream=True, include_usage=True, tools=OPENAI_TOOLS))
    )
    check_openai_stream(events, include_usage=True)
    calls = openai_tool_calls(events)
    assert [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())] == ANTHROPIC_TOOL_USES
    assert openai_text(events) == ANTHROPIC_TOOL_TEXT
    chunks = [e.json for e in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 118


def test_streamed_thinking_becomes_reasoning_content(oa_http: httpx.Client, upstreams: Fakes) -> None:
    events = parse_sse(stream(oa_http, openai_chat("an-rec-thinking", stream=True)))
    check_openai_stream(events, include_usage=False)
    assert openai_text(events, "reasoning_content") == ANTHROPIC_THINKING
    assert openai_text(events) == ANTHROPIC_THOUGHTFUL_ANSWER
    assert b"signature" not in b"".join(e.data for e in events), "signatures have no OpenAI shape"


def test_streamed_max_tokens_stop(oa_http: httpx.Client, upstreams: Fakes) -> None:
    events = parse_sse(stream(oa_http, openai_chat("an-rec-length", stream=True)))
    check_openai_stream(events, include_usage=False)
    assert openai_text(events) == TRUNCATED_ANSWER
    assert [e.json["choices"][0]["finish_reason"] for e in events[:-1]][-1] == "length"


@pytest.mark.parametrize(
    ("model", "error_type"),
    [
        ("an-rec-error-mid", "api_error"),
        ("an-drop-mid", "api_error"),
        ("oa-drop-mid", "api_error"),
        ("fake-cut", "api_error"),
        ("fake-an-cut", "api_error"),
    ],
)
def test_upstream_failure_mid_stream_ends_with_an_error_chunk_and_no_done(
    oa_http: httpx.Client, model: str, error_type: str
) -> None:
    events = parse_sse(stream(oa_http, openai_chat(model, stream=True, include_usage=True)))
    assert events[0].json["choices"][0]["delta"]["role"] == "assistant", "the stream had started"
    error = events[-1].json
    assert set(error) == {"error"}, "the last event is an error object, not a chunk"
    assert error["error"]["type"] == error_type and error["error"]["message"]
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert all(e.data != b"[DONE]" for e in events), "a cut stream must never end with [DONE]"


def test_mid_stream_overload_says_so(oa_http: httpx.Client) -> None:
    events = parse_sse(stream(oa_http, openai_chat("an-rec-error-mid", stream=True)))
    assert openai_text(events) == "The capital of France is", "what came before the error is delivered"
    assert "Overloaded" in events[-1].json["error"]["message"]
