"""Each context policy through a real gateway and the official SDKs: the local windows are 1,024
tokens of the real embedded model (its own tokenizer counts); cloud models are fakes."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from modelyard.providers.base import WireProtocol
from modelyard.routing.context.counting import GGUFCounter
from modelyard.routing.context.tokenizers import GGUFTokenizer
from modelyard.translate import openai_request_to_anthropic
from tests.context.conftest import gguf_path
from tests.context.conversation import conversation, turn_text
from tests.fakes import FakeUpstream, GatewayServer
from tests.fakes.config import MASTER_KEY

pytestmark = pytest.mark.localmodel


def _openai(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)


def _anthropic(gateway: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0, timeout=120)


def test_trim_serves_a_long_conversation_within_the_window(context_gateway: GatewayServer) -> None:
    messages: Any = conversation(30)
    raw = _openai(context_gateway).chat.completions.with_raw_response.create(
        model="local", messages=messages, max_tokens=4, temperature=0
    )
    reply = raw.parse()
    header = raw.headers["x-modelyard-context"]
    assert header.startswith("trimmed:") and int(header.split(":")[1]) > 0
    assert reply.usage is not None
    # The local model saw at most the window less the reserve: counted by its own tokenizer.
    assert reply.usage.prompt_tokens <= 512 - 4


def test_short_requests_skip_counting_and_fit(context_gateway: GatewayServer) -> None:
    raw = _openai(context_gateway).chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert raw.headers["x-modelyard-context"] == "fit"


def test_reject_names_the_sizes_in_the_openai_shape(context_gateway: GatewayServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _openai(context_gateway).chat.completions.create(
            model="small-reject", messages=conversation(30), max_tokens=100
        )
    error = caught.value
    assert error.status_code == 400 and error.code == "context_length_exceeded"
    assert error.param == "messages"
    message = str(error.body["message"])  # type: ignore[index]
    assert "100 are reserved" in message and "the window is 512 tokens" in message
    counter = GGUFCounter(GGUFTokenizer(gguf_path()))
    exact = counter.request({"messages": conversation(30)}, WireProtocol.OPENAI)
    assert f"the prompt is {exact} tokens" in message


def test_reject_names_the_sizes_in_the_anthropic_shape(context_gateway: GatewayServer) -> None:
    body = openai_request_to_anthropic({"messages": conversation(30)}, default_max_tokens=100)
    with pytest.raises(anthropic.BadRequestError) as caught:
        _anthropic(context_gateway).messages.create(
            model="small-reject", system=body["system"], messages=body["messages"], max_tokens=100
        )
    error = caught.value
    assert error.status_code == 400
    assert error.body["type"] == "error"  # type: ignore[index]
    assert error.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "the window is 512 tokens" in error.body["error"]["message"]  # type: ignore[index]


def test_fallback_reaches_the_larger_model_before_calling_the_small_one(
    context_gateway: GatewayServer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    _fake_openai, fake_anthropic = upstreams
    raw = _openai(context_gateway).chat.completions.with_raw_response.create(
        model="small-fallback", messages=conversation(30), max_tokens=50
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-modelyard-context"] == "fallback:big"
    assert raw.headers["x-modelyard-deployment"] == "anthropic/rec-text"
    sent = fake_anthropic.last().json
    assert sent["messages"][-1]["content"] in (
        conversation(30)[-1]["content"],
        [{"type": "text", "text": conversation(30)[-1]["content"]}],
    )
    assert len(sent["messages"]) == len(conversation(30)) - 1  # nothing trimmed: the system is top-level


def test_fallback_also_for_streams(
    context_gateway: GatewayServer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    _fake_openai, fake_anthropic = upstreams
    with _openai(context_gateway).chat.completions.with_streaming_response.create(
        model="small-fallback", messages=conversation(30), max_tokens=50, stream=True
    ) as response:
        assert response.headers["x-modelyard-context"] == "fallback:big"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text
    assert fake_anthropic.last().json["stream"] is True


def test_fallback_without_a_larger_model_says_so(context_gateway: GatewayServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _openai(context_gateway).chat.completions.create(model="small-nofallback", messages=conversation(30))
    assert "No larger-context model holds it" in str(caught.value)


def test_a_failing_summarizer_falls_back_to_trim_and_says_so(
    context_gateway: GatewayServer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, _ = upstreams
    raw = _openai(context_gateway).chat.completions.with_raw_response.create(
        model="chat-sum-broken", messages=conversation(24), max_tokens=32
    )
    header = raw.headers["x-modelyard-context"]
    assert header.startswith("trimmed:") and header.endswith(";summarizer-failed"), header
    sent = fake_openai.last().json["messages"]
    assert sent[0] == conversation(24)[0] and sent[-1] == conversation(24)[-1]
    assert not any("Summary of the earlier" in str(m.get("content")) for m in sent)


def test_summarize_calls_the_local_model_once_per_prefix_and_reuses_it(
    context_gateway: GatewayServer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    fake_openai, _ = upstreams
    service = context_gateway.app.state.context  # type: ignore[union-attr]
    assert service is not None
    calls_before = service.summary_calls
    client = _openai(context_gateway)
    first = conversation(24)
    raw = client.chat.completions.with_raw_response.create(model="chat-sum", messages=first, max_tokens=32)
    header = raw.headers["x-modelyard-context"]
    assert header.startswith("summarized:") and not header.endswith(":cached"), header
    assert service.summary_calls == calls_before + 1
    # The summarizer's call is a request of its own, with its own ledger row.
    summary_id = raw.headers["x-request-id"] + "-summary"
    rows: list[Any] = []
    for _ in range(100):
        rows = httpx.get(
            context_gateway.url + "/admin/ledger",
            params={"request_id": summary_id},
            headers={"authorization": f"Bearer {MASTER_KEY}"},
        ).json()["data"]
        if rows:
            break
        time.sleep(0.05)
    assert [(r["deployment"], r["status"]) for r in rows] == [
        ("llamacpp/SmolLM2-135M-Instruct.Q4_1.gguf", "ok")
    ]
    assert rows[0]["tokens_out"] > 0
    sent = fake_openai.last().json["messages"]
    assert sent[0] == first[0]
    assert sent[1]["role"] == "system"
    assert sent[1]["content"].startswith("Summary of the earlier conversation")
    assert sent[-1] == first[-1]
    # The next turn shares the prefix: the cached summary is reused, the model is not called again.
    second = [
        *first,
        {"role": "assistant", "content": turn_text(99, "assistant")},
        {"role": "user", "content": "And after that?"},
    ]
    raw = client.chat.completions.with_raw_response.create(model="chat-sum", messages=second, max_tokens=32)
    assert raw.headers["x-modelyard-context"] == header + ":cached"
    assert service.summary_calls == calls_before + 1
    again = fake_openai.last().json["messages"]
    assert again[1] == sent[1] and again[-1] == second[-1]
    assert orjson.dumps(again).count(b"Summary of the earlier conversation") == 1
