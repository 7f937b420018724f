"""LlamaCppProvider against the real embedded SmolLM2 model in a real worker process."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from modelyard.errors import InvalidRequestError, UnsupportedCapabilityError
from modelyard.providers.base import CallContext
from modelyard.providers.llamacpp import LlamaCppProvider

pytestmark = [pytest.mark.localmodel, pytest.mark.asyncio(loop_scope="module")]

CTX = CallContext("req-test")
HI = [{"role": "user", "content": "Say hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def provider() -> AsyncIterator[LlamaCppProvider]:
    llm = LlamaCppProvider(model_name="smollm2", n_ctx=2048, n_threads=2, workers=1)
    await llm.start()
    yield llm
    await llm.aclose()


def _chunks(events: list[Any]) -> list[dict[str, Any]]:
    assert events[-1].data == b"[DONE]"
    return [orjson.loads(e.data) for e in events[:-1]]


async def test_ready_and_complete(provider: LlamaCppProvider) -> None:
    assert await provider.ready()
    body = {"model": "smollm2", "messages": HI, "max_tokens": 16, "temperature": 0}
    response = await provider.complete(body, CTX)
    assert response["id"].startswith("chatcmpl-")
    assert response["object"] == "chat.completion"
    assert response["model"] == "smollm2"
    choice = response["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["message"]["refusal"] is None
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_shape_order_and_usage(provider: LlamaCppProvider) -> None:
    body = {
        "messages": HI,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = _chunks([event async for event in provider.stream(body, CTX)])
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["system_fingerprint"] is None for c in chunks)
    first, *middle, finish, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert middle and all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["usage"] is None for c in [first, *middle, finish])
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 8


async def test_stream_without_usage_has_no_usage_key(provider: LlamaCppProvider) -> None:
    body = {"messages": HI, "max_tokens": 4, "temperature": 0, "stream": True}
    chunks = _chunks([event async for event in provider.stream(body, CTX)])
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] is not None


async def test_json_object(provider: LlamaCppProvider) -> None:
    body = {
        "messages": [{"role": "user", "content": "Give a JSON object describing a cat, with name and age."}],
        "max_tokens": 32,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }
    response = await provider.complete(body, CTX)
    assert isinstance(orjson.loads(response["choices"][0]["message"]["content"]), dict)


async def test_json_schema(provider: LlamaCppProvider) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "days": {"type": "integer"},
            "sunny": {"type": "boolean"},
        },
        "required": ["city", "days", "sunny"],
    }
    body = {
        "messages": [{"role": "user", "content": "Weather in Paris for 3 days?"}],
        "max_tokens": 32,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
    }
    response = await provider.complete(body, CTX)
    data = orjson.loads(response["choices"][0]["message"]["content"])
    assert set(schema["required"]) <= set(data)
    assert isinstance(data["days"], int) and isinstance(data["sunny"], bool)


async def test_forced_tool_call(provider: LlamaCppProvider) -> None:
    body = {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "max_tokens": 32,
        "temperature": 0,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    response = await provider.complete(body, CTX)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert "city" in orjson.loads(call["function"]["arguments"])


async def test_required_tool_call_streamed(provider: LlamaCppProvider) -> None:
    body = {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "max_tokens": 32,
        "temperature": 0,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "stream": True,
    }
    chunks = _chunks([event async for event in provider.stream(body, CTX)])
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(fragments) > 1  # streamed as generated
    assert "city" in orjson.loads("".join(fragments))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_history_does_not_crash(provider: LlamaCppProvider) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    body = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny, 20C"},
        ],
        "tools": [WEATHER_TOOL],
        "max_tokens": 8,
        "temperature": 0,
    }
    response = await provider.complete(body, CTX)
    assert response["choices"][0]["message"]["content"]


async def test_prompt_too_long(provider: LlamaCppProvider) -> None:
    body = {"messages": [{"role": "user", "content": "hello " * 3000}], "max_tokens": 8}
    with pytest.raises(InvalidRequestError) as info:
        await provider.complete(body, CTX)
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.message
    with pytest.raises(InvalidRequestError):  # streaming: raised before the first event
        await anext(provider.stream(body, CTX))


async def test_image_part_rejected(provider: LlamaCppProvider) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    with pytest.raises(UnsupportedCapabilityError, match="does not accept images"):
        await provider.complete({"messages": [{"role": "user", "content": content}]}, CTX)


async def test_count_tokens(provider: LlamaCppProvider) -> None:
    response = await provider.complete({"messages": HI, "max_tokens": 1}, CTX)
    assert await provider.count_tokens({"messages": HI}, CTX) == response["usage"]["prompt_tokens"]


async def test_concurrent_requests_keep_loop_responsive(provider: LlamaCppProvider) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    bodies = [
        {"messages": [{"role": "user", "content": f"Count to {n}"}], "max_tokens": 12, "temperature": 0}
        for n in range(4)
    ]
    responses = await asyncio.gather(*(provider.complete(b, CTX) for b in bodies))
    stop.set()
    await ticker
    assert all(r["choices"][0]["message"]["content"] for r in responses)
    # Generation runs in worker processes: the loop keeps ticking all along. (A generation run on
    # the loop would leave few ticks and stall it for whole generations; a busy machine may delay
    # a tick or two by a CPU time slice, which is not what this checks.)
    assert len(gaps) > 20
    gaps.sort()
    p90 = gaps[int(len(gaps) * 0.9)]
    assert p90 < 0.05, f"event loop ticks late: p90 {p90 * 1000:.0f} ms"
    assert gaps[-1] < 0.5, f"event loop stalled for {gaps[-1] * 1000:.0f} ms"


async def test_closing_stream_early_stops_generation(provider: LlamaCppProvider) -> None:
    body = {"messages": [{"role": "user", "content": "Tell me a long story"}], "max_tokens": 1900}
    stream = provider.stream(body, CTX)
    deltas = 0
    async for event in stream:
        if b'"content":"' in event.data and b'"content":""' not in event.data:
            deltas += 1
            if deltas == 3:
                break
    closed = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    # 1900 tokens take over 20 s on 2 cores; the worker must be free again almost at once.
    response = await provider.complete({"messages": HI, "max_tokens": 2}, CTX)
    assert response["choices"][0]["message"]["content"] is not None
    assert time.monotonic() - closed < 8.0


async def test_queue_limit() -> None:
    llm = LlamaCppProvider(n_ctx=512, workers=1, max_queue=1)
    try:
        await llm.start()
        bodies = [{"messages": HI, "max_tokens": 4} for _ in range(3)]
        results = await asyncio.gather(*(llm.complete(b, CTX) for b in bodies), return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1 and getattr(errors[0], "status", None) == 503
        assert "max_queue" in str(errors[0])
    finally:
        await llm.aclose()


async def test_aclose_leaves_no_children() -> None:
    llm = LlamaCppProvider(n_ctx=512, workers=2)
    await llm.start()
    pids = llm.worker_pids()
    assert len(pids) == 2
    await llm.aclose()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: not even a zombie remains
    assert not await llm.ready()
