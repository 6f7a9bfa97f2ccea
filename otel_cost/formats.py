"""How documents (cap state, alerts, API answers) write money, instants and shares."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

__all__ = ["decimal_text", "iso_utc", "percent", "plural", "stored_decimal"]


_STORED = Decimal("1e-24")


def decimal_text(amount: Decimal) -> str:
    """An exact amount as plain digits: no exponent, no trailing zeros ("4512.1", "0")."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def stored_decimal(amount: Decimal) -> str:
    """An amount as a Decimal(38, 24) column takes it: at most 24 places, rounded half-even."""
    with localcontext() as context:
        context.prec = 80
        return decimal_text(amount.quantize(_STORED, ROUND_HALF_EVEN))


def iso_utc(moment: datetime) -> str:
    """`2026-12-01T00:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def percent(share: Decimal) -> str:
    """0.9024 -> "90%"."""
    return f"{(share * 100).quantize(Decimal(1), ROUND_HALF_EVEN)}%"


def plural(count: int, word: str) -> str:
    """(1, "call") -> "1 call"; (3, "call") -> "3 calls"."""
    return f"{count} {word}{'s' if count != 1 else ''}"
