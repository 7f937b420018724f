"""The attempt loop end to end in-process: ChatService → Router → scripted providers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from modelyard.api.asgi import Dialect, RequestContext
from modelyard.config import load_config
from modelyard.errors import GatewayError, InvalidRequestError, UpstreamError, UpstreamTimeoutError
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol
from modelyard.providers.fake import FakeProvider
from modelyard.providers.registry import Registry
from modelyard.redact import Redactor
from modelyard.routing.chat import ChatService
from modelyard.routing.router import Router, ServiceUnavailableError

Behaviour = Callable[[int], None]


class Scripted(Provider):
    """Fails according to ``script(call_number)`` (raise to fail), else answers like the fake echo."""

    protocol = WireProtocol.OPENAI

    def __init__(
        self, name: str, script: Callable[[int], object] | None = None, delay_s: float = 0.0
    ) -> None:
        self.name = name
        self.calls = 0
        self.call_times: list[float] = []
        self.in_flight = 0
        self.peak = 0
        self._script = script
        self._delay = delay_s
        self._fake = FakeProvider()

    async def _enter(self) -> None:
        self.calls += 1
        self.call_times.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self._delay:
                await asyncio.sleep(self._delay)
            if self._script is not None:
                self._script(self.calls)
        finally:
            self.in_flight -= 1

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        await self._enter()
        result = await self._fake.complete({**body, "model": "echo"}, ctx)
        result["model"] = self.name
        return result

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        await self._enter()
        async for event in self._fake.stream({**body, "model": "echo"}, ctx):
            yield event


def fail(status: int, retry_after: str | None = None, code: str | None = None, message: str = "boom") -> None:
    raise UpstreamError(
        message,
        status=status,
        provider="scripted",
        model="m",
        headers={"retry-after": retry_after} if retry_after else None,
        code=code,
    )


def build(yaml: str, providers: dict[str, Provider]) -> ChatService:
    config = load_config(yaml, environ={})
    registry = Registry(config, session=None, redact=Redactor())  # type: ignore[arg-type]
    router = Router(config, registry)
    for group in router.groups():
        for dep in group.deployments:
            dep.target = dataclasses.replace(dep.target, provider=providers[dep.target.upstream_model])
    return ChatService(router, default_anthropic_max_tokens=64)


def ctx() -> RequestContext:
    return RequestContext.new(Dialect.OPENAI, {})


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

TWO = """\
embedded_models: false
models:
  - name: m
    routing: {{strategy: priority, {extra}}}
    deployments:
      - {{provider: fake, model: a}}
      - {{provider: fake, model: b}}
"""


async def test_a_failure_moves_at_once_to_the_other_deployment() -> None:
    a, b = Scripted("a", lambda n: fail(500)), Scripted("b")
    chat = build(TWO.format(extra=""), {"a": a, "b": b})
    c = ctx()
    started = time.monotonic()
    out = orjson.loads(await chat.complete(WireProtocol.OPENAI, BODY, c))
    assert out["model"] == "b" and c.deployment == "fake/b" and c.attempts == 2
    assert time.monotonic() - started < 0.1  # a different deployment: no backoff
    assert (a.calls, b.calls) == (1, 1)


async def test_all_failing_gives_a_clean_error_after_three_attempts_fast() -> None:
    a, b = Scripted("a", lambda n: fail(503)), Scripted("b", lambda n: fail(503))
    chat = build(TWO.format(extra=""), {"a": a, "b": b})
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert info.value.status == 503
    assert a.calls + b.calls == 3
    assert time.monotonic() - started < 1.5


async def test_retry_after_is_honoured_on_a_single_deployment() -> None:
    only = Scripted("a", lambda n: fail(429, retry_after="1") if n == 1 else None)
    chat = build(
        "embedded_models: false\nmodels:\n  - name: m\n    deployments: [{provider: fake, model: a}]\n",
        {"a": only},
    )
    c = ctx()
    await chat.complete(WireProtocol.OPENAI, BODY, c)
    assert only.calls == 2 and c.attempts == 2 and c.route == "retry"
    assert only.call_times[1] - only.call_times[0] >= 0.95


async def test_retry_after_beyond_the_deadline_fails_fast_with_the_header() -> None:
    only = Scripted("a", lambda n: fail(429, retry_after="30"))
    yaml = (
        "embedded_models: false\nmodels:\n  - name: m\n    routing: {deadline_s: 5}\n"
        "    deployments: [{provider: fake, model: a}]\n"
    )
    chat = build(yaml, {"a": only})
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert info.value.status == 429 and info.value.retry_after == "30"
    assert only.calls == 1 and time.monotonic() - started < 0.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_caller_errors_are_never_retried(status: int) -> None:
    a, b = Scripted("a", lambda n: fail(status)), Scripted("b")
    chat = build(TWO.format(extra=""), {"a": a, "b": b})
    with pytest.raises(UpstreamError):
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert (a.calls, b.calls) == (1, 0)


async def test_context_length_error_goes_to_the_context_fallback_only() -> None:
    small = Scripted(
        "small", lambda n: fail(400, code="context_length_exceeded", message="maximum context length")
    )
    big = Scripted("big")
    yaml = """\
