"""Self-hosted cost model: hourly cost, throughput windows, derived prices, time attribution."""

from __future__ import annotations

import os
import time
from fractions import Fraction

import orjson
import pytest

from modelyard.accounting.cost import request_cost
from modelyard.accounting.money import NANO_PER_USD, PICO_PER_USD, Price
from modelyard.accounting.selfhosted import (
    DEFAULT_USD_PER_VCPU_HOUR,
    HOURS_PER_MONTH,
    SMOLLM2_CPU_PRIOR,
    SMOLLM2_GGUF_BYTES,
    HardwareSpec,
    SelfHostedPricer,
    Throughput,
    ThroughputMeter,
    derive_price,
    hardware_cost_of,
    prior_for_model_bytes,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_usd_per_hour() -> None:
    assert HardwareSpec(usd_per_hour="2.50").hourly_usd() == Fraction(5, 2)
    assert HardwareSpec(usd_per_hour="2.50").hourly_nano() == 2_500_000_000


def test_hourly_cost_from_purchase_and_power() -> None:
    spec = HardwareSpec(purchase_usd="2400", amortization_months=36, power_watts="350", usd_per_kwh="0.15")
    # $2,400 over 36 months of 730.5 hours, plus 0.35 kWh at $0.15
    expected = Fraction(2400) / (36 * Fraction(1461, 2)) + Fraction(35, 100) * Fraction(15, 100)
    assert Fraction(1461, 2) == HOURS_PER_MONTH
    assert spec.hourly_usd() == expected
    assert spec.hourly_nano() == 143_761_693  # $0.09126169... + $0.0525, rounded up
    assert HardwareSpec(power_watts="100").hourly_usd() == Fraction(15, 1000)  # default $0.15/kWh
    assert HardwareSpec(purchase_usd="730.5", amortization_months=1).hourly_usd() == 1


def test_default_is_the_vcpu_estimate_and_never_zero() -> None:
    spec = HardwareSpec()
    assert spec.is_default
    vcpus = os.cpu_count() or 1
    assert spec.hourly_usd() == Fraction(DEFAULT_USD_PER_VCPU_HOUR) * vcpus > 0
    assert HardwareSpec(vcpus=4).hourly_usd() == Fraction(19, 100)
    price = derive_price(spec, SMOLLM2_CPU_PRIOR)
    assert price.input.pico_per_token > 0 and price.output.pico_per_token > 0
    assert request_cost(price, 1, 0) > 0


def test_explicit_zero_is_free() -> None:
    spec = HardwareSpec(usd_per_hour="0")
    assert not spec.is_default
    price = derive_price(spec, SMOLLM2_CPU_PRIOR)
    assert price.input == price.output == Price(0)
    assert hardware_cost_of(spec, 3600.0) == 0
    assert HardwareSpec(purchase_usd="0").hourly_usd() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"usd_per_hour": "1", "purchase_usd": "100"},
        {"usd_per_hour": "1", "power_watts": "100"},
        {"usd_per_hour": "-1"},
        {"amortization_months": 0, "purchase_usd": "1"},
        {"utilization_target": "0"},
        {"utilization_target": "1.5"},
        {"vcpus": 0},
    ],
)
def test_invalid_hardware(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HardwareSpec(**kwargs)  # type: ignore[arg-type]


def test_float_amounts_are_refused() -> None:
    with pytest.raises(TypeError):
        HardwareSpec(usd_per_hour=0.5)  # type: ignore[arg-type]


def test_price_derivation_is_exact_and_rounded_up() -> None:
    spec = HardwareSpec(usd_per_hour="3.60")  # $0.001 per busy second
    price = derive_price(spec, Throughput(prefill_tokens_per_s=1000.0, decode_tokens_per_s=50.0))
    assert price.input.pico_per_token == 1_000_000  # $1 per Mtok
    assert price.output.pico_per_token == 20_000_000  # $20 per Mtok
    assert price.cache_read == price.cache_write == price.input
    odd = derive_price(spec, Throughput(prefill_tokens_per_s=3.0, decode_tokens_per_s=7.0))
    assert odd.input.pico_per_token == -(-(10**9) // 3)  # ceil($0.001 / 3 in pico)
    assert odd.output.pico_per_token * 7 >= 10**9


def test_utilization_spreads_idle_time() -> None:
    busy = HardwareSpec(usd_per_hour="3.60")
    half = HardwareSpec(usd_per_hour="3.60", utilization_target="0.5")
    tp = Throughput(1000.0, 50.0)
    assert derive_price(half, tp).output.pico_per_token == 2 * derive_price(busy, tp).output.pico_per_token
    assert hardware_cost_of(half, 1.0) == 2 * hardware_cost_of(busy, 1.0) == 2_000_000


def test_hardware_cost_of_shares_time_by_concurrency() -> None:
    spec = HardwareSpec(usd_per_hour="3.60")
    assert hardware_cost_of(spec, 10.0) == 10 * NANO_PER_USD // 1000
    assert hardware_cost_of(spec, 10.0, concurrency=4) == 2_500_000
    assert hardware_cost_of(spec, 10.0, concurrency=0.5) == 10_000_000  # at least the request itself
    assert hardware_cost_of(spec, 1e-12) == 1  # rounded up
    with pytest.raises(ValueError):
        hardware_cost_of(spec, -1.0)


def test_meter_without_samples_uses_the_prior() -> None:
    meter = ThroughputMeter()
    assert meter.estimate(SMOLLM2_CPU_PRIOR) is SMOLLM2_CPU_PRIOR


def test_meter_splits_prefill_and_decode_with_ttft() -> None:
    clock = Clock()
    meter = ThroughputMeter(min_samples=3, clock=clock)
    for _ in range(3):
        meter.record(prompt_tokens=1000, completion_tokens=100, latency_s=3.0, ttft_s=1.0)
    estimate = meter.estimate(SMOLLM2_CPU_PRIOR)
    assert estimate.source == "measured" and estimate.samples == 3
    assert estimate.prefill_tokens_per_s == pytest.approx(1000.0)
    assert estimate.decode_tokens_per_s == pytest.approx(50.0)


def test_meter_divides_time_by_concurrency() -> None:
    meter = ThroughputMeter(min_samples=2, clock=Clock())
    for _ in range(2):
        meter.record(1000, 100, latency_s=3.0, ttft_s=1.0, concurrency=4)
    estimate = meter.estimate(SMOLLM2_CPU_PRIOR)
    # four requests at a time: the deployment did four times the tokens per busy second
    assert estimate.prefill_tokens_per_s == pytest.approx(4000.0)
    assert estimate.decode_tokens_per_s == pytest.approx(200.0)


def test_meter_blends_when_ttft_is_unknown() -> None:
    prior = Throughput(prefill_tokens_per_s=100.0, decode_tokens_per_s=10.0)
    meter = ThroughputMeter(min_samples=2, clock=Clock())
    # the prior predicts 1000/100 + 100/10 = 20 s; the requests took 10 s: twice as fast
    meter.record(1000, 100, latency_s=10.0)
    meter.record(1000, 100, latency_s=10.0)
    estimate = meter.estimate(prior)
    assert estimate.source == "blended"
    assert estimate.prefill_tokens_per_s == pytest.approx(200.0)
    assert estimate.decode_tokens_per_s == pytest.approx(20.0)


def test_meter_window_by_time_and_by_count() -> None:
    clock = Clock()
    meter = ThroughputMeter(window_s=600.0, max_samples=4, min_samples=2, clock=clock)
    meter.record(1000, 100, 3.0, 1.0)
    meter.record(1000, 100, 3.0, 1.0)
    clock.now += 601
    assert len(meter) == 0
    assert meter.estimate(SMOLLM2_CPU_PRIOR) is SMOLLM2_CPU_PRIOR
    for prompt in (10, 20, 30, 40, 50, 60):
        meter.record(prompt, 10, 2.0, 1.0)
    assert len(meter) == 4  # the oldest two fell out
    estimate = meter.estimate(SMOLLM2_CPU_PRIOR)
    assert estimate.prefill_tokens_per_s == pytest.approx((30 + 40 + 50 + 60) / 4)


def test_meter_ignores_unmeasurable_requests() -> None:
    meter = ThroughputMeter(clock=Clock())
    meter.record(10, 10, latency_s=0.0)
    meter.record(-1, 10, latency_s=1.0)
    assert len(meter) == 0 and meter.version == 0
    meter.record(10, 10, latency_s=1.0, ttft_s=5.0)  # a TTFT past the end: only the total counts
    assert len(meter) == 1


def test_invalid_meter_and_throughput() -> None:
    with pytest.raises(ValueError):
        ThroughputMeter(window_s=0)
    with pytest.raises(ValueError):
        Throughput(0.0, 1.0)


def test_prior_scales_with_model_size() -> None:
    bigger = prior_for_model_bytes(SMOLLM2_GGUF_BYTES * 40)
    assert bigger.decode_tokens_per_s == pytest.approx(SMOLLM2_CPU_PRIOR.decode_tokens_per_s / 40)
    assert prior_for_model_bytes(1) == SMOLLM2_CPU_PRIOR  # never faster than the reference
    with pytest.raises(ValueError):
        prior_for_model_bytes(0)


def test_pricer_follows_measurements_and_caches() -> None:
    clock = Clock()
    pricer = SelfHostedPricer(
        HardwareSpec(usd_per_hour="3.60"),
        meter=ThroughputMeter(min_samples=2, clock=clock),
        model="local",
        clock=clock,
    )
    before = pricer.price()
    assert before is pricer.price()  # cached
    assert "prior" in before.note and before.model == "local"
    pricer.record(1000, 100, latency_s=3.0, ttft_s=1.0)
    pricer.record(1000, 100, latency_s=3.0, ttft_s=1.0)
    after = pricer.price()
    assert after.input.pico_per_token == 1_000_000
    assert after.output.pico_per_token == 20_000_000
    assert pricer.throughput().source == "measured"
    assert pricer.hardware_cost_of(2.0, concurrency=2) == 1_000_000
    clock.now += 601  # the window empties: back to the prior after the refresh interval
    assert pricer.price() == before


def test_price_stays_consistent_with_time_attribution() -> None:
    """Charging measured requests at derived prices recovers the hardware time they used."""
    clock = Clock()
    spec = HardwareSpec(usd_per_hour="1.80")
    pricer = SelfHostedPricer(spec, meter=ThroughputMeter(min_samples=1, clock=clock), clock=clock)
    requests = [(800, 120, 4.0, 1.0, 2.0), (200, 40, 1.5, 0.25, 1.0), (3000, 300, 10.0, 4.0, 3.0)]
    for prompt, completion, latency, ttft, concurrency in requests:
        pricer.record(prompt, completion, latency, ttft, concurrency)
    price = pricer.price()
    charged = sum(request_cost(price, p, c) for p, c, *_ in requests)
    attributed = sum(pricer.hardware_cost_of(lat, conc) for _, _, lat, _, conc in requests)
    # equal but for upward rounding: < 1 pico per token in the prices, < 1 nano per request in each sum
    assert attributed - len(requests) <= charged <= attributed + len(requests) + 5
    assert Fraction(price.input.pico_per_token, PICO_PER_USD) > 0


@pytest.mark.localmodel
async def test_real_local_model_feeds_the_meter() -> None:
    from modelyard.providers.base import CallContext
    from modelyard.providers.llamacpp import LlamaCppProvider

    provider = LlamaCppProvider(n_ctx=1024)
    pricer = SelfHostedPricer(HardwareSpec(vcpus=2), meter=ThroughputMeter(min_samples=2))
    try:
        for i in range(2):
            body = {
                "messages": [{"role": "user", "content": f"Request {i}: name three colours."}],
                "max_tokens": 8,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            start = time.perf_counter()
            ttft = None
            usage = None
            async for event in provider.stream(body, CallContext(f"calibrate-{i}")):
                if event.data == b"[DONE]":
                    break
                chunk = orjson.loads(event.data)
                usage = chunk.get("usage") or usage
                if ttft is None and chunk.get("choices"):
                    ttft = time.perf_counter() - start
            assert usage is not None
            pricer.record(
                usage["prompt_tokens"], usage["completion_tokens"], time.perf_counter() - start, ttft
            )
    finally:
        await provider.aclose()
    throughput = pricer.throughput()
    assert throughput.source == "measured"
    assert throughput.prefill_tokens_per_s > 0 and throughput.decode_tokens_per_s > 0
    price = pricer.price()
    assert price.input.pico_per_token > 0 and price.output.pico_per_token > 0
