"""The price of every deployment: the shipped catalog (with config overrides) for cloud models,
hardware cost ÷ measured throughput for self-hosted ones."""

from __future__ import annotations

import logging
from typing import Any

from modelyard.accounting.catalog import ModelPrice, PriceCatalog, PriceOverride
from modelyard.accounting.selfhosted import (
    SMOLLM2_CPU_PRIOR,
    HardwareSpec,
    ThroughputMeter,
    derive_price,
)
from modelyard.config.load import RuntimeConfig
from modelyard.config.schema import HardwareConfig, PricingConfig

log = logging.getLogger("modelyard.pricing")


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def hardware_spec(config: HardwareConfig | None) -> HardwareSpec:
    if config is None:
        return HardwareSpec()
    return HardwareSpec(
        usd_per_hour=_money(config.usd_per_hour),
        purchase_usd=_money(config.purchase_usd),
        amortization_months=config.amortization_months,
        power_watts=_money(config.power_watts),
        usd_per_kwh=str(config.usd_per_kwh),
        utilization_target=str(config.utilization_target),
        vcpus=config.vcpus,
    )


class PriceBook:
    """Deployment label → price. Local prices follow the measured throughput."""

    def __init__(self, config: RuntimeConfig) -> None:
        overrides: list[PriceOverride] = []
        self._pricing: dict[str, tuple[str, str, PricingConfig]] = {}
        for model in config.models:
            for dep in model.deployments:
                pricing: PricingConfig | None = getattr(dep, "pricing", None)
                upstream = getattr(dep, "model", None)
                if pricing is not None and upstream:
                    overrides.append(
                        PriceOverride(
                            provider=dep.provider,
                            model=str(upstream),
                            input_per_mtok=_money(pricing.input_per_mtok),
                            output_per_mtok=_money(pricing.output_per_mtok),
                            cache_read_per_mtok=_money(pricing.cache_read_per_mtok),
                            cache_write_per_mtok=_money(pricing.cache_write_per_mtok),
                            cache_write_1h_per_mtok=_money(pricing.cache_write_1h_per_mtok),
                        )
                    )
        self.catalog = PriceCatalog.load(overrides)
        self._local: dict[str, tuple[HardwareSpec, ThroughputMeter]] = {}
        self._derived: dict[str, tuple[int, ModelPrice]] = {}
        self.unpriced: set[str] = set()
        self._cloud: dict[tuple[str, str], ModelPrice | None] = {}

    def register_local(self, label: str, hardware: HardwareConfig | None) -> None:
        if label not in self._local:
            self._local[label] = (hardware_spec(hardware), ThroughputMeter())

    def price(self, label: str, provider: str, upstream_model: str, local: bool) -> ModelPrice | None:
        """The deployment's current price; None (free) for an unknown cloud model (logged once)."""
        if local:
            spec, meter = self._local[label]
            cached = self._derived.get(label)
            if cached is not None and cached[0] == meter.version:
                return cached[1]
            derived = derive_price(spec, meter.estimate(SMOLLM2_CPU_PRIOR), model=label)
            self._derived[label] = (meter.version, derived)
            return derived
        key = (provider, upstream_model)
        if key in self._cloud:
            return self._cloud[key]
        price = self._cloud[key] = self.catalog.lookup(provider, upstream_model)
        if price is None and label not in self.unpriced and provider != "fake":
            self.unpriced.add(label)
            log.warning(
                "no price for %s (model %r): its requests are recorded at $0; add `pricing:` to the "
                "deployment in the config",
                label,
                upstream_model,
            )
        return price

    def record_local(
        self,
        label: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        ttft_s: float | None,
        concurrency: float,
    ) -> None:
        entry = self._local.get(label)
        if entry is not None:
            entry[1].record(prompt_tokens, completion_tokens, latency_s, ttft_s, concurrency)

    def local_state(self) -> dict[str, dict[str, Any]]:
        """Per local deployment: hourly cost, measured throughput and derived prices (for reports)."""
        out = {}
        for label, (spec, meter) in self._local.items():
            throughput = meter.estimate(SMOLLM2_CPU_PRIOR)
            price = derive_price(spec, throughput, model=label)
            out[label] = {
                "usd_per_hour": float(spec.hourly_usd()),
                "throughput": {
                    "prefill_tokens_per_s": round(throughput.prefill_tokens_per_s, 1),
                    "decode_tokens_per_s": round(throughput.decode_tokens_per_s, 1),
                    "source": throughput.source,
                    "samples": throughput.samples,
                },
                "price": price.describe(),
            }
        return out
