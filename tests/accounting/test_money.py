"""Exact money units: parsing, formatting, per-token prices."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.accounting.money import (
    NANO_PER_USD,
    Price,
    ceil_div,
    format_usd,
    parse_usd,
    pico_to_nano_ceil,
)


def test_parse_usd_is_exact() -> None:
    assert parse_usd("1.25") == 1_250_000_000
    assert parse_usd(" 0.000000001 ") == 1
    assert parse_usd(Decimal("0.1")) + parse_usd(Decimal("0.2")) == parse_usd("0.3")
    assert parse_usd(3) == 3 * NANO_PER_USD
    assert parse_usd("-2.5") == -2_500_000_000


@pytest.mark.parametrize("bad", ["0.0000000001", "abc", "NaN", "Infinity", ""])
def test_parse_usd_refuses_inexact_or_junk(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_usd(bad)


@pytest.mark.parametrize("bad", [0.1, True, None, [1]])
def test_parse_usd_refuses_floats_and_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError, match="string"):
        parse_usd(bad)  # type: ignore[arg-type]


def test_format_usd() -> None:
    assert format_usd(1_234_567_000) == "$1.234567"
    assert format_usd(1_234_567_500) == "$1.234568"  # half up, display only
    assert format_usd(0) == "$0.000000"
    assert format_usd(-500_000_000, places=2) == "-$0.50"
    assert format_usd(1, places=9) == "$0.000000001"
    with pytest.raises(ValueError):
        format_usd(1, places=10)


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_format_with_nine_places_round_trips(nano: int) -> None:
    assert parse_usd(format_usd(nano, places=9).replace("$", "")) == nano


def test_price_per_mtok_is_exact_in_pico() -> None:
    assert Price.per_mtok("0.15").pico_per_token == 150_000
    assert Price.per_mtok("0.0375").pico_per_token == 37_500  # 37.5 nano: inexact in nano
    assert Price.per_mtok("0.005").pico_per_token == 5_000
    assert Price.per_mtok("75").pico_per_token == 75_000_000
    assert Price.per_mtok("0.0375").nano_per_token == Fraction(75, 2)
    assert Price.per_mtok("0.0375").usd_per_mtok == Decimal("0.0375")
    assert str(Price.per_mtok("2.50")) == "$2.5/Mtok"


def test_price_refuses_sub_pico_negative_and_float() -> None:
    with pytest.raises(ValueError, match="finer"):
        Price.per_mtok("0.0000001")
    with pytest.raises(ValueError, match="negative"):
        Price.per_mtok("-1")
    with pytest.raises(TypeError):
        Price.per_mtok(0.15)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Price(-1)
    with pytest.raises(ValueError):
        Price(1).pico_for(-1)


def test_ceil_helpers() -> None:
    assert pico_to_nano_ceil(0) == 0
    assert pico_to_nano_ceil(1) == 1
    assert pico_to_nano_ceil(1000) == 1
    assert pico_to_nano_ceil(1001) == 2
    assert ceil_div(-3, 2) == -1
    with pytest.raises(ValueError):
        ceil_div(1, 0)
    assert Price.ceil_from_usd_per_token(Fraction(1, 3 * 10**12)) == Price(1)
    assert Price.ceil_from_usd_per_token(Fraction(0)) == Price(0)


@given(st.decimals(min_value=0, max_value=1000, places=6))
def test_any_six_decimal_list_price_is_exact(usd: Decimal) -> None:
    price = Price.per_mtok(usd)
    assert Decimal(price.pico_per_token) == usd * 1_000_000
    assert price.usd_per_mtok == usd
