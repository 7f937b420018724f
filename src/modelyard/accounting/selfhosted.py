"""The self-hosted cost model: a local model's hardware hour, turned into per-token prices.

**Why per token.** A local deployment costs money by the hour (the machine's price or its
amortised purchase plus electricity), whether it serves one request or fifty. Budgets, the ledger
and cost-aware routing all speak per-token prices, so a local request is priced like a cloud one:

    price per input token  = cost per busy second ÷ measured prefill tokens per busy second
    price per output token = cost per busy second ÷ measured decode tokens per busy second

Charging every request at these prices recovers exactly the cost of the time the hardware was
busy. ``utilization_target`` (default 1) spreads the idle time too: at 0.5 the busy-second cost
doubles, so that a machine busy half the time still pays for its whole hour.

**How concurrency shares the hour.** A deployment's hour is shared by the requests running at the
same time (llama.cpp workers on one machine, a vLLM batch). A request that took ``latency`` seconds
while on average ``c`` requests were in flight used ``latency / c`` busy seconds of the machine.
:class:`ThroughputMeter` therefore measures *aggregate* throughput — tokens per busy second of
the deployment, not of one request — by dividing each request's times by its concurrency. Without
that, a batch of 8 would look 8 times slower per token than it is, and be priced 8 times too high.
:func:`hardware_cost_of` attributes time the same way (busy seconds × cost per second ÷ c).

**Prefill and decode.** Reading a prompt is 10-100× faster per token than writing an answer, so
the two get separate prices. When a request's time to first token (TTFT) is known (streams),
prefill time ≈ TTFT and decode time ≈ latency − TTFT. Non-streaming requests give only a total;
they calibrate the *speed* of the prior while keeping its prefill:decode ratio (a blended rate).

**Before any measurement** the prior applies: :data:`SMOLLM2_CPU_PRIOR`, measured here with the
embedded SmolLM2-135M through :class:`~modelyard.providers.llamacpp.LlamaCppProvider` and halved to
stay conservative (slower assumed ⇒ dearer tokens). For another GGUF,
:func:`prior_for_model_bytes` scales it by file size: on a CPU, both phases are bound by how many
weight bytes must be streamed per token, so throughput falls roughly in proportion.

**Default hardware cost.** With no ``hardware`` configured, the machine is assumed to cost
:data:`DEFAULT_USD_PER_VCPU_HOUR` per vCPU-hour × ``os.cpu_count()``: roughly the on-demand price
of a general-purpose x86 cloud vCPU (2025 list prices of AWS m7i / c7i in us-east-1 run
$0.045-0.050 per vCPU-hour). Never zero; only an explicit ``usd_per_hour: 0`` (or a zero purchase
price without power) makes a local model free.

Every money result is exact: the hourly cost is a :class:`~fractions.Fraction` of USD built from
decimal inputs, prices are whole pico-dollars per token rounded **up**, and attributed hardware
cost is whole nano-dollars rounded up. Throughput is a measurement and may be a float.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from modelyard.accounting.catalog import ModelPrice
from modelyard.accounting.money import NANO_PER_USD, Price, UsdAmount, ceil_fraction, to_decimal

__all__ = [
    "DEFAULT_USD_PER_KWH",
    "DEFAULT_USD_PER_VCPU_HOUR",
    "HOURS_PER_MONTH",
    "SMOLLM2_CPU_PRIOR",
    "SMOLLM2_GGUF_BYTES",
    "HardwareSpec",
    "SelfHostedPricer",
    "Throughput",
    "ThroughputMeter",
    "derive_price",
    "hardware_cost_of",
    "prior_for_model_bytes",
]

DEFAULT_USD_PER_VCPU_HOUR = "0.0475"
"""Assumed cost of one vCPU-hour when no hardware is configured (see the module docstring)."""
DEFAULT_USD_PER_KWH = "0.15"
"""Electricity price when ``power_watts`` is given without ``usd_per_kwh`` (about the 2025 US
commercial average)."""
HOURS_PER_MONTH = Fraction(365 * 24 + 6, 12)  # 730.5: a Julian year's month
SECONDS_PER_HOUR = 3600

# Calibration of the embedded model (SmolLM2-135M-Instruct Q4_1, llama.cpp through
# LlamaCppProvider, 1 worker, n_ctx 8192, temperature 0, 128 output tokens) on the 2-vCPU
# development machine, 2026-11-26, while other test suites shared the CPUs (load average 2.3-4.4).
# Unique prompts, so that llama.cpp's prefix cache could not help:
#   prefill: 155-token prompt 119 and 378 tok/s; 455 tokens 68 and 50; 1,555 tokens 39 and 55
#            (median 61; attention cost grows with the prompt on a CPU, and this build runs
#            prefill without the repacked AVX-512 weights, see _llamacpp_worker).
#   decode:  47, 47, 42, 24, 30, 30 tok/s (median 36; slower after long prompts).
# A first run with repeated prompts gave 678 / 294 / 60 tok/s prefill for 134 / 834 / 3,034 tokens
# cold, and 5,600-58,000 tok/s when the prompt came from the prefix cache.
# The prior halves the medians (prefill 30, decode 15 tok/s): slower assumed = dearer tokens, and
# real measurements replace it after ``min_samples`` requests.
SMOLLM2_GGUF_BYTES = 98_362_432
"""Size of the embedded SmolLM2-135M-Instruct.Q4_1.gguf, the reference for size scaling."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """A deployment's tokens per *busy* second, per phase."""

    prefill_tokens_per_s: float
    """Prompt tokens read per busy second."""
    decode_tokens_per_s: float
    """Output tokens written per busy second."""
    source: Literal["prior", "blended", "measured"] = "prior"
    """``measured``: from TTFT-split samples; ``blended``: the prior's ratio scaled to measured
    totals; ``prior``: no (or too few) measurements."""
    samples: int = 0
    """Requests the figure rests on."""

    def __post_init__(self) -> None:
        if not (self.prefill_tokens_per_s > 0 and self.decode_tokens_per_s > 0):
            raise ValueError("throughput must be positive (tokens per second)")