embedded_models: false
models:
  - name: m
    routing: {context_fallback: m-large}
    deployments: [{provider: fake, model: small}]
  - name: m-large
    deployments: [{provider: fake, model: big}]
"""
    chat = build(yaml, {"small": small, "big": big})
    c = ctx()
    out = orjson.loads(await chat.complete(WireProtocol.OPENAI, BODY, c))
    assert out["model"] == "big" and small.calls == 1 and c.route == "fallback:m-large"
    # Without one configured: exactly one attempt and the error as it was.
    small2 = Scripted("small", lambda n: fail(400, code="context_length_exceeded"))
    chat2 = build(
        "embedded_models: false\nmodels:\n  - name: m\n    deployments: [{provider: fake, model: small}]\n",
        {"small": small2},
    )
    with pytest.raises(UpstreamError) as info:
        await chat2.complete(WireProtocol.OPENAI, BODY, ctx())
    assert info.value.code == "context_length_exceeded" and small2.calls == 1


async def test_model_fallbacks_after_the_group_fails() -> None:
    primary, backup = Scripted("p", lambda n: fail(503)), Scripted("q")
    yaml = """\
embedded_models: false
models:
  - name: m
    routing: {fallbacks: [other]}
    deployments: [{provider: fake, model: p}]
  - name: other
    deployments: [{provider: fake, model: q}]
"""
    chat = build(yaml, {"p": primary, "q": backup})
    c = ctx()
    out = orjson.loads(await chat.complete(WireProtocol.OPENAI, BODY, c))
    assert out["model"] == "q" and c.route == "fallback:other" and c.attempts <= 3


async def test_breaker_opens_and_half_opens() -> None:
    healthy = {"ok": False}
    a = Scripted("a", lambda n: None if healthy["ok"] else fail(503))
    b = Scripted("b")
    chat = build(TWO.format(extra="breaker: {base_open_s: 0.3}"), {"a": a, "b": b})
    for _ in range(10):
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert a.calls == 5  # opened after 5 consecutive failures, then skipped
    assert b.calls == 10
    healthy["ok"] = True
    await asyncio.sleep(0.35)
    c = ctx()
    await chat.complete(WireProtocol.OPENAI, BODY, c)
    assert a.calls == 6 and c.deployment == "fake/a"  # the half-open probe succeeded: back on the primary


async def test_retry_budget_caps_retries_when_everything_fails() -> None:
    only = Scripted("a", lambda n: fail(503))
    yaml = (
        "embedded_models: false\nmodels:\n  - name: m\n    routing:\n      retry: {budget_min_per_s: 0.2, "
        "budget_ratio: 0.0, backoff_base_s: 0.001, backoff_cap_s: 0.002}\n      breaker: "
        "{consecutive_failures: 1000}\n    deployments: [{provider: fake, model: a}]\n"
    )
    chat = build(yaml, {"a": only})
    for _ in range(20):
        with pytest.raises(GatewayError):
            await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    # 20 first attempts + a budget of 0.2/s × 10 s = 2 retries.
    assert only.calls == 22


SPILL = """\
embedded_models: false
models:
  - name: m
    deployments:
      - {provider: fake, model: local, priority: 0, max_concurrency: 1, max_queue: 0, tags: [local]}
      - {provider: fake, model: cloud, priority: 1}
