"""An Anthropic client served by an OpenAI-format upstream: the translation, checked on the wire.

The client must receive what Anthropic itself would send: a ``message`` body the SDK's types
accept, or a stream in Anthropic's exact event order; text, tool calls (ids kept, argument
fragments reassembling to exactly the recorded arguments), reasoning, stop reasons and usage
carried over from the OpenAI recording.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from anthropic.types import Message

from tests.fakes import FakeUpstream
from tests.fakes.bodies import (
    ANTHROPIC_TOOLS,
    OPENAI_REASONED_ANSWER,
    OPENAI_REASONING,
    OPENAI_TOOL_CALLS,
    TEXT_ANSWER,
    TRUNCATED_ANSWER,
    anthropic_messages,
)
from tests.fakes.config import OPENAI_KEY
from tests.fakes.sse import anthropic_blocks, check_anthropic_stream, parse_sse

Fakes = tuple[FakeUpstream, FakeUpstream]
UPSTREAM_MODEL = "gpt-4o-mini-2024-07-18"


def post(client: httpx.Client, body: dict[str, object]) -> httpx.Response:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    return response


def test_text_message(an_http: httpx.Client, upstreams: Fakes) -> None:
    response = post(an_http, anthropic_messages("oa-rec-text", temperature=0.5, stop_sequences=["\n\n"]))
    message = Message.model_validate(response.json())
    assert message.id.startswith("msg_")
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": TEXT_ANSWER, "citations": None}
    ]
    assert message.stop_reason == "end_turn"
    assert message.model == UPSTREAM_MODEL
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 8)
    sent = upstreams[0].last()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    upstream_body = sent.json
    assert upstream_body["model"] == "rec-text"
    assert upstream_body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert upstream_body["temperature"] == 0.5
    assert upstream_body["stop"] == ["\n\n"]
    assert 1024 in (upstream_body.get("max_tokens"), upstream_body.get("max_completion_tokens"))


def test_tool_calls_become_tool_use_blocks(an_http: httpx.Client, upstreams: Fakes) -> None:
    body = anthropic_messages("oa-rec-tools", tools=ANTHROPIC_TOOLS, tool_choice={"type": "auto"})
    message = Message.model_validate(post(an_http, body).json())
    assert message.stop_reason == "tool_use"
    tool_uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tool_uses == [(i, n, orjson.loads(a)) for i, n, a in OPENAI_TOOL_CALLS]
    sent_tools = upstreams[0].last().json["tools"]
    assert [t["function"]["name"] for t in sent_tools] == ["get_weather", "get_local_time"]
    assert sent_tools[0]["function"]["parameters"] == ANTHROPIC_TOOLS[0]["input_schema"]


def test_reasoning_becomes_a_thinking_block(an_http: httpx.Client, upstreams: Fakes) -> None:
    message = Message.model_validate(post(an_http, anthropic_messages("oa-rec-thinking")).json())
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text"]
    assert message.content[0].thinking == OPENAI_REASONING  # type: ignore[union-attr]
    assert message.content[1].text == OPENAI_REASONED_ANSWER  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (18, 64)


def test_length_finish_becomes_max_tokens(an_http: httpx.Client, upstreams: Fakes) -> None:
    message = Message.model_validate(post(an_http, anthropic_messages("oa-rec-length")).json())
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == TRUNCATED_ANSWER  # type: ignore[union-attr]


def stream(client: httpx.Client, body: dict[str, object]) -> bytes:
    with client.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_raw())


def test_streamed_text(an_http: httpx.Client, upstreams: Fakes) -> None:
    events = parse_sse(stream(an_http, anthropic_messages("oa-rec-text", stream=True)))
    check_anthropic_stream(events)
    assert [e.name for e in events][:2] == ["message_start", "ping"]
    assert anthropic_blocks(events) == [{"type": "text", "text": TEXT_ANSWER}]
    start = events[0].json["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["id"].startswith("msg_")
    final = events[-2].json
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == 7
    assert final["usage"]["input_tokens"] == 14
    sent = upstreams[0].last().json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert upstreams[0].served == ["rec-text.usage.sse"]


def test_streamed_parallel_tool_calls_keep_ids_and_exact_arguments(
    an_http: httpx.Client, upstreams: Fakes
) -> None:
    body = anthropic_messages("oa-rec-tools", stream=True, tools=ANTHROPIC_TOOLS)
    events = parse_sse(stream(an_http, body))
    check_anthropic_stream(events)
    blocks = anthropic_blocks(events)
    assert [(b["id"], b["name"], b["partial_json"]) for b in blocks] == OPENAI_TOOL_CALLS
    assert all(b["type"] == "tool_use" and b["input"] == {} for b in blocks)
    fragments = [e.json["delta"]["partial_json"] for e in events if e.name == "content_block_delta"]
    assert len(fragments) > 2 * len(OPENAI_TOOL_CALLS), "arguments are streamed, not buffered"
    assert events[-2].json["delta"]["stop_reason"] == "tool_use"


def test_streamed_reasoning_becomes_thinking_then_text(an_http: httpx.Client, upstreams: Fakes) -> None:
    events = parse_sse(stream(an_http, anthropic_messages("oa-rec-thinking", stream=True)))
    check_anthropic_stream(events)
    blocks = anthropic_blocks(events)
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert blocks[0]["thinking"] == OPENAI_REASONING
    assert blocks[1]["text"] == OPENAI_REASONED_ANSWER
    assert events[-2].json["usage"]["output_tokens"] == 64


def test_streamed_length_finish(an_http: httpx.Client, upstreams: Fakes) -> None:
    events = parse_sse(stream(an_http, anthropic_messages("oa-rec-length", stream=True)))
    check_anthropic_stream(events)
    assert anthropic_blocks(events) == [{"type": "text", "text": TRUNCATED_ANSWER}]
    assert events[-2].json["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("model", ["oa-drop-mid", "fake-cut"])
def test_upstream_failure_mid_stream_ends_with_an_error_event(an_http: httpx.Client, model: str) -> None:
    events = parse_sse(stream(an_http, anthropic_messages(model, stream=True)))
    assert events[0].name == "message_start"
    assert events[-1].name == "error", "a cut stream must end with an explicit error event"
    error = events[-1].json
    assert error["type"] == "error" and error["error"]["type"] == "api_error" and error["error"]["message"]
    assert "message_stop" not in [e.name for e in events], "a cut stream must never look complete"