SMOLLM2_CPU_PRIOR = Throughput(prefill_tokens_per_s=30.0, decode_tokens_per_s=15.0)
"""Conservative prior for the embedded model on a small CPU machine (calibration above)."""


def prior_for_model_bytes(model_bytes: int, reference: Throughput = SMOLLM2_CPU_PRIOR) -> Throughput:
    """The prior for a GGUF of ``model_bytes`` bytes: ``reference`` × (SmolLM2 size ÷ size).

    Never faster than the reference (a smaller file does not make the prior cheaper).
    """
    if model_bytes <= 0:
        raise ValueError("model_bytes must be positive")
    factor = min(1.0, SMOLLM2_GGUF_BYTES / model_bytes)
    return Throughput(
        prefill_tokens_per_s=reference.prefill_tokens_per_s * factor,
        decode_tokens_per_s=reference.decode_tokens_per_s * factor,
    )


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """What a self-hosted deployment's hardware costs (all amounts decimal strings or Decimals).

    Give either ``usd_per_hour``, or a purchase (``purchase_usd`` over ``amortization_months``)
    and/or power (``power_watts`` at ``usd_per_kwh``). Nothing at all: the vCPU estimate
    (:data:`DEFAULT_USD_PER_VCPU_HOUR` × ``vcpus``).
    """

    usd_per_hour: UsdAmount | None = None
    """All-in cost per hour (rental, cloud instance); ``0`` makes the deployment free. Default: none."""
    purchase_usd: UsdAmount | None = None
    """Purchase price of the machine, spread over ``amortization_months``. Default: none."""
    amortization_months: int = 36
    """Months over which ``purchase_usd`` is written off (default 36)."""
    power_watts: UsdAmount | None = None
    """Average power draw under load, watts. Default: none (no electricity cost)."""
    usd_per_kwh: UsdAmount = DEFAULT_USD_PER_KWH
    """Electricity price, USD per kWh (default 0.15)."""
    utilization_target: UsdAmount = "1"
    """Expected busy share of the hour, in (0, 1]; below 1, requests also carry idle time (default 1)."""
    vcpus: int | None = None
    """vCPUs for the default estimate (default: ``os.cpu_count()``, at least 1)."""

    def __post_init__(self) -> None:
        if self.usd_per_hour is not None and (self.purchase_usd is not None or self.power_watts is not None):
            raise ValueError(
                "hardware: give usd_per_hour, or purchase_usd / power_watts, not both: usd_per_hour "
                "is already the all-in hourly cost"
            )
        if self.amortization_months < 1:
            raise ValueError("hardware.amortization_months must be at least 1")
        for name in ("usd_per_hour", "purchase_usd", "power_watts", "usd_per_kwh"):
            value = getattr(self, name)
            if value is not None and to_decimal(value, what=f"hardware.{name}") < 0:
                raise ValueError(f"hardware.{name} cannot be negative")
        utilization = to_decimal(self.utilization_target, what="hardware.utilization_target")
        if not 0 < utilization <= 1:
            raise ValueError("hardware.utilization_target must be in (0, 1], e.g. 0.5 for half-busy")
        if self.vcpus is not None and self.vcpus < 1:
            raise ValueError("hardware.vcpus must be at least 1")

    @property
    def is_default(self) -> bool:
        """True when nothing about the cost was configured (the vCPU estimate applies)."""
        return self.usd_per_hour is None and self.purchase_usd is None and self.power_watts is None

    @property
    def utilization(self) -> Fraction:
        """``utilization_target`` as an exact fraction."""
        return Fraction(to_decimal(self.utilization_target))

    def hourly_usd(self) -> Fraction:
        """The hardware's cost per wall-clock hour in USD, exactly."""
        if self.usd_per_hour is not None:
            return Fraction(to_decimal(self.usd_per_hour))
        if self.is_default:
            vcpus = self.vcpus or os.cpu_count() or 1
            return Fraction(to_decimal(DEFAULT_USD_PER_VCPU_HOUR)) * vcpus
        hourly = Fraction(0)
        if self.purchase_usd is not None:
            hourly += Fraction(to_decimal(self.purchase_usd)) / (self.amortization_months * HOURS_PER_MONTH)
        if self.power_watts is not None:
            kwh_per_hour = Fraction(to_decimal(self.power_watts)) / 1000
            hourly += kwh_per_hour * Fraction(to_decimal(self.usd_per_kwh))
        return hourly

    def hourly_nano(self) -> int:
        """:meth:`hourly_usd` in nano-dollars, rounded up (for display and reports)."""
        return ceil_fraction(self.hourly_usd() * NANO_PER_USD)

    def usd_per_busy_second(self) -> Fraction:
        """What one busy second must recover: hourly cost ÷ 3600 ÷ utilization target."""
        return self.hourly_usd() / SECONDS_PER_HOUR / self.utilization


