"""Same protocol on both sides: the client receives the upstream's bytes, byte for byte.

OpenAI client -> OpenAI upstream and Anthropic client -> Anthropic upstream: non-streaming bodies
and SSE streams equal the recordings exactly; the upstream receives the client's body with only
``model`` rewritten, its own API key and nothing of the client's credentials.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream, GatewayServer, RecordedRequest, recording
from tests.fakes.bodies import ANTHROPIC_TOOLS, OPENAI_TOOLS, anthropic_messages, openai_chat
from tests.fakes.config import ANTHROPIC_KEY, MASTER_KEY, OPENAI_KEY, SECRETS

Fakes = tuple[FakeUpstream, FakeUpstream]
# A client header that must never travel upstream (request bodies never choose upstream headers).
CLIENT_ONLY_HEADERS = {"x-client-secret": "client-private-9d8c7b6a", "cookie": "session=abc123"}


def assert_clean_upstream_request(sent: RecordedRequest, vendor: str) -> None:
    """The upstream got its own key, in its own header, and nothing of the client's secrets."""
    headers = sent.headers
    if vendor == "openai":
        assert headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert "x-api-key" not in headers
    else:
        assert headers["x-api-key"] == ANTHROPIC_KEY
        assert "authorization" not in headers
    foreign = [s for s in SECRETS if s != (OPENAI_KEY if vendor == "openai" else ANTHROPIC_KEY)]
    everything = repr(headers) + sent.body.decode()
    for secret in [*foreign, *CLIENT_ONLY_HEADERS.values()]:
        assert secret not in everything, "a client or foreign secret was forwarded upstream"
    for name in (*CLIENT_ONLY_HEADERS, "api-key"):
        assert name not in headers


@pytest.mark.parametrize("behaviour", ["rec-text", "rec-tools", "rec-thinking", "rec-json", "rec-length"])
def test_openai_response_is_relayed_byte_for_byte(
    oa_http: httpx.Client, upstreams: Fakes, behaviour: str
) -> None:
    extra: dict[str, Any] = (
        {"tools": OPENAI_TOOLS, "parallel_tool_calls": True} if behaviour == "rec-tools" else {}
    )
    if behaviour == "rec-json":
        extra = {"response_format": {"type": "json_object"}}
    body = openai_chat(f"oa-{behaviour}", temperature=0.2, seed=7, **extra)
    response = oa_http.post("/v1/chat/completions", json=body, headers=CLIENT_ONLY_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == recording("openai", f"{behaviour}.json")
    sent = upstreams[0].last()
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {**body, "model": behaviour}, "only the model name may change on the way up"
    assert_clean_upstream_request(sent, "openai")


@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "include_usage"])
@pytest.mark.parametrize("behaviour", ["rec-text", "rec-tools", "rec-thinking", "rec-length"])
def test_openai_stream_is_relayed_byte_for_byte(
    oa_http: httpx.Client, upstreams: Fakes, behaviour: str, include_usage: bool
) -> None:
    extra = {"tools": OPENAI_TOOLS} if behaviour == "rec-tools" else {}
    body = openai_chat(f"oa-{behaviour}", stream=True, include_usage=include_usage, **extra)
    with oa_http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = b"".join(response.iter_raw())
    expected = f"{behaviour}.usage.sse" if include_usage else f"{behaviour}.sse"
    # The gateway always asks the upstream for usage (so every stream is billed exactly) and hides
    # it again from a caller who did not ask: the caller gets exactly what OpenAI would send it.
    assert upstreams[0].served == [f"{behaviour}.usage.sse"]
    assert received == recording("openai", expected)
    assert received.endswith(b"data: [DONE]\n\n")
    assert upstreams[0].last().json == {
        **body,
        "model": behaviour,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }


@pytest.mark.parametrize("behaviour", ["rec-text", "rec-tools", "rec-thinking", "rec-length"])
def test_anthropic_message_is_relayed_byte_for_byte(
    an_http: httpx.Client, upstreams: Fakes, behaviour: str
) -> None:
    extra: dict[str, Any] = {"tools": ANTHROPIC_TOOLS} if behaviour == "rec-tools" else {}
    if behaviour == "rec-thinking":
        extra = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    body = anthropic_messages(f"an-{behaviour}", metadata={"user_id": "u-42"}, **extra)
    headers = {**CLIENT_ONLY_HEADERS, "anthropic-beta": "interleaved-thinking-2025-05-14"}
    response = an_http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 200
    assert response.content == recording("anthropic", f"{behaviour}.json")
    sent = upstreams[1].last()
    assert sent.path == "/v1/messages"
    assert sent.json == {**body, "model": behaviour}
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert_clean_upstream_request(sent, "anthropic")


@pytest.mark.parametrize(
    "behaviour", ["rec-text", "rec-tools", "rec-thinking", "rec-length", "rec-error-mid"]
)
def test_anthropic_stream_is_relayed_byte_for_byte(
    an_http: httpx.Client, upstreams: Fakes, behaviour: str
) -> None:
    extra = {"tools": ANTHROPIC_TOOLS} if behaviour == "rec-tools" else {}
    body = anthropic_messages(f"an-{behaviour}", stream=True, **extra)
    with an_http.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = b"".join(response.iter_raw())
    assert received == recording("anthropic", f"{behaviour}.sse")
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in received, "even the ping keeps its bytes"
    assert_clean_upstream_request(upstreams[1].last(), "anthropic")


def test_anthropic_version_is_set_when_the_client_sends_none(
    gateway: GatewayServer, upstreams: Fakes
) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages",
        json=anthropic_messages("an-rec-text"),
        headers={"x-api-key": MASTER_KEY},
    )
    assert response.status_code == 200
    assert upstreams[1].last().headers["anthropic-version"] == "2023-06-01"


def test_count_tokens_is_asked_of_the_anthropic_upstream(an_http: httpx.Client, upstreams: Fakes) -> None:
    body = {
        "model": "an-rec-text",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": ANTHROPIC_TOOLS,
    }
    response = an_http.post("/v1/messages/count_tokens", json=body)
    assert response.status_code == 200
    assert response.json() == {"input_tokens": 14}
    sent = upstreams[1].last()
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json == {**body, "model": "rec-text"}
    assert_clean_upstream_request(sent, "anthropic")


def test_aliases_reach_the_same_deployment(
    oa_http: httpx.Client, an_http: httpx.Client, upstreams: Fakes
) -> None:
    response = oa_http.post("/v1/chat/completions", json=openai_chat("gpt-4o-mini"))
    assert response.content == recording("openai", "rec-text.json")
    assert response.headers["x-modelyard-deployment"] == "openai/rec-text"
    response = an_http.post("/v1/messages", json=anthropic_messages("claude-sonnet-4-5"))
    assert response.content == recording("anthropic", "rec-text.json")
    assert response.headers["x-modelyard-deployment"] == "anthropic/rec-text"
    assert upstreams[0].last().json["model"] == "rec-text"
    assert upstreams[1].last().json["model"] == "rec-text"
