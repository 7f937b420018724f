"""Cache-read and cache-write tokens: captured from both vendors' usage (also across protocols and
in streams), priced as the vendor prices them (Anthropic's 1-hour writes apart), and put on the
ledger row."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson

from modelyard.accounting.cost import request_cost
from modelyard.accounting.pricebook import PriceBook
from modelyard.api.asgi import Dialect, RequestContext
from modelyard.config import load_config
from modelyard.policy.admission import Admission, Ticket
from modelyard.policy.auth import Principal
from modelyard.policy.ratelimit import MemoryRateLimiter
from modelyard.providers.base import CallContext, JSONDict, Provider, SSEEvent, WireProtocol
from modelyard.providers.registry import Registry
from modelyard.redact import Redactor
from modelyard.routing.chat import ChatService
from modelyard.routing.router import AttemptRecord, Router
from modelyard.routing.usage import Usage, UsageSniffer
from modelyard.store.base import Role, Settlement

ANTHROPIC_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 2500,
    "cache_read_input_tokens": 4000,
    "output_tokens": 7,
    "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 2000},
}
OPENAI_USAGE = {
    "prompt_tokens": 5012,
    "completion_tokens": 7,
    "total_tokens": 5019,
    "prompt_tokens_details": {"cached_tokens": 4992},
}
CONFIG = """\
embedded_models: false
models:
  - name: claude
    deployments:
      - provider: anthropic
        model: claude-sonnet-4-5
        api_key: env:K
        pricing: {input_per_mtok: "3", output_per_mtok: "15", cache_read_per_mtok: "0.30",
                  cache_write_per_mtok: "3.75", cache_write_1h_per_mtok: "7"}
"""


def test_anthropic_usage_keeps_the_one_hour_split() -> None:
    usage = Usage()
    usage.add_anthropic(ANTHROPIC_USAGE)
    assert (usage.tokens_in, usage.tokens_out, usage.cache_read, usage.cache_write, usage.cache_write_1h) == (
        12,
        7,
        4000,
        2500,
        2000,
    )


def test_anthropic_stream_usage_is_sniffed_from_message_start() -> None:
    usage = Usage()
    sniffer = UsageSniffer(WireProtocol.ANTHROPIC, usage)
    start = {"type": "message_start", "message": {"usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}}
    sniffer.feed(SSEEvent(orjson.dumps(start), "message_start"))
    sniffer.feed(SSEEvent(b'{"type":"message_delta","usage":{"output_tokens":7}}', "message_delta"))
    assert (usage.cache_read, usage.cache_write, usage.cache_write_1h, usage.tokens_out) == (
        4000,
        2500,
        2000,
        7,
    )


def test_openai_cached_tokens_are_taken_out_of_the_uncached_input() -> None:
    usage = Usage()
    usage.add_openai(OPENAI_USAGE)
    assert (usage.tokens_in, usage.cache_read, usage.cache_write) == (20, 4992, 0)


class AnthropicWithCache(Provider):
    """An Anthropic-format upstream that reports prompt-cache usage."""

    name = "anthropic"
    protocol = WireProtocol.ANTHROPIC

    async def complete(self, body: JSONDict, ctx: CallContext) -> JSONDict:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }

    async def stream(self, body: JSONDict, ctx: CallContext) -> AsyncIterator[SSEEvent]:
        raise NotImplementedError
        yield  # pragma: no cover


def _router() -> tuple[Router, RuntimeConfigLike]:
    config = load_config(CONFIG, environ={"K": "k"})
    registry = Registry(config, session=None, redact=Redactor())  # type: ignore[arg-type]
    router = Router(config, registry)
    for group in router.groups():
        for dep in group.deployments:
            dep.target = dataclasses.replace(dep.target, provider=AnthropicWithCache())
    return router, config


RuntimeConfigLike = Any


async def test_an_openai_caller_of_an_anthropic_model_keeps_the_cache_writes() -> None:
    """The translated (OpenAI) answer has no cache writes; the usage is read from the native one."""
    router, _ = _router()
    chat = ChatService(router, default_anthropic_max_tokens=64)
    ctx = RequestContext.new(Dialect.OPENAI, {})
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    answer = orjson.loads(await chat.complete(WireProtocol.OPENAI, body, ctx))
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 4000  # the caller's view
    usage = ctx.usage
    assert (usage.tokens_in, usage.cache_read, usage.cache_write, usage.cache_write_1h) == (
        12,
        4000,
        2500,
        2000,
    )


class _Store:
    def __init__(self) -> None:
        self.settled: list[Settlement] = []

    async def settle(self, settlement: Settlement) -> None:
        self.settled.append(settlement)


async def test_settlement_prices_cache_reads_and_both_write_lifetimes() -> None:
    router, config = _router()
    prices = PriceBook(config)
    store = _Store()
    admission = Admission(config, store, MemoryRateLimiter(), prices, router)  # type: ignore[arg-type]
    ctx = RequestContext.new(Dialect.ANTHROPIC, {})
    ctx.usage.add_anthropic(ANTHROPIC_USAGE)
    label = router.group("claude").deployments[0].label
    ctx.attempt_log = [AttemptRecord(label, "ok", 200, 12.5)]
    ticket = Ticket(
        Principal(Role.ADMIN, None, "-"), ctx.request_id, "claude", WireProtocol.ANTHROPIC, 0, 0, None
    )
    await admission.settle(ticket, ctx, "ok")
    (row,) = store.settled[0].rows
    # $3 / $15 / $0.30 / $3.75 / $7 per million tokens = 3000 / 15000 / 300 / 3750 / 7000 nano-$ per token.
    expected = 12 * 3000 + 7 * 15000 + 4000 * 300 + 500 * 3750 + 2000 * 7000
    assert row.cost_nano == expected == ctx.cost_nano
    assert (row.tokens_in, row.tokens_out, row.tokens_cache_read, row.tokens_cache_write) == (
        12,
        7,
        4000,
        2500,
    )
    # Priced at the 5-minute rate for all writes, the request would have cost less: the split matters.
    price = prices.price(label, "anthropic", "claude-sonnet-4-5", False)
    assert price is not None and request_cost(price, 12, 7, 4000, 2500) < expected


def test_a_configured_one_hour_write_price_is_applied() -> None:
    _, config = _router()
    price = PriceBook(config).price("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", False)
    assert price is not None
    # The catalog says $6; the configured $7 wins.
    assert request_cost(price, 0, 0, cache_write_1h=1_000_000) == 7 * 10**9