def derive_price(hardware: HardwareSpec, throughput: Throughput, *, model: str = "") -> ModelPrice:
    """Per-token prices from the hardware's busy-second cost and a throughput (rounded up).

    Cache reads and writes cost as much as input: llama.cpp's prefix cache is already reflected
    in the measured prefill speed.
    """
    per_second = hardware.usd_per_busy_second()
    input_price = Price.ceil_from_usd_per_token(per_second / Fraction(throughput.prefill_tokens_per_s))
    output_price = Price.ceil_from_usd_per_token(per_second / Fraction(throughput.decode_tokens_per_s))
    return ModelPrice(
        input=input_price,
        output=output_price,
        cache_read=input_price,
        cache_write=input_price,
        cache_write_1h=input_price,
        provider="self-hosted",
        model=model,
        note=(
            f"hardware ${float(hardware.hourly_usd()):.4f}/h at {throughput.prefill_tokens_per_s:.1f} "
            f"prefill / {throughput.decode_tokens_per_s:.1f} decode tok/s ({throughput.source}, "
            f"{throughput.samples} samples)"
        ),
    )


def hardware_cost_of(hardware: HardwareSpec, seconds_busy: float, concurrency: float = 1.0) -> int:
    """Nano-dollars of hardware time for ``seconds_busy`` seconds shared by ``concurrency`` requests.

    Rounded up. Time-based attribution, for requests without token counts (or to cross-check).
    """
    if seconds_busy < 0:
        raise ValueError("seconds_busy cannot be negative")
    share = Fraction(seconds_busy) / Fraction(max(concurrency, 1.0))
    return ceil_fraction(share * hardware.usd_per_busy_second() * NANO_PER_USD)


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    prompt_tokens: int
    completion_tokens: int
    busy_s: float
    prefill_s: float | None
    decode_s: float | None