"""


async def test_spill_over_to_the_cloud_and_back() -> None:
    local, cloud = Scripted("local", delay_s=0.05), Scripted("cloud", delay_s=0.05)
    chat = build(SPILL, {"local": local, "cloud": cloud})
    contexts = [ctx() for _ in range(20)]
    await asyncio.gather(*(chat.complete(WireProtocol.OPENAI, BODY, c) for c in contexts))
    assert local.peak == 1  # never more than its limit in flight
    assert local.calls >= 1 and cloud.calls == 20 - local.calls
    assert {c.route for c in contexts if c.deployment == "fake/cloud"} == {"spill:saturated"}
    # Idle again: traffic returns to the local deployment.
    c = ctx()
    await chat.complete(WireProtocol.OPENAI, BODY, c)
    assert c.deployment == "fake/local" and c.route == "primary"


async def test_saturated_everywhere_is_a_fast_503_with_retry_after() -> None:
    only = Scripted("a", delay_s=0.2)
    yaml = (
        "embedded_models: false\nmodels:\n  - name: m\n    deployments: [{provider: fake, model: a, "
        "max_concurrency: 1, max_queue: 2, max_queue_wait_s: 1}]\n"
    )
    chat = build(yaml, {"a": only})
    results = await asyncio.gather(
        *(chat.complete(WireProtocol.OPENAI, BODY, ctx()) for _ in range(10)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 7 and all(isinstance(e, ServiceUnavailableError) for e in errors)
    assert all(e.retry_after_s > 0 for e in errors if isinstance(e, ServiceUnavailableError))
    assert only.peak == 1


async def test_stream_time_to_first_byte_timeout_fails_over_before_any_byte() -> None:
    slow, fast = Scripted("slow", delay_s=5), Scripted("fast")
    chat = build(
        TWO.format(extra="")
        .replace("model: a}", "model: slow, ttfb_timeout_s: 0.2}")
        .replace("model: b}", "model: fast}"),
        {"slow": slow, "fast": fast},
    )
    c = ctx()
    started = time.monotonic()
    outcome = await chat.stream(WireProtocol.OPENAI, {**BODY, "stream": True}, c)
    chunks = [outcome.first] + [chunk async for chunk in outcome.rest]
    assert time.monotonic() - started < 1.0
    assert c.deployment == "fake/fast" and chunks[-1] == b"data: [DONE]\n\n"


async def test_a_stall_after_the_first_byte_ends_with_an_error_event() -> None:
    class Stalling(Scripted):
        async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
            yield SSEEvent(b'{"id":"x","object":"chat.completion.chunk","choices":[]}')
            await asyncio.sleep(10)
            yield SSEEvent(b"[DONE]")

    stall = Stalling("stall")
    yaml = (
        "embedded_models: false\nmodels:\n  - name: m\n    deployments: [{provider: fake, model: stall, "
        "idle_timeout_s: 0.2}]\n"
    )
    chat = build(yaml, {"stall": stall})
    c = ctx()
    outcome = await chat.stream(WireProtocol.OPENAI, {**BODY, "stream": True}, c)
    started = time.monotonic()
    rest = [chunk async for chunk in outcome.rest]
    assert time.monotonic() - started < 1.0
    assert b"[DONE]" not in b"".join(rest) and b'"error"' in rest[-1]
    assert chat._router.groups()[0].deployments[0].in_flight == 0  # the slot came back


async def test_local_invalid_request_is_not_retried() -> None:
    bad = Scripted("a", lambda n: (_ for _ in ()).throw(InvalidRequestError("no images here")))
    b = Scripted("b")
    chat = build(TWO.format(extra=""), {"a": bad, "b": b})
    with pytest.raises(InvalidRequestError):
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert b.calls == 0


async def test_timeouts_count_and_deadline_covers_all_attempts() -> None:
    slow = Scripted("a", delay_s=2)
    yaml = (
        "embedded_models: false\nmodels:\n  - name: m\n    routing: {deadline_s: 0.3}\n"
        "    deployments: [{provider: fake, model: a}]\n"
    )
    chat = build(yaml, {"a": slow})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    assert time.monotonic() - started < 0.8


HEDGE = TWO.replace(
    "routing: {{strategy: priority, {extra}}}", "routing: {{strategy: priority, hedge_after_s: 0.1}}"
)


async def test_hedge_wins_and_the_slow_loser_is_cancelled_and_recorded() -> None:
    slow, fast = Scripted("a", delay_s=2.0), Scripted("b", delay_s=0.02)
    chat = build(HEDGE.format(), {"a": slow, "b": fast})
    c = ctx()
    started = time.monotonic()
    out = orjson.loads(await chat.complete(WireProtocol.OPENAI, BODY, c))
    assert out["model"] == "b" and time.monotonic() - started < 0.5
    assert c.attempts == 2 and slow.in_flight == 0  # the loser was cancelled, not left running
    group = chat._router.groups()[0]
    assert all(d.in_flight == 0 for d in group.deployments)


async def test_no_hedge_when_the_first_answer_is_quick() -> None:
    a, b = Scripted("a", delay_s=0.01), Scripted("b")
    chat = build(HEDGE.format(), {"a": a, "b": b})
    c = ctx()
    await chat.complete(WireProtocol.OPENAI, BODY, c)
    assert (a.calls, b.calls, c.attempts) == (1, 0, 1)


async def test_hedged_streams_release_the_losing_slot() -> None:
    slow, fast = Scripted("a", delay_s=1.0), Scripted("b")
    chat = build(HEDGE.format(), {"a": slow, "b": fast})
    c = ctx()
    outcome = await chat.stream(WireProtocol.OPENAI, {**BODY, "stream": True}, c)
    chunks = [outcome.first] + [chunk async for chunk in outcome.rest]
    assert c.deployment == "fake/b" and chunks[-1] == b"data: [DONE]\n\n"
    assert all(d.in_flight == 0 for d in chat._router.groups()[0].deployments)


async def test_hedges_come_out_of_the_retry_budget() -> None:
    slow, other = Scripted("a", delay_s=0.15), Scripted("b", delay_s=0.15)
    yaml = HEDGE.format().replace(
        "hedge_after_s: 0.1}", "hedge_after_s: 0.05, retry: {budget_ratio: 0.0, budget_min_per_s: 0.2}}"
    )
    chat = build(yaml, {"a": slow, "b": other})
    for _ in range(6):
        await chat.complete(WireProtocol.OPENAI, BODY, ctx())
    # A budget of 0.2/s × 10 s = 2 hedges, whatever the traffic.
    assert other.calls == 2


async def test_replicas_of_one_upstream_model_fail_over_to_each_other() -> None:
    """Two servers of the same model (same preset/model) are two deployments, not one label."""
    yaml = """\
embedded_models: false
models:
  - name: m
    routing: {strategy: priority}
    deployments:
      - {provider: openai, preset: vllm, model: llama, base_url: "http://10.0.0.1:8000/v1"}
      - {provider: openai, preset: vllm, model: llama, base_url: "http://10.0.0.2:8000/v1"}
"""
    config = load_config(yaml, environ={})
    registry = Registry(config, session=None, redact=Redactor())  # type: ignore[arg-type]
    router = Router(config, registry)
    first, second = router.groups()[0].deployments
    assert (first.label, second.label) == ("vllm/llama@10.0.0.1:8000", "vllm/llama@10.0.0.2:8000")
    failing, healthy = Scripted("a", lambda n: fail(503)), Scripted("b")
    first.target = dataclasses.replace(first.target, provider=failing)
    second.target = dataclasses.replace(second.target, provider=healthy)
    chat = ChatService(router, default_anthropic_max_tokens=64)
    c = ctx()
    await chat.complete(WireProtocol.OPENAI, BODY, c)
    assert (failing.calls, healthy.calls) == (1, 1) and c.deployment == "vllm/llama@10.0.0.2:8000"
