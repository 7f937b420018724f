"""Request costs: exact integer sums, one upward rounding per request, max cost as a true bound."""

from __future__ import annotations

import random
from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.accounting.catalog import ModelPrice, PriceCatalog
from modelyard.accounting.cost import (
    IMAGE_TOKENS_UPPER,
    PER_MESSAGE_OVERHEAD_TOKENS,
    PER_REQUEST_OVERHEAD_TOKENS,
    TOOLS_OVERHEAD_TOKENS,
    TokenUsage,
    cost_of_usage,
    max_cost,
    prompt_upper_tokens,
    request_cost,
    requested_max_tokens,
    usage_from_anthropic,
    usage_from_openai,
)
from modelyard.accounting.money import Price

CATALOG = PriceCatalog.load()
ALL_PRICES = CATALOG.models()
RATE_NAMES = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


def decimal_cost(price: ModelPrice, usage: TokenUsage) -> int:
    """The same cost computed independently, in USD Decimals from $/Mtok, rounded up to nano."""
    rates = price.for_prompt(usage.prompt_tokens)
    usd = sum(
        (
            Decimal(count) * getattr(rates, name).usd_per_mtok / Decimal(10**6)
            for name, count in zip(
                RATE_NAMES,
                (
                    usage.tokens_in,
                    usage.tokens_out,
                    usage.cache_read,
                    usage.cache_write,
                    usage.cache_write_1h,
                ),
                strict=True,
            )
        ),
        Decimal(0),
    )
    return int((usd * 10**9).to_integral_value(rounding=ROUND_CEILING))


def test_worked_examples() -> None:
    mini = CATALOG.lookup("openai", "gpt-4o-mini")
    assert mini is not None
    # 1,000 in at $0.15 + 500 out at $0.60 = $0.00015 + $0.0003 = 450,000 nano, exactly
    assert request_cost(mini, 1000, 500) == 450_000
    # one cached token at $0.075/Mtok is 75 nano; one gpt-4.1-nano cached token 25 nano
    assert request_cost(mini, 0, 0, cache_read=1) == 75
    nano = CATALOG.lookup("openai", "gpt-4.1-nano")
    assert nano is not None
    assert request_cost(nano, 0, 0, cache_read=1) == 25
    # $0.0375/Mtok is 37.5 nano per token: exact in pico, rounded up once per request
    half = ModelPrice.from_per_mtok("0.0375", "0.000001")
    assert request_cost(half, 1, 0) == 38
    assert request_cost(half, 2, 0) == 75
    assert request_cost(half, 0, 1) == 1  # 1 pico still costs a whole nano: never under-charged
    assert request_cost(half, 0, 1000) == 1
    assert request_cost(half, 0, 1001) == 2
    assert request_cost(mini, 0, 0) == 0


def test_anthropic_cache_kinds_and_long_context() -> None:
    sonnet = CATALOG.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    # one token of each kind: $(3 + 15 + 0.3 + 3.75 + 6) per million = 28,050 nano
    assert request_cost(sonnet, 1, 1, 1, 1, cache_write_1h=1) == 28_050
    # above 200K prompt tokens every token is billed at the long-context rates
    assert request_cost(sonnet, 200_000, 1000) == 200_000 * 3000 + 1000 * 15_000
    assert request_cost(sonnet, 200_001, 1000) == 200_001 * 6000 + 1000 * 22_500
    assert request_cost(sonnet, 100_000, 0, cache_read=100_001) == 100_000 * 6000 + 100_001 * 600


def test_a_million_random_requests_sum_exactly() -> None:
    """C9: the sum of 10**6 per-request costs is exact: per price tier, the summed tokens give the
    exact pico total, and per-request rounding adds less than 1 nano each, never drift."""
    rng = random.Random(20261126)
    prices = [p for p in ALL_PRICES if p.long_context is None][:6]
    n = 1_000_000
    ledger = 0
    tokens = {p.model: [0, 0, 0] for p in prices}
    rounding = 0
    for i in range(n):
        price = prices[i % len(prices)]
        t_in, t_out, t_read = (
            rng.randrange(20_000),
            rng.randrange(4_000),
            rng.randrange(3) * rng.randrange(8_000),
        )
        cost = request_cost(price, t_in, t_out, t_read)
        ledger += cost
        summed = tokens[price.model]
        summed[0] += t_in
        summed[1] += t_out
        summed[2] += t_read
        exact_pico = t_in * price.input.pico_per_token + t_out * price.output.pico_per_token
        exact_pico += t_read * price.cache_read.pico_per_token
        rounding += cost * 1000 - exact_pico
        if i % 50_000 == 0:
            assert cost == decimal_cost(price, TokenUsage(t_in, t_out, t_read))
    exact_total_pico = sum(
        s[0] * p.input.pico_per_token + s[1] * p.output.pico_per_token + s[2] * p.cache_read.pico_per_token
        for p in prices
        for s in [tokens[p.model]]
    )
    assert ledger * 1000 - exact_total_pico == rounding
    assert 0 <= rounding < 1000 * n
    # a float ledger of the same run would not say the same thing to the last nano-dollar
    assert isinstance(ledger, int)


usages = st.builds(
    TokenUsage,
    tokens_in=st.integers(0, 400_000),
    tokens_out=st.integers(0, 200_000),
    cache_read=st.integers(0, 400_000),
    cache_write=st.integers(0, 100_000),
    cache_write_1h=st.integers(0, 100_000),
)


