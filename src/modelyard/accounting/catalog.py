"""Cloud list prices: the shipped ``catalog.json``, configured overrides, and lookup by model name.

``catalog.json`` (package data, next to this module) holds OpenAI and Anthropic list prices in USD
per million tokens as decimal strings, with an ``as_of`` date and the sources. Loading turns each
into a :class:`ModelPrice` of exact :class:`~modelyard.accounting.money.Price` values.

Lookup (:meth:`PriceCatalog.lookup`) takes the provider and the *upstream* model name and tries,
in order, the name as given (lower-cased), then the name with decorations removed:

* provider prefixes: ``openai/``, ``anthropic/``, Bedrock's ``anthropic.`` / ``us.anthropic.``;
* version suffixes: ``-2024-08-06``, ``-20250929``, Vertex's ``@20250929``, Bedrock's ``-v1:0``,
  ``-latest``;
* for Anthropic, dotted versions (``claude-sonnet-4.5`` → ``claude-sonnet-4-5``).

A dated id that the catalog lists itself (``gpt-4o-2024-05-13``, priced apart) wins over its
family. Nothing else is guessed: ``gpt-4o-mini-audio`` does not become ``gpt-4o-mini``; an
unknown model is ``None``, and the caller decides (refuse, or treat as self-hosted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import orjson

from modelyard.accounting.money import Price, UsdAmount

__all__ = ["CATALOG_RESOURCE", "ModelPrice", "PriceCatalog", "PriceOverride", "model_name_candidates"]

CATALOG_RESOURCE = "catalog.json"

_PREFIXES = re.compile(r"^(?:openai/|anthropic/|models/|(?:[a-z]{2,4}\.)?anthropic\.)")
_SUFFIXES = (
    re.compile(r"-v\d+(?::\d+)?$"),  # Bedrock: -v1:0
    re.compile(r"@(?:\d{8}|latest)$"),  # Vertex: @20250929
    re.compile(r"-latest$"),
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # OpenAI snapshots: -2024-08-06
    re.compile(r"-\d{8}$"),  # Anthropic snapshots: -20250929
)
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")
_RATE_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model charges per token, by kind of token, in exact pico-dollars per token."""

    input: Price
    """Uncached input (prompt) tokens."""
    output: Price
    """Output tokens, reasoning / thinking tokens included."""
    cache_read: Price
    """Input tokens served from the prompt cache (default in the catalog: ``input``)."""
    cache_write: Price
    """Input tokens written to the prompt cache, Anthropic's 5-minute TTL (default: ``input``)."""
    cache_write_1h: Price
    """Input tokens written with Anthropic's 1-hour TTL (default: ``cache_write``)."""
    provider: str = ""
    """Catalog provider (``openai``, ``anthropic``, ``self-hosted``)."""
    model: str = ""
    """Canonical model name this price was found under."""
    long_context_threshold: int | None = None
    """Prompt size (input + cache reads + cache writes) above which ``long_context`` applies."""
    long_context: ModelPrice | None = None
    """Rates for every token of a request whose prompt exceeds ``long_context_threshold``."""
    note: str = ""
    """Where the figure comes from, or why it is special."""

    @classmethod
    def from_per_mtok(
        cls,
        input: UsdAmount,
        output: UsdAmount,
        cache_read: UsdAmount | None = None,
        cache_write: UsdAmount | None = None,
        cache_write_1h: UsdAmount | None = None,
        **kwargs: Any,
    ) -> ModelPrice:
        """A price from USD-per-million-token figures; missing cache rates default as documented."""
        input_price = Price.per_mtok(input)
        write = Price.per_mtok(cache_write) if cache_write is not None else input_price
        return cls(
            input=input_price,
            output=Price.per_mtok(output),
            cache_read=Price.per_mtok(cache_read) if cache_read is not None else input_price,
            cache_write=write,
            cache_write_1h=Price.per_mtok(cache_write_1h) if cache_write_1h is not None else write,
            **kwargs,
        )

    def for_prompt(self, prompt_tokens: int) -> ModelPrice:
        """The rates that apply to a request whose prompt holds ``prompt_tokens`` tokens."""
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and prompt_tokens > self.long_context_threshold
        ):
            return self.long_context
        return self

    @property
    def max_prompt_rate(self) -> Price:
        """The dearest rate any prompt token can be billed at (cache writes may exceed ``input``)."""
        return max(self.input, self.cache_read, self.cache_write, self.cache_write_1h)

    def describe(self) -> str:
        """One line for humans: ``in $2.5/Mtok, out $10/Mtok, cache read $1.25/Mtok``."""
        return (
            f"in {self.input}, out {self.output}, cache read {self.cache_read}, "
            f"cache write {self.cache_write}"
        )


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """Configured prices for one upstream model, replacing or completing the catalog's.

    A field left ``None`` keeps the catalog's figure; for a model the catalog does not know,
    ``input_per_mtok`` and ``output_per_mtok`` are required and cache rates default to the input
    rate. An override drops the catalog's long-context tier (the configured figures are the whole
    truth). Amounts are USD per million tokens as decimal strings or Decimals (never floats).
    """

    provider: str
    """Catalog provider the override belongs to (``openai``, ``anthropic``, or any other name)."""
    model: str
    """Upstream model name; normalised like lookups (a dated id overrides its family)."""
    input_per_mtok: UsdAmount | None = None
    """Uncached input, USD per million tokens (default: the catalog's)."""
    output_per_mtok: UsdAmount | None = None
    """Output, USD per million tokens (default: the catalog's)."""
    cache_read_per_mtok: UsdAmount | None = None
    """Cache reads, USD per million tokens (default: the catalog's, else the input rate)."""
    cache_write_per_mtok: UsdAmount | None = None
    """Cache writes (5-minute), USD per million tokens (default: the catalog's, else input)."""
    cache_write_1h_per_mtok: UsdAmount | None = None
    """Cache writes (1-hour), USD per million tokens (default: the catalog's, else cache writes)."""

    def apply(self, base: ModelPrice | None) -> ModelPrice:
        """``base`` with this override's figures laid over it (``base`` None: a new price)."""
        if base is None:
            if self.input_per_mtok is None or self.output_per_mtok is None:
                raise ValueError(
                    f"model {self.model!r} ({self.provider}) is not in the price catalog: its pricing "
                    "needs at least input_per_mtok and output_per_mtok"
                )
            return ModelPrice.from_per_mtok(
                self.input_per_mtok,
                self.output_per_mtok,
                self.cache_read_per_mtok,
                self.cache_write_per_mtok,
                self.cache_write_1h_per_mtok,
                provider=self.provider,
                model=self.model,
                note="configured",
            )
        updates: dict[str, Any] = {"long_context": None, "long_context_threshold": None}
        for name in _RATE_FIELDS:
            value = getattr(self, f"{name}_per_mtok")
            if value is not None:
                updates[name] = Price.per_mtok(value)
        # A 1-hour rate that merely defaulted to the 5-minute one follows it.
        follows = base.cache_write_1h == base.cache_write and self.cache_write_1h_per_mtok is None
        if "cache_write" in updates and follows:
            updates["cache_write_1h"] = updates["cache_write"]
        return replace(base, note="configured over the catalog", **updates)


