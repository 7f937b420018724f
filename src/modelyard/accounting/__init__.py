"""Money and prices: exact units, the cloud price catalog, request costs, self-hosted costs.

* :mod:`.money`: integer nano-dollars for amounts, integer pico-dollars per token for prices.
* :mod:`.catalog`: shipped OpenAI / Anthropic list prices (``catalog.json``) and overrides.
* :mod:`.cost`: a request's actual cost, and the maximum cost reserved at admission.
* :mod:`.selfhosted`: hardware $/hour ÷ measured throughput → per-token prices for local models.
"""

from modelyard.accounting.catalog import ModelPrice, PriceCatalog, PriceOverride
from modelyard.accounting.cost import (
    TokenUsage,
    cost_of_usage,
    max_cost,
    prompt_upper_tokens,
    request_cost,
    requested_max_tokens,
    usage_from_anthropic,
    usage_from_openai,
)
from modelyard.accounting.money import Price, format_usd, parse_usd
from modelyard.accounting.selfhosted import HardwareSpec, SelfHostedPricer, Throughput, ThroughputMeter

__all__ = [
    "HardwareSpec",
    "ModelPrice",
    "Price",
    "PriceCatalog",
    "PriceOverride",
    "SelfHostedPricer",
    "Throughput",
    "ThroughputMeter",
    "TokenUsage",
    "cost_of_usage",
    "format_usd",
    "max_cost",
    "parse_usd",
    "prompt_upper_tokens",
    "request_cost",
    "requested_max_tokens",
    "usage_from_anthropic",
    "usage_from_openai",
]
