"""Money on the wire: one rule for an event's value and its currency, shared by the ad and
analytics connectors so that GA4, Meta and TikTok report the same amount for one order. Pure.

Value (Segment e-commerce spec v2, https://segment.com/docs/connections/spec/ecommerce/v2/):
``revenue`` ("revenue associated with the transaction, excluding shipping and tax") first, then
``total`` ("revenue with discounts and coupons added in"), then ``value`` (the spec's name on
Checkout Started and some other events). A destination may name one property instead
(``value_property`` setting). Single-product events (Product Viewed, Product Added...) carry
no order amount: their value is ``price * quantity`` (quantity 1 when absent).

Currency: ISO 4217, for every platform (GA4 event reference, Meta custom data, Amplitude
``currency``, TikTok ``properties.currency``). ``currency_code`` accepts a code in any case
with surrounding spaces and refuses anything not on the ISO list (``"euro"``, ``"EURO"``,
``"$"``). ``money`` decides what to send: a value goes only with a valid currency (the
event's, else the destination's ``default_currency``); otherwise both are left out and the
caller records an ``Omission`` with the reason it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from destinations.iso import CURRENCY_CODES
from destinations.payload import finite_number

__all__ = ["VALUE_PROPERTIES", "Money", "currency_code", "money", "order_value"]

VALUE_PROPERTIES: Final = ("revenue", "total", "value")
"""Where an event's value is read, in order (Segment e-commerce spec)."""


def currency_code(raw: Any) -> str | None:
    """An ISO 4217 code in upper case (``" usd "`` -> ``"USD"``), or ``None``."""
    if not isinstance(raw, str):
        return None
    code = raw.strip().upper()
    return code if code in CURRENCY_CODES else None


def order_value(
    properties: Mapping[str, Any],
    *,
    single_product: bool = False,
    value_property: str | None = None,
) -> float | int | None:
    """The event's value: ``value_property`` alone when set, else the first number of
    ``revenue``, ``total``, ``value``; for a single-product event ``price * quantity``."""
    keys: Sequence[str] = (value_property,) if value_property else VALUE_PROPERTIES
    for key in keys:
        if (amount := finite_number(properties.get(key))) is not None:
            return amount
    if single_product and not value_property:
        price = finite_number(properties.get("price"))
        if price is not None:
            quantity = finite_number(properties.get("quantity"))
            return round(price * (quantity if quantity is not None else 1), 6)
    return None


class Money(NamedTuple):
    """What to send: a value always with its currency; ``omitted`` says why a value or a
    currency the event had is left out (a bounded code: ``invalid_currency``,
    ``missing_currency``). A currency without a value is sent alone."""

    value: float | int | None
    currency: str | None
    omitted: str | None = None


def money(
    properties: Mapping[str, Any],
    *,
    default_currency: str | None,
    single_product: bool = False,
    value_property: str | None = None,
) -> Money:
    """The value and currency to send for an event, by the rule of the module docstring.

    An event's own currency that is not ISO 4217 is never replaced by the default: the
    amount may be in another currency than the default, so value and currency both go.
    """
    value = order_value(properties, single_product=single_product, value_property=value_property)
    raw = properties.get("currency")
    given = raw is not None and not (isinstance(raw, str) and not raw.strip())
    currency = currency_code(raw)
    if given and currency is None:
        return Money(None, None, "invalid_currency")
    if currency is None:
        currency = default_currency
    if value is None:
        return Money(None, currency if given else None)
    if currency is None:
        return Money(None, None, "missing_currency")
    return Money(value, currency)
