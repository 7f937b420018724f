"""The shipped price catalog: it loads, it has what it promises, lookups normalise, overrides apply."""

from __future__ import annotations

from importlib import resources

import orjson
import pytest

from modelyard.accounting.catalog import ModelPrice, PriceCatalog, PriceOverride, model_name_candidates
from modelyard.accounting.money import Price

EXPECTED = {
    "openai": [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "text-embedding-3-small",
        "text-embedding-3-large",
    ],
    "anthropic": ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku"],
}


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.load()


def test_shipped_catalog_has_every_promised_model(catalog: PriceCatalog) -> None:
    assert catalog.as_of >= "2026-01-01"
    for provider, models in EXPECTED.items():
        assert catalog.sources[provider]
        for model in models:
            price = catalog.lookup(provider, model)
            assert price is not None, f"{provider}/{model} missing"
            assert price.input.pico_per_token > 0
            assert price.cache_read <= price.input <= price.cache_write <= price.cache_write_1h


def test_catalog_prices_are_strings_never_floats() -> None:
    raw = orjson.loads(resources.files("modelyard.accounting").joinpath("catalog.json").read_bytes())
    for section in raw["providers"].values():
        for entry in section["models"].values():
            tiers = [entry, entry.get("long_context") or {}]
            for tier in tiers:
                for key, value in tier.items():
                    if key in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
                        assert isinstance(value, str), (key, value)


def test_known_figures(catalog: PriceCatalog) -> None:
    mini = catalog.lookup("openai", "gpt-4o-mini")
    assert mini is not None
    assert (mini.input, mini.cache_read, mini.output) == (
        Price.per_mtok("0.15"),
        Price.per_mtok("0.075"),
        Price.per_mtok("0.60"),
    )
    sonnet = catalog.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    assert sonnet.input.pico_per_token == 3_000_000
    assert sonnet.cache_write.pico_per_token == 3_750_000
    assert sonnet.cache_write_1h.pico_per_token == 6_000_000
    assert sonnet.cache_read.pico_per_token == 300_000
    assert sonnet.output.pico_per_token == 15_000_000
    embedding = catalog.lookup("openai", "text-embedding-3-small")
    assert embedding is not None and embedding.output == Price(0)


@pytest.mark.parametrize(
    ("provider", "name", "canonical"),
    [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "GPT-4o-Mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "openai/gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("openai", "o3-2025-04-16", "o3"),
        ("openai", "gpt-5-chat-latest", "gpt-5"),
        ("openai", "chatgpt-4o-latest", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic", "anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic", "us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("anthropic", "anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-0", "claude-opus-4"),
        ("Anthropic", " claude-sonnet-4-20250514 ", "claude-sonnet-4"),
    ],
)
def test_lookup_normalises_names(catalog: PriceCatalog, provider: str, name: str, canonical: str) -> None:
    price = catalog.lookup(provider, name)
    assert price is not None
    assert price.model == canonical


def test_a_listed_snapshot_wins_over_its_family(catalog: PriceCatalog) -> None:
    old = catalog.lookup("openai", "gpt-4o-2024-05-13")
    assert old is not None and old.model == "gpt-4o-2024-05-13"
    assert old.input == Price.per_mtok("5")
    assert old.cache_read == old.input  # no cached-input discount on that snapshot


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "gpt-4o-mini-audio-preview"),  # no prefix guessing
        ("openai", "gpt-4"),
        ("openai", "claude-sonnet-4-5"),  # the provider matters
        ("anthropic", "gpt-4o"),
        ("vllm", "gpt-4o"),
        ("openai", ""),
    ],
)
def test_unknown_models_are_none(catalog: PriceCatalog, provider: str, name: str) -> None:
    assert catalog.lookup(provider, name) is None


def test_candidates_order() -> None:
    assert list(model_name_candidates("openai", "openai/gpt-4o-2024-08-06")) == [
        "openai/gpt-4o-2024-08-06",
        "gpt-4o-2024-08-06",
        "gpt-4o",
    ]


def test_long_context_tier(catalog: PriceCatalog) -> None:
    sonnet = catalog.lookup("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None and sonnet.long_context is not None
    assert sonnet.for_prompt(200_000) is sonnet
    long = sonnet.for_prompt(200_001)
    assert long.input == Price.per_mtok("6")
    assert long.output == Price.per_mtok("22.50")


def test_partial_override_keeps_the_rest() -> None:
    catalog = PriceCatalog.load([PriceOverride("openai", "gpt-4o-2024-11-20", input_per_mtok="2.00")])
    price = catalog.lookup("openai", "gpt-4o")
    assert price is not None
    assert price.input == Price.per_mtok("2")
    assert price.output == Price.per_mtok("10")  # from the catalog
    assert price.cache_read == Price.per_mtok("1.25")
    assert price.note == "configured over the catalog"
    # the dated id resolves to the same, overridden family
    assert catalog.lookup("openai", "gpt-4o-2024-08-06") == price


def test_override_drops_long_context_and_moves_defaulted_1h_writes() -> None:
    catalog = PriceCatalog.load([PriceOverride("anthropic", "claude-sonnet-4-5", output_per_mtok="16")])
    price = catalog.lookup("anthropic", "claude-sonnet-4-5")
    assert price is not None and price.long_context is None
    assert price.for_prompt(10**6) is price
    openai = PriceCatalog.load([PriceOverride("openai", "gpt-4o", cache_write_per_mtok="3")])
    gpt = openai.lookup("openai", "gpt-4o")
    assert gpt is not None and gpt.cache_write_1h == Price.per_mtok("3")


def test_override_adds_unknown_models() -> None:
    catalog = PriceCatalog.load(
        [PriceOverride("together", "Meta-Llama-3.1-8B", input_per_mtok="0.18", output_per_mtok="0.18")]
    )
    price = catalog.lookup("together", "meta-llama-3.1-8b")
    assert price is not None
    assert price.cache_read == price.cache_write == price.input == Price.per_mtok("0.18")
    with pytest.raises(ValueError, match="input_per_mtok and output_per_mtok"):
        PriceCatalog.load([PriceOverride("together", "other", input_per_mtok="1")])


def test_override_apply_without_a_catalog() -> None:
    base = ModelPrice.from_per_mtok("1", "2")
    assert PriceOverride("x", "y", output_per_mtok="3").apply(base).output == Price.per_mtok("3")


def test_invalid_catalog_data_names_the_entry() -> None:
    bad = orjson.dumps({"as_of": "x", "providers": {"p": {"models": {"m": {"input": 0.1, "output": "1"}}}}})
    with pytest.raises(ValueError, match="p/m"):
        PriceCatalog.load(data=bad)