@given(st.sampled_from(ALL_PRICES), st.lists(usages, max_size=50))
def test_integer_sums_never_drift(price: ModelPrice, batch: list[TokenUsage]) -> None:
    costs = [cost_of_usage(price, usage) for usage in batch]
    assert costs == [decimal_cost(price, usage) for usage in batch]
    assert sum(costs) == sum(decimal_cost(price, usage) for usage in batch)
    assert all(cost >= 0 for cost in costs)


@st.composite
def outcome(draw: st.DrawFn) -> tuple[ModelPrice, int, int, TokenUsage]:
    price = draw(st.sampled_from(ALL_PRICES))
    upper = draw(st.integers(0, 500_000))
    max_tokens = draw(st.integers(0, 128_000))
    # any split of at most `upper` prompt tokens into the four input kinds
    cuts = sorted(draw(st.lists(st.integers(0, draw(st.integers(0, upper))), min_size=4, max_size=4)))
    kinds = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], cuts[3] - cuts[2]]
    usage = TokenUsage(kinds[0], draw(st.integers(0, max_tokens)), kinds[1], kinds[2], kinds[3])
    return price, upper, max_tokens, usage


@settings(max_examples=300)
@given(outcome())
def test_max_cost_bounds_every_completion(case: tuple[ModelPrice, int, int, TokenUsage]) -> None:
    price, upper, max_tokens, usage = case
    assert usage.prompt_tokens <= upper and usage.tokens_out <= max_tokens
    assert cost_of_usage(price, usage) <= max_cost(price, upper, max_tokens)


def test_max_cost_uses_the_dearest_prompt_rate() -> None:
    haiku = CATALOG.lookup("anthropic", "claude-haiku-4-5")
    assert haiku is not None
    # 1,000 prompt tokens all written with the 1-hour TTL cost $2/M, not the $1/M input rate
    assert max_cost(haiku, 1000, 0) == 2_000_000
    assert request_cost(haiku, 0, 0, cache_write_1h=1000) == 2_000_000
    with pytest.raises(ValueError):
        max_cost(haiku, -1, 0)


def test_usage_parsers() -> None:
    openai = usage_from_openai(
        {"prompt_tokens": 1200, "completion_tokens": 80, "prompt_tokens_details": {"cached_tokens": 1024}}
    )
    assert openai == TokenUsage(tokens_in=176, tokens_out=80, cache_read=1024)
    assert usage_from_openai({"input_tokens": 10, "output_tokens": 2}) == TokenUsage(10, 2)
    assert usage_from_openai(None) == TokenUsage()
    anthropic = usage_from_anthropic(
        {
            "input_tokens": 12,
            "output_tokens": 40,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        }
    )
    assert anthropic == TokenUsage(12, 40, 900, 100, 200)
    assert anthropic.prompt_tokens == 1212
    assert usage_from_anthropic({"input_tokens": None, "output_tokens": True}) == TokenUsage()


def test_prompt_upper_tokens_openai() -> None:
    text = "héllo wörld ✓"  # 17 UTF-8 bytes
    body = {"model": "gpt-4o", "temperature": 0.5, "messages": [{"role": "user", "content": text}]}
    expected = PER_REQUEST_OVERHEAD_TOKENS + PER_MESSAGE_OVERHEAD_TOKENS + len(text.encode())
    expected += len(b"role") + len(b"user") + len(b"content")
    assert prompt_upper_tokens(body, "openai") == expected


def test_prompt_upper_tokens_images_tools_and_system() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1_000_000}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}]}
    upper = prompt_upper_tokens(body, "openai")
    assert IMAGE_TOKENS_UPPER < upper < IMAGE_TOKENS_UPPER + 200  # the base64 is not counted
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {}}}}]
    anthropic = {"system": "be brief", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    without = prompt_upper_tokens({**anthropic, "tools": []}, "anthropic")
    assert prompt_upper_tokens(anthropic, "anthropic") > without + TOOLS_OVERHEAD_TOKENS
    assert without >= PER_REQUEST_OVERHEAD_TOKENS + 2 * PER_MESSAGE_OVERHEAD_TOKENS + len("be brief")
    tool_result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "z" * 5000}],
    }
    assert prompt_upper_tokens({"messages": [tool_result]}, "anthropic") > 5000


texts = st.text(max_size=200)


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), texts), max_size=20))
def test_prompt_upper_tokens_is_at_least_the_bytes(messages: list[tuple[str, str]]) -> None:
    body = {"messages": [{"role": role, "content": text} for role, text in messages]}
    text_bytes = sum(len(text.encode("utf-8", "surrogatepass")) for _, text in messages)
    upper = prompt_upper_tokens(body, "openai")
    assert upper >= text_bytes + PER_MESSAGE_OVERHEAD_TOKENS * len(messages)


def test_prompt_upper_tokens_survives_deep_nesting() -> None:
    deep: object = "x"
    for _ in range(50_000):
        deep = [deep]
    assert prompt_upper_tokens({"messages": [{"role": "user", "content": deep}]}, "openai") > 0


def test_requested_max_tokens() -> None:
    assert requested_max_tokens({"max_completion_tokens": 50, "max_tokens": 9}, "openai", 4096) == 50
    assert requested_max_tokens({"max_tokens": 9}, "openai", 4096) == 9
    assert requested_max_tokens({"max_completion_tokens": 50}, "anthropic", 4096) == 4096
    assert requested_max_tokens({"max_tokens": True}, "anthropic", 7) == 7
    assert requested_max_tokens({"max_output_tokens": 3}, "openai", 7) == 3


def test_zero_price_model_costs_zero() -> None:
    free = ModelPrice.from_per_mtok("0", "0")
    assert request_cost(free, 10**9, 10**9) == 0
    assert max_cost(free, 10**9, 10**9) == 0
    assert free.input == Price(0)