def model_name_candidates(provider: str, model: str) -> Iterator[str]:
    """The names a lookup tries, most specific first (see the module docstring)."""
    name = model.strip().lower()
    seen: set[str] = set()

    def fresh(candidate: str) -> bool:
        if candidate in seen or not candidate:
            return False
        seen.add(candidate)
        return True

    if fresh(name):
        yield name
    name = _PREFIXES.sub("", name)
    if fresh(name):
        yield name
    for pattern in _SUFFIXES:
        stripped = pattern.sub("", name)
        if stripped != name:
            name = stripped
            if fresh(name):
                yield name
    if provider.strip().lower() == "anthropic":
        dashed = _DOTTED_VERSION.sub("-", name)
        if fresh(dashed):
            yield dashed


@dataclass(slots=True)
class PriceCatalog:
    """Prices by (provider, canonical model name); build with :meth:`load`."""

    as_of: str
    """Date the shipped figures were last checked (ISO ``YYYY-MM-DD``)."""
    prices: dict[tuple[str, str], ModelPrice] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    """Extra names of a model (``claude-opus-4-0`` → ``claude-opus-4``)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Provider → where its figures come from."""

    @classmethod
    def load(
        cls,
        overrides: Iterable[PriceOverride] = (),
        *,
        data: bytes | None = None,
    ) -> PriceCatalog:
        """The shipped catalog (or ``data``, the same JSON shape) with ``overrides`` applied."""
        if data is None:
            data = resources.files("modelyard.accounting").joinpath(CATALOG_RESOURCE).read_bytes()
        catalog = cls._parse(orjson.loads(data))
        for override in overrides:
            catalog.add_override(override)
        return catalog

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> PriceCatalog:
        catalog = cls(as_of=str(raw["as_of"]))
        for provider, section in raw["providers"].items():
            catalog.sources[provider] = str(section.get("source", ""))
            for model, entry in section["models"].items():
                try:
                    price = _parse_entry(provider, model, entry)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"price catalog entry {provider}/{model} is invalid: {exc}") from exc
                catalog.prices[(provider, model)] = price
                for alias in entry.get("aliases", ()):
                    catalog.aliases[(provider, alias.lower())] = model
        return catalog

    def _find(self, provider: str, model: str) -> tuple[str, ModelPrice] | None:
        provider = provider.strip().lower()
        for candidate in model_name_candidates(provider, model):
            key = (provider, self.aliases.get((provider, candidate), candidate))
            price = self.prices.get(key)
            if price is not None:
                return key[1], price
        return None

    def lookup(self, provider: str, model: str) -> ModelPrice | None:
        """The price of ``model`` as sent to ``provider`` upstream, or None when unknown."""
        found = self._find(provider, model)
        return found[1] if found is not None else None

    def add_override(self, override: PriceOverride) -> ModelPrice:
        """Apply one override (to the model it normalises to, or as a new model); return the result."""
        provider = override.provider.strip().lower()
        found = self._find(provider, override.model)
        if found is not None:
            name, base = found
        else:
            name, base = override.model.strip().lower(), None
        price = override.apply(base)
        self.prices[(provider, name)] = replace(price, provider=provider, model=name)
        return self.prices[(provider, name)]

    def models(self, provider: str | None = None) -> list[ModelPrice]:
        """Every price (of one provider, if given), sorted by provider then model."""
        return [p for key, p in sorted(self.prices.items()) if provider is None or key[0] == provider]


def _parse_entry(provider: str, model: str, entry: Mapping[str, Any]) -> ModelPrice:
    rates: dict[str, Any] = {name: entry.get(name) for name in _RATE_FIELDS}
    long_context = threshold = None
    tier = entry.get("long_context")
    if tier is not None:
        threshold = int(tier["threshold_tokens"])
        long_context = ModelPrice.from_per_mtok(
            **{name: tier.get(name) for name in _RATE_FIELDS},
            provider=provider,
            model=model,
            note=f"long context (prompt > {threshold:,} tokens)",
        )
    return ModelPrice.from_per_mtok(
        **rates,
        provider=provider,
        model=model,
        long_context_threshold=threshold,
        long_context=long_context,
        note=str(entry.get("note", "")),
    )
