"""Mid-stream failover: a text stream cut after its first byte continues on another deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from modelyard.errors import UpstreamConnectionError
from modelyard.providers.base import CallContext, JSONDict, SSEEvent, WireProtocol
from modelyard.providers.sse import SSEDecoder
from tests.unit.routing.test_router import BODY, Scripted, build, ctx

CONFIG = """\
embedded_models: false
models:
  - name: m
    routing: {strategy: priority, mid_stream_failover: true}
    deployments:
      - {provider: fake, model: a}
      - {provider: fake, model: b}
"""


def chunk(delta: dict[str, object], finish: str | None = None, cid: str = "chatcmpl-a") -> SSEEvent:
    return SSEEvent(
        orjson.dumps(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "x",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )
    )


class Cutting(Scripted):
    """Sends 'Hello wor' and drops the connection."""

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        self.calls += 1
        yield chunk({"role": "assistant", "content": ""})
        yield chunk({"content": "Hello "})
        yield chunk({"content": "wor"})
        raise UpstreamConnectionError("connection reset", provider="a", model="a")


class Continuing(Scripted):
    """Checks it was asked to continue, then finishes the sentence."""

    seen: list[JSONDict]

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        self.calls += 1
        self.seen = body["messages"]
        yield chunk({"role": "assistant", "content": ""}, cid="chatcmpl-b")
        yield chunk({"content": "ld!"}, cid="chatcmpl-b")
        yield chunk({}, "stop", cid="chatcmpl-b")
        yield SSEEvent(
            orjson.dumps(
                {
                    "id": "chatcmpl-b",
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                }
            )
        )
        yield SSEEvent(b"[DONE]")


def events(raw: bytes) -> list[SSEEvent]:
    return SSEDecoder().feed(raw)


async def run(client: WireProtocol, body: JSONDict) -> tuple[bytes, Cutting, Continuing, object]:
    a, b = Cutting("a"), Continuing("b")
    chat = build(CONFIG, {"a": a, "b": b})
    c = ctx()
    outcome = await chat.stream(client, {**body, "stream": True}, c)
    raw = outcome.first + b"".join([part async for part in outcome.rest])
    return raw, a, b, c


async def test_openai_stream_continues_on_the_next_deployment() -> None:
    raw, _a, b, c = await run(WireProtocol.OPENAI, BODY)
    evs = events(raw)
    assert evs[-1].data == b"[DONE]" and b'"error"' not in raw
    chunks = [orjson.loads(e.data) for e in evs[:-1]]
    text = "".join((ch["choices"][0]["delta"].get("content") or "") for ch in chunks if ch["choices"])
    assert text == "Hello world!"
    assert {ch["id"] for ch in chunks} == {"chatcmpl-a"}  # one stream as far as the caller can tell
    assert sum(1 for ch in chunks if ch["choices"] and "role" in ch["choices"][0]["delta"]) == 1
    assert b.seen[-2] == {"role": "assistant", "content": "Hello wor"} and b.seen[-1]["role"] == "user"
    assert c.route == "failover:fake/b" and [x.outcome for x in c.attempt_log] == ["cut", "ok"]
    assert c.outcome == "ok"


async def test_anthropic_stream_continues_with_a_prefill() -> None:
    body = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    raw, _a, b, _c = await run(WireProtocol.ANTHROPIC, body)
    evs = events(raw)
    kinds = [e.event for e in evs]
    assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop" and "error" not in kinds
    text = "".join(
        orjson.loads(e.data)["delta"].get("text", "") for e in evs if e.event == "content_block_delta"
    )
    assert text == "Hello world!"
    starts = [orjson.loads(e.data)["index"] for e in evs if e.event == "content_block_start"]
    stops = [orjson.loads(e.data)["index"] for e in evs if e.event == "content_block_stop"]
    assert starts == [0] and stops == [0]
    assert b.seen[-1] == {"role": "assistant", "content": "Hello wor"}  # translated upstream: continue turn


async def test_no_failover_when_off_or_for_tool_streams() -> None:
    a, b = Cutting("a"), Continuing("b")
    chat = build(CONFIG.replace(", mid_stream_failover: true", ""), {"a": a, "b": b})
    outcome = await chat.stream(WireProtocol.OPENAI, {**BODY, "stream": True}, ctx())
    raw = outcome.first + b"".join([part async for part in outcome.rest])
    assert b'"error"' in raw and b"[DONE]" not in raw and b.calls == 0
    chat = build(CONFIG, {"a": Cutting("a"), "b": (b2 := Continuing("b"))})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    outcome = await chat.stream(WireProtocol.OPENAI, {**BODY, "stream": True, "tools": tools}, ctx())
    raw = outcome.first + b"".join([part async for part in outcome.rest])
    assert b'"error"' in raw and b2.calls == 0