class ThroughputMeter:
    """Rolling throughput of one deployment from its completed requests.

    Keeps the requests of the last ``window_s`` seconds (default 600), at most ``max_samples``
    (default 1,000). Not thread-safe: call it from the event loop. ``clock`` (default
    ``time.monotonic``) is injectable for tests.
    """

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        max_samples: int = 1000,
        min_samples: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_samples < 1 or min_samples < 1:
            raise ValueError("window_s must be positive; max_samples and min_samples at least 1")
        self.window_s = window_s
        self.min_samples = min_samples
        self._clock = clock
        self._samples: deque[_Sample] = deque(maxlen=max_samples)
        self.version = 0
        """Bumped on every record, so that callers can cache what they derive."""

    def record(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        ttft_s: float | None = None,
        concurrency: float = 1.0,
    ) -> None:
        """One completed request: its tokens, wall time, time to first token (streams) and the
        average number of requests in flight on the deployment while it ran (at least 1)."""
        if prompt_tokens < 0 or completion_tokens < 0 or not latency_s > 0:
            return  # nothing measurable (a failed call, a zero-time cache answer)
        share = max(concurrency, 1.0)
        prefill_s = decode_s = None
        if ttft_s is not None and 0 < ttft_s < latency_s:
            prefill_s = ttft_s / share
            decode_s = (latency_s - ttft_s) / share
        self._samples.append(
            _Sample(self._clock(), prompt_tokens, completion_tokens, latency_s / share, prefill_s, decode_s)
        )
        self.version += 1

    def _live(self) -> list[_Sample]:
        horizon = self._clock() - self.window_s
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()
        return list(self._samples)

    def __len__(self) -> int:
        return len(self._live())

    def estimate(self, prior: Throughput) -> Throughput:
        """Measured throughput when the window holds enough data, else ``prior`` (see module doc)."""
        samples = self._live()
        split = [s for s in samples if s.prefill_s is not None and s.decode_s is not None]
        prefill_tokens = sum(s.prompt_tokens for s in split)
        decode_tokens = sum(s.completion_tokens for s in split)
        prefill_s = sum(s.prefill_s or 0.0 for s in split)
        decode_s = sum(s.decode_s or 0.0 for s in split)
        if len(split) >= self.min_samples and prefill_tokens and decode_tokens:
            return Throughput(prefill_tokens / prefill_s, decode_tokens / decode_s, "measured", len(split))
        if len(samples) >= self.min_samples:
            predicted = sum(
                s.prompt_tokens / prior.prefill_tokens_per_s + s.completion_tokens / prior.decode_tokens_per_s
                for s in samples
            )
            busy = sum(s.busy_s for s in samples)
            if predicted > 0 and busy > 0:
                speedup = predicted / busy
                return Throughput(
                    prior.prefill_tokens_per_s * speedup,
                    prior.decode_tokens_per_s * speedup,
                    "blended",
                    len(samples),
                )
        return prior


class SelfHostedPricer:
    """Prices one self-hosted deployment: hardware cost ÷ measured throughput.

    ``hardware`` (default: the vCPU estimate), ``prior`` throughput before measurements (default
    :data:`SMOLLM2_CPU_PRIOR`), ``meter`` (default: a fresh :class:`ThroughputMeter`),
    ``refresh_s`` (default 1 s): the derived price is recomputed at most this often.
    """

    def __init__(
        self,
        hardware: HardwareSpec | None = None,
        *,
        prior: Throughput = SMOLLM2_CPU_PRIOR,
        meter: ThroughputMeter | None = None,
        model: str = "",
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hardware = hardware if hardware is not None else HardwareSpec()
        self.prior = prior
        self.meter = meter if meter is not None else ThroughputMeter(clock=clock)
        self.model = model
        self._refresh_s = refresh_s
        self._clock = clock
        self._cached: tuple[int, float, ModelPrice] | None = None

    def record(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        ttft_s: float | None = None,
        concurrency: float = 1.0,
    ) -> None:
        """Feed one completed request to the meter (see :meth:`ThroughputMeter.record`)."""
        self.meter.record(prompt_tokens, completion_tokens, latency_s, ttft_s, concurrency)

    def throughput(self) -> Throughput:
        """The throughput prices are derived from now."""
        return self.meter.estimate(self.prior)

    def price(self) -> ModelPrice:
        """Current per-token prices (cached for ``refresh_s`` unless new requests were recorded)."""
        now = self._clock()
        cached = self._cached
        if cached is not None and cached[0] == self.meter.version and now - cached[1] < self._refresh_s:
            return cached[2]
        price = derive_price(self.hardware, self.throughput(), model=self.model)
        self._cached = (self.meter.version, now, price)
        return price

    def hardware_cost_of(self, seconds_busy: float, concurrency: float = 1.0) -> int:
        """Nano-dollars of this deployment's hardware time (see :func:`hardware_cost_of`)."""
        return hardware_cost_of(self.hardware, seconds_busy, concurrency)
