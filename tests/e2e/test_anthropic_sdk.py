"""The official ``anthropic`` SDK against a running gateway: messages, streams (the SDK's own
accumulator), tools, thinking, count_tokens and errors as the SDK's exception classes."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.bodies import (
    ANTHROPIC_SIGNATURE_PREFIX,
    ANTHROPIC_THINKING,
    ANTHROPIC_THOUGHTFUL_ANSWER,
    ANTHROPIC_TOOL_TEXT,
    ANTHROPIC_TOOL_USES,
    ANTHROPIC_TOOLS,
    OPENAI_REASONED_ANSWER,
    OPENAI_REASONING,
    OPENAI_TOOL_CALLS,
    QUESTION,
    TEXT_ANSWER,
)

Fakes = tuple[FakeUpstream, FakeUpstream]
MESSAGES: Any = [{"role": "user", "content": QUESTION}]
TOOLS: Any = ANTHROPIC_TOOLS


@pytest.mark.parametrize(
    ("model", "answer", "deployment"),
    [
        ("an-rec-text", TEXT_ANSWER, "anthropic/rec-text"),
        ("oa-rec-text", TEXT_ANSWER, "openai/rec-text"),
        ("fake-an-echo", f"echo: {QUESTION}", "fake/echo"),
        ("fake-echo", f"echo: {QUESTION}", "fake/echo"),
    ],
)
def test_message(anthropic_client: anthropic.Anthropic, model: str, answer: str, deployment: str) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model=model, max_tokens=256, system="Answer briefly.", messages=MESSAGES
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == answer
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-modelyard-deployment"] == deployment
    assert raw.headers["request-id"] == raw.headers["x-request-id"]


@pytest.mark.parametrize("model", ["an-rec-text", "oa-rec-text", "fake-an-echo", "fake-echo"])
def test_stream_with_final_message(anthropic_client: anthropic.Anthropic, model: str) -> None:
    with anthropic_client.messages.stream(model=model, max_tokens=256, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    expected = TEXT_ANSWER if model.endswith("rec-text") else f"echo: {QUESTION}"
    assert len(pieces) > 1 and "".join(pieces) == expected
    assert final.content[0].text == expected  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("model", "text", "expected"),
    [
        ("an-rec-tools", ANTHROPIC_TOOL_TEXT, ANTHROPIC_TOOL_USES),
        ("oa-rec-tools", None, OPENAI_TOOL_CALLS),
        (
            "fake-an-tools",
            None,
            [
                ("call_fake0", "get_weather", '{"city": "test", "unit": "test"}'),
                ("call_fake1", "get_local_time", '{"timezone": "test"}'),
            ],
        ),
        (
            "fake-tools",
            None,
            [
                ("call_fake0", "get_weather", '{"city": "test", "unit": "test"}'),
                ("call_fake1", "get_local_time", '{"timezone": "test"}'),
            ],
        ),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_tool_use(
    anthropic_client: anthropic.Anthropic,
    model: str,
    text: str | None,
    expected: list[tuple[str, str, str]],
    streamed: bool,
) -> None:
    message: anthropic.types.Message
    if streamed:
        with anthropic_client.messages.stream(
            model=model, max_tokens=256, messages=MESSAGES, tools=TOOLS
        ) as stream:
            message = stream.get_final_message()
    else:
        message = anthropic_client.messages.create(
            model=model, max_tokens=256, messages=MESSAGES, tools=TOOLS
        )
    tool_uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tool_uses == [(i, n, orjson.loads(a)) for i, n, a in expected]
    texts = [b.text for b in message.content if b.type == "text"]
    assert texts == ([text] if text else [])
    assert message.stop_reason == "tool_use"


def test_tool_result_round_trip_reaches_the_openai_upstream(
    anthropic_client: anthropic.Anthropic, upstreams: Fakes
) -> None:
    call_id, name, arguments = OPENAI_TOOL_CALLS[0]
    messages: Any = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call_id, "name": name, "input": orjson.loads(arguments)}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "21°C, sunny"}],
        },
    ]
    anthropic_client.messages.create(model="oa-rec-text", max_tokens=64, messages=messages, tools=TOOLS)
    sent = upstreams[0].last().json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call_id
    assert orjson.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == orjson.loads(arguments)
    assert sent[2] == {"role": "tool", "tool_call_id": call_id, "content": "21°C, sunny"}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_thinking(anthropic_client: anthropic.Anthropic, streamed: bool) -> None:
    kwargs: Any = {
        "model": "an-rec-thinking",
        "max_tokens": 4096,
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    if streamed:
        with anthropic_client.messages.stream(**kwargs) as stream:
            message = stream.get_final_message()
    else:
        message = anthropic_client.messages.create(**kwargs)
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == ANTHROPIC_THINKING
    assert thinking.signature.startswith(ANTHROPIC_SIGNATURE_PREFIX)
    assert text.type == "text" and text.text == ANTHROPIC_THOUGHTFUL_ANSWER


def test_reasoning_of_an_openai_compatible_model_streams_as_thinking(
    anthropic_client: anthropic.Anthropic,
) -> None:
    with anthropic_client.messages.stream(
        model="oa-rec-thinking", max_tokens=256, messages=MESSAGES
    ) as stream:
        message = stream.get_final_message()
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == OPENAI_REASONING
    assert text.type == "text" and text.text == OPENAI_REASONED_ANSWER


@pytest.mark.parametrize("model", ["an-rec-text", "oa-rec-text", "fake-an-echo"])
def test_count_tokens(anthropic_client: anthropic.Anthropic, model: str) -> None:
    counted = anthropic_client.messages.count_tokens(model=model, messages=MESSAGES, tools=TOOLS)
    if model == "an-rec-text":
        assert counted.input_tokens == 14, "asked of the Anthropic upstream"
    else:
        assert counted.input_tokens > 10, "estimated, tools included"


@pytest.mark.parametrize(
    ("model", "kwargs", "exc_type", "status"),
    [
        ("no-such-model", {}, anthropic.NotFoundError, 404),
        ("fake-an-echo", {"extra_body": {"temperature": 3}}, anthropic.BadRequestError, 400),
        ("fake-an-echo", {"max_tokens": 10**9}, anthropic.BadRequestError, 400),
        ("an-err-400", {}, anthropic.BadRequestError, 400),
        ("an-err-429", {}, anthropic.RateLimitError, 429),
        ("oa-err-429", {}, anthropic.RateLimitError, 429),
        ("an-err-500", {}, anthropic.InternalServerError, 500),
        ("an-err-529", {}, anthropic.OverloadedError, 529),
        ("oa-err-503", {}, anthropic.ServiceUnavailableError, 503),
        ("an-badkey", {}, anthropic.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_errors_are_the_sdks_exception_classes(
    anthropic_client: anthropic.Anthropic,
    model: str,
    kwargs: dict[str, Any],
    exc_type: type[anthropic.APIStatusError],
    status: int,
    streamed: bool,
) -> None:
    arguments: Any = {"model": model, "max_tokens": 64, "messages": MESSAGES, **kwargs}
    with pytest.raises(exc_type) as caught:
        if streamed:
            with anthropic_client.messages.stream(**arguments) as stream:
                stream.get_final_message()
        else:
            anthropic_client.messages.create(**arguments)
    error = caught.value
    assert error.status_code == status
    assert isinstance(error.body, dict) and error.body["type"] == "error" and error.body["error"]["message"]
    assert error.request_id == error.response.headers["x-request-id"] == error.body["request_id"]


def test_wrong_gateway_key_is_an_authentication_error(gateway: GatewayServer) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="not-the-key", max_retries=0)
    with client, pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="fake-an-echo", max_tokens=16, messages=MESSAGES)
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize("model", ["an-rec-error-mid", "an-drop-mid", "oa-drop-mid"])
def test_error_mid_stream_raises_in_the_sdk(anthropic_client: anthropic.Anthropic, model: str) -> None:
    received: list[str] = []
    stream_manager = anthropic_client.messages.stream(model=model, max_tokens=64, messages=MESSAGES)
    with pytest.raises(anthropic.APIError), stream_manager as stream:  # the error arrives while iterating
        received.extend(stream.text_stream)
    assert "".join(received) == ("The capital" if "drop" in model else "The capital of France is")
