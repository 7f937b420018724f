"""Exact money: integer nano-dollars for amounts, integer pico-dollars per token for prices.

Two integer units, never a float:

* **Amounts** (a request's cost, a budget, a ledger row) are integer **nano-dollars**
  (1 USD = 10**9 nano), as everywhere in modelyard (:data:`modelyard.store.base.NANO_PER_USD`).
* **Prices** are integer **pico-dollars per token** (1 USD = 10**12 pico), held by :class:`Price`.
  A price of $X per million tokens is X × 10**6 pico per token, so every list price published
  with up to six decimals per million tokens is exact: $0.15/Mtok = 150,000 pico/token,
  $0.0375/Mtok = 37,500 pico/token (which would be the inexact 37.5 nano/token), $0.005/Mtok =
  5,000 pico/token.

A request's cost is the sum over its token kinds of tokens × pico-per-token, an exact integer,
converted to nano-dollars **once per request, rounding up** (:func:`pico_to_nano_ceil`). Rounding
up means a request is never under-charged, and the error is below 1 nano-dollar ($10**-9) per
request. Sums of request costs are integer sums: they never drift.

Parsing takes decimal strings, :class:`~decimal.Decimal` or integers — never floats, whose binary
value is not the decimal the user wrote (0.1 + 0.2 != 0.3). A value that is not exact in the
target unit is an error, not silently rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction

from modelyard.store.base import NANO_PER_USD

__all__ = [
    "NANO_PER_USD",
    "PICO_PER_NANO",
    "PICO_PER_USD",
    "TOKENS_PER_MTOK",
    "Price",
    "UsdAmount",
    "ceil_div",
    "ceil_fraction",
    "format_usd",
    "parse_usd",
    "pico_to_nano_ceil",
    "to_decimal",
]

PICO_PER_NANO = 1_000
PICO_PER_USD = NANO_PER_USD * PICO_PER_NANO
TOKENS_PER_MTOK = 1_000_000

UsdAmount = str | Decimal | int
"""A USD amount as the user wrote it: a decimal string (``"0.15"``), a Decimal or an integer."""


def to_decimal(value: UsdAmount, *, what: str = "amount") -> Decimal:
    """``value`` as a finite Decimal; floats and non-numbers are refused with a clear error."""
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise TypeError(
            f"{what} must be a decimal string, Decimal or int, not {type(value).__name__}: write "
            f'it as a string (e.g. "0.15") so that it stays exact'
        )
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{what} {value!r} is not a decimal number") from exc
    if not number.is_finite():
        raise ValueError(f"{what} {value!r} must be a finite number")
    return number


def _exact_int(number: Decimal, scale: int, *, what: str, value: object, unit: str) -> int:
    scaled = number * scale
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{what} {value!r} is finer than one {unit}; round it to fewer decimals")
    return int(scaled)


def parse_usd(value: UsdAmount) -> int:
    """A USD amount (``"1.25"``, ``Decimal("0.000000001")``, ``3``) as exact integer nano-dollars.

    Raises ValueError when the amount has more than nine decimals, TypeError for a float.
    """
    number = to_decimal(value, what="USD amount")
    return _exact_int(number, NANO_PER_USD, what="USD amount", value=value, unit="nano-dollar")


def format_usd(nano: int, places: int = 6) -> str:
    """``nano`` nano-dollars as ``"$1.234567"`` (``places`` decimals, half-up; ``-$0.50`` if negative).

    For reports and logs only: the integer stays the truth. ``places=9`` is exact.
    """
    if not 0 <= places <= 9:
        raise ValueError(f"places must be between 0 and 9, got {places}")
    amount = Decimal(abs(nano)) / NANO_PER_USD
    text = f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"
    return f"-${text}" if nano < 0 else f"${text}"


def ceil_div(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` in integers, for a positive denominator."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    return -(-numerator // denominator)


def ceil_fraction(value: Fraction) -> int:
    """The smallest integer ≥ ``value``."""
    return ceil_div(value.numerator, value.denominator)


def pico_to_nano_ceil(pico: int) -> int:
    """Pico-dollars to nano-dollars, rounding up: the one rounding step of a request's cost."""
    return ceil_div(pico, PICO_PER_NANO)


@dataclass(frozen=True, slots=True, order=True)
class Price:
    """A per-token price as integer pico-dollars per token (1 USD = 10**12 pico).

    Build it from a list price with :meth:`per_mtok` (``Price.per_mtok("0.0375")``); a price finer
    than one pico-dollar per token ($0.000001 per million tokens) is refused, not rounded.
    """

    pico_per_token: int
    """Pico-dollars charged per token; never negative."""

    def __post_init__(self) -> None:
        if isinstance(self.pico_per_token, bool) or not isinstance(self.pico_per_token, int):
            raise TypeError("pico_per_token must be an int")
        if self.pico_per_token < 0:
            raise ValueError(f"a price cannot be negative, got {self.pico_per_token} pico/token")

    @classmethod
    def per_mtok(cls, usd_per_million_tokens: UsdAmount) -> Price:
        """The price of ``usd_per_million_tokens`` USD per million tokens, exactly."""
        what = "price per million tokens"
        number = to_decimal(usd_per_million_tokens, what=what)
        if number < 0:
            raise ValueError(f"{what} {usd_per_million_tokens!r} cannot be negative")
        pico = _exact_int(
            number,
            PICO_PER_USD // TOKENS_PER_MTOK,
            what=what,
            value=usd_per_million_tokens,
            unit="pico-dollar per token ($0.000001 per million tokens)",
        )
        return cls(pico)

    @classmethod
    def ceil_from_usd_per_token(cls, usd_per_token: Fraction) -> Price:
        """The smallest whole pico-dollar price ≥ an exact rational USD-per-token figure.

        Used for derived prices (self-hosted hardware cost ÷ throughput): rounding up keeps them
        conservative, and a positive cost never becomes a zero price.
        """
        if usd_per_token < 0:
            raise ValueError("a price cannot be negative")
        return cls(ceil_fraction(usd_per_token * PICO_PER_USD))

    @property
    def usd_per_mtok(self) -> Decimal:
        """The price in USD per million tokens, exact (for display and config round-trips)."""
        return Decimal(self.pico_per_token) / (PICO_PER_USD // TOKENS_PER_MTOK)

    @property
    def nano_per_token(self) -> Fraction:
        """The price in nano-dollars per token, as an exact fraction (37.5 for $0.0375/Mtok)."""
        return Fraction(self.pico_per_token, PICO_PER_NANO)

    def pico_for(self, tokens: int) -> int:
        """The exact cost of ``tokens`` tokens in pico-dollars (not yet rounded to nano)."""
        if tokens < 0:
            raise ValueError(f"a token count cannot be negative, got {tokens}")
        return tokens * self.pico_per_token

    def __str__(self) -> str:
        return f"${self.usd_per_mtok.normalize():f}/Mtok"
