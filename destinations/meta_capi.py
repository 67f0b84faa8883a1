"""Meta Conversions API connector (``type: meta_capi``).

Meta rejects a whole request when one event is bad (and every event when one ``event_time``
is more than 7 days old), so the encoder drops what Meta would refuse before sending:
stale events, website events without a page URL or user agent, and events whose customer
information cannot match anyone. ``split_on_rejection`` lets the worker bisect a rejected batch
to isolate an event the encoder could not foresee.
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters

Customer information is normalized and hashed per Meta's rules (``destinations.hashing``);
``client_ip_address``, ``client_user_agent``, ``fbc`` and ``fbp`` are never hashed. A person
who opted out under US state law (``consent.us_opt_out``) or sent GPC gets Limited Data Use.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import msgspec
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from destinations import hashing
from destinations.base import (
    Connector,
    Delivery,
    DropReason,
    EventPayload,
    HttpRequest,
    HttpResponse,
    Notes,
    Outcome,
    Packing,
    outcome_from_status,
    retry_after_of,
)
from destinations.commerce import Money, currency_code, money
from destinations.payload import (
    CONTACT_IDENTIFIERS,
    HASHED_CONTACT_FIELDS,
    finite_number,
    mapping,
    trait,
)

__all__ = ["MetaCapiConnector", "MetaCapiSettings", "meta_event_name"]

DEFAULT_API_VERSION = "v25.0"
MAX_EVENTS_PER_REQUEST = 1000
MAX_AGE = timedelta(days=7)
MAX_CLOCK_SKEW = timedelta(hours=1)
MAX_CUSTOM_EVENT_NAME = 50  # Pixel rule for custom event names (not restated for CAPI)
# Graph API error codes whose documented recovery is "wait and retry" (error-handling guide):
# 1 unknown, 2 service, 4 app throttled, 17 user throttled, 32 page throttled,
# 341 application limit, 368 temporarily blocked, 613 rate limit.
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613})
ActionSource = Literal[
    "website",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
]

# Segment spec event -> Meta standard event.
_STANDARD_EVENTS = {
    "products searched": "Search",
    "product viewed": "ViewContent",
    "product list viewed": "ViewContent",
    "product added": "AddToCart",
    "product added to wishlist": "AddToWishlist",
    "checkout started": "InitiateCheckout",
    "payment info entered": "AddPaymentInfo",
    "order completed": "Purchase",
    "signed up": "CompleteRegistration",
    "lead generated": "Lead",
    "subscription started": "Subscribe",
    "trial started": "StartTrial",
}
# Properties that become standard custom_data fields or user_data (not custom keys).
_STANDARD_KEYS = frozenset(
    {
        "value", "revenue", "total", "price", "quantity", "currency", "products", "product_id",
        "sku", "name", "category", "order_id", "query", "fbc", "fbp",
    }
)  # fmt: skip
# Segment spec events whose properties describe one product rather than ``products[]``.
_SINGLE_PRODUCT_EVENTS = frozenset(
    {"product viewed", "product added", "product added to wishlist", "product clicked"}
)
REQUIRES_VALUE = frozenset({"Purchase"})
"""Standard events for which Meta requires ``custom_data.value`` and ``currency`` (custom
data parameters: "Required for purchase events")."""
# user_data key -> kind of match key (explain, data map).
MATCH_KINDS: Mapping[str, str] = {
    "em": "email", "ph": "phone", "external_id": "external_id", "fbc": "click_id",
    "fbp": "browser_id", "client_ip_address": "ip", "client_user_agent": "user_agent",
    "fn": "name", "ln": "name", "ge": "gender", "db": "birthday", "ct": "address",
    "st": "address", "zp": "address", "country": "address",
}  # fmt: skip
_DIGITS = re.compile(r"[0-9]{1,20}")
# Customer information that is never enough on its own (best practices, "baseline
# requirements for matching"): an event whose keys fit in one of these sets is invalid.
# Website events always carry client_user_agent, so it is added to the fn/ln sets too.
INSUFFICIENT_USER_DATA = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge", "client_user_agent"}),
    frozenset({"ln", "ge", "client_user_agent"}),
)


def meta_event_name(event: str) -> str:
    """The Meta name of a Segment track event: a standard event, or the name itself."""
    return _STANDARD_EVENTS.get(event.strip().lower(), event.strip())


class MetaCapiSettings(BaseModel):
    """The ``settings`` block of a ``meta_capi`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pixel_id: str = Field(pattern=r"^[0-9]{5,20}$")
    access_token: SecretStr = Field(min_length=1)
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^v[0-9]+\.[0-9]+$")
    test_event_code: str | None = None
    """Events Manager test code; events still count, remove it in production."""
    endpoint_url: str | None = None
    """Full ``/events`` URL instead of graph.facebook.com (tests point it at a fake)."""
    action_source: ActionSource = "website"
    """Where conversions happen. ``app`` is not offered: app events need ``app_data``."""
    event_names: dict[str, str] = Field(default_factory=dict)
    """Segment track event name -> Meta event name, before the built-in mapping."""
    limited_data_use: Literal["when_opted_out", "always"] = "when_opted_out"
    """LDU for people who opted out (US state law or GPC), or for every event."""
    ldu_country: int = Field(default=0, ge=0)
    """``data_processing_options_country``: 0 lets Meta geolocate, 1 is the US."""
    ldu_state: int = Field(default=0, ge=0)
    """``data_processing_options_state``: 0 lets Meta geolocate, 1000 is California."""
    default_phone_country_code: str | None = Field(default=None, pattern=r"^\+?[1-9][0-9]{0,3}$")
    default_currency: str | None = None
    """ISO 4217 code sent with a value whose event names no currency (the shop's currency);
    without it, such a value is left out and a Purchase is not sent (``missing_required``)."""
    value_property: str | None = Field(default=None, min_length=1)
    """The property holding the event's value; default: revenue, then total, then value."""

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and currency_code(value) is None:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return currency_code(value) if value is not None else None

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("event_names")
    @classmethod
    def _event_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            if not name.strip() or len(name) > MAX_CUSTOM_EVENT_NAME:
                raise ValueError(f"{name!r}: Meta event names are 1 to 50 characters")
        return value


REQUEST_WIDE_CODES = frozenset({10, 102, 190, 803})
"""Graph errors about the token, permissions or the pixel itself: splitting the batch cannot
help (200-299 are permission codes too)."""


class MetaCapiConnector(Connector[MetaCapiSettings]):
    """Encodes deliveries as Conversions API ``/events`` requests."""

    type_name: ClassVar[str] = "meta_capi"
    identifier_fields: ClassVar[Mapping[str, str]] = CONTACT_IDENTIFIERS
    recipient_name: ClassVar[str] = "Meta (Conversions API)"
    hashed_fields: ClassVar[frozenset[str]] = HASHED_CONTACT_FIELDS
    settings_model: ClassVar[type[BaseModel]] = MetaCapiSettings
    max_batch_size: ClassVar[int] = MAX_EVENTS_PER_REQUEST
    split_on_rejection: ClassVar[bool] = True

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """Graph API errors: rate limits and transient codes retry, the rest is permanent.

        Meta often answers rate limits with 400 or 403, so the error code decides, not the
        status; an answer without a Graph error object falls back to the status table.
        """
        del request
        if 200 <= response.status < 300:
            return Outcome(kind="ok")
        error = _graph_error(response.body)
        if error is None:
            return outcome_from_status(response)
        code = _code(error.get("code"))
        subcode = _code(error.get("error_subcode"))
        reason = f"meta_error_{code or 'unknown'}" + (f"_{subcode}" if subcode else "")
        transient = error.get("is_transient") is True or response.status >= 500
        if transient or response.status in (408, 429) or int(code or 0) in RETRY_CODES:
            retry_after = retry_after_of(response)
            return Outcome(kind="retry", reason=reason, retry_after_s=retry_after)
        number = int(code or 0)
        request_wide = number in REQUEST_WIDE_CODES or 200 <= number < 300
        return Outcome(kind="permanent", reason=reason, event_specific=not request_wide)

    # --- one event -----------------------------------------------------------------------

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """The server event, or why Meta would refuse it; fields left out go to ``notes``."""
        payload = delivery.payload
        timestamp = delivery.timestamp
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        if now - timestamp > MAX_AGE:
            return DropReason("too_old", "Meta fails the whole request for events over 7 days old")
        if timestamp - now > MAX_CLOCK_SKEW:
            return DropReason("future_timestamp", "more than an hour in the future")
        name = self._event_name(delivery)
        if isinstance(name, DropReason):
            return name
        event: dict[str, Any] = {
            "event_name": name,
            "event_time": math.floor(min(timestamp, now).timestamp()),
            "event_id": delivery.message_id,
            "action_source": self.settings.action_source,
        }
        page = mapping(mapping(payload.get("context")).get("page"))
        properties = mapping(payload.get("properties"))
        url = page.get("url", properties.get("url") if delivery.type == "page" else None)
        if _is_http_url(url):
            event["event_source_url"] = url
        referrer = page.get("referrer")
        if _is_http_url(referrer):
            event["referrer_url"] = referrer
        user_data = self._user_data(payload, now, notes)
        if self.settings.action_source == "website":
            if "event_source_url" not in event:
                return DropReason(
                    "missing_event_source_url", "website events need context.page.url"
                )
            if "client_user_agent" not in user_data:
                return DropReason("missing_user_agent", "website events need context.userAgent")
        if not user_data or any(set(user_data) <= weak for weak in INSUFFICIENT_USER_DATA):
            return DropReason("insufficient_user_data", "no customer information Meta can match")
        event["user_data"] = user_data
        single = (delivery.event or "").strip().lower() in _SINGLE_PRODUCT_EVENTS
        custom_data = self._custom_data(properties, single=single, notes=notes)
        if name in REQUIRES_VALUE and not {"value", "currency"} <= custom_data.keys():
            return DropReason(
                "missing_required",
                f"Meta requires custom_data.value and an ISO 4217 currency for {name}",
            )
        if custom_data:
            event["custom_data"] = custom_data
        opted_out = delivery.consent.us_opt_out or delivery.consent.gpc
        if self.settings.limited_data_use == "always" or opted_out:
            event["data_processing_options"] = ["LDU"]
            event["data_processing_options_country"] = self.settings.ldu_country
            event["data_processing_options_state"] = self.settings.ldu_state
        else:
            event["data_processing_options"] = []
        return EventPayload(event, matched=match_keys(user_data))

    def _event_name(self, delivery: Delivery) -> str | DropReason:
        if delivery.type == "page":
            return "PageView"
        if delivery.type != "track":
            return DropReason("unsupported_event_type", f"{delivery.type} events are not sent")
        event = (delivery.event or "").strip()
        if not event:
            return DropReason("invalid_event_name", "track event without a name")
        name = self.settings.event_names.get(event) or meta_event_name(event)
        if len(name) > MAX_CUSTOM_EVENT_NAME:
            return DropReason("invalid_event_name", "Meta event names are at most 50 characters")
        return name

    def _user_data(
        self, payload: Mapping[str, Any], now: datetime, notes: list[tuple[str, str]]
    ) -> dict[str, Any]:
        context = mapping(payload.get("context"))
        properties = mapping(payload.get("properties"))
        address = mapping(trait(payload, "address"))
        phone_code = self.settings.default_phone_country_code
        today = now.date()
        hashed: tuple[tuple[str, Any, Callable[[str], str | None]], ...] = (
            ("em", trait(payload, "email"), hashing.hash_email),
            ("ph", trait(payload, "phone"), lambda v: hashing.hash_phone_meta(v, phone_code)),
            ("fn", trait(payload, "firstName"), hashing.hash_name),
            ("ln", trait(payload, "lastName"), hashing.hash_name),
            ("ge", trait(payload, "gender"), _hash_gender),
            ("db", trait(payload, "birthday"), lambda v: _hash_birthday(v, today)),
            ("ct", address.get("city"), hashing.hash_city_meta),
            ("st", address.get("state"), hashing.hash_state_meta),
            ("zp", address.get("postalCode"), hashing.hash_zip_meta),
            ("country", address.get("country"), hashing.hash_country_meta),
        )
        user_data: dict[str, Any] = {}
        for key, value, hash_value in hashed:
            if not isinstance(value, str) or not value.strip():
                continue
            if digest := hash_value(value):
                user_data[key] = [digest] if key in ("em", "ph") else digest
            elif key == "ph":
                notes.append(("phone", hashing.phone_problem(value, phone_code) or "invalid"))
            elif key in _OMISSION_REASONS:
                notes.append(_OMISSION_REASONS[key])
        external_ids = [
            digest
            for raw in (payload.get("userId"), payload.get("anonymousId"))
            if isinstance(raw, str) and (digest := hashing.hash_external_id(raw))
        ]
        if external_ids:
            user_data["external_id"] = list(dict.fromkeys(external_ids))
        ip = context.get("ip")
        if isinstance(ip, str) and _is_ip(ip):
            user_data["client_ip_address"] = ip.strip()
        user_agent = context.get("userAgent")
        if isinstance(user_agent, str) and user_agent.strip():
            user_data["client_user_agent"] = user_agent.strip()
        for key in ("fbc", "fbp"):
            cookie = properties.get(key, context.get(key))
            if isinstance(cookie, str) and cookie.startswith("fb."):
                user_data[key] = cookie.strip()
        return user_data

    def _custom_data(
        self, properties: Mapping[str, Any], *, single: bool, notes: list[tuple[str, str]]
    ) -> dict[str, Any]:
        amount = money(
            properties,
            default_currency=self.settings.default_currency,
            single_product=single,
            value_property=self.settings.value_property,
        )
        return _custom_data(properties, amount, notes)

    # --- request -------------------------------------------------------------------------

    def packing(self, shared: bytes) -> Packing:
        """``{"data":[…]}`` plus ``test_event_code`` when set; 1,000 events, no byte limit."""
        del shared
        tail = b"]"
        if self.settings.test_event_code:
            tail += b',"test_event_code":' + msgspec.json.encode(self.settings.test_event_code)
        return Packing(head=b'{"data":[', tail=tail + b"}", max_events=MAX_EVENTS_PER_REQUEST)

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """A POST to the pixel's ``/events`` edge with the access token in the query."""
        settings = self.settings
        token = settings.access_token.get_secret_value()
        base = settings.endpoint_url or (
            f"https://graph.facebook.com/{settings.api_version}/{settings.pixel_id}/events"
        )
        url = f"{base}{'&' if '?' in base else '?'}{urlencode({'access_token': token})}"
        return HttpRequest(
            method="POST",
            url=url,
            headers={"Content-Type": "application/json"},
            body=body,
            indices=indices,
            secrets=(token,),
        )


# --- pure helpers ------------------------------------------------------------------------


def _hash_gender(value: str) -> str | None:
    return hashing.hash_normalized(hashing.normalize_gender(value))


def _hash_birthday(value: str, latest: date) -> str | None:
    if hashing.is_sha256_hex(value.strip().lower()):
        return value.strip().lower()
    return hashing.hash_normalized(hashing.normalize_date_of_birth(value, latest))


_OMISSION_REASONS: Mapping[str, tuple[str, str]] = {
    "em": ("email", "invalid_email"),
    "db": ("birthday", "invalid_date"),
    "ge": ("gender", "invalid_gender"),
    "country": ("country", "invalid_country"),
}
"""user_data keys whose unusable values are counted when left out (bounded codes)."""


def _is_http_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return True


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str) and str(value).strip():
        return str(value).strip()
    return None


def _custom_data(
    properties: Mapping[str, Any],
    amount: Money,
    notes: list[tuple[str, str]],
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if amount.value is not None:
        data["value"] = amount.value
    if amount.currency is not None:
        data["currency"] = amount.currency
    if amount.omitted is not None:
        notes.append(("value", amount.omitted))
    products = properties.get("products")
    candidates = [mapping(p) for p in products] if isinstance(products, list) else [properties]
    ids: list[str] = []
    contents: list[dict[str, Any]] = []
    for product in candidates:
        content_id = _text(product.get("product_id")) or _text(product.get("sku"))
        if content_id is None:
            continue
        ids.append(content_id)
        content = _content(content_id, product)
        if content is None:
            # Meta: "id and quantity are the required fields" of contents[]; no default is
            # documented, so an item without a quantity goes in content_ids only.
            notes.append(("contents", "missing_quantity"))
        else:
            contents.append(content)
    if ids:
        data["content_ids"] = list(dict.fromkeys(ids))
        data["content_type"] = "product"
    if contents:
        data["contents"] = contents
        data["num_items"] = sum(content["quantity"] for content in contents)
    for field, key in (
        ("content_name", "name"),
        ("content_category", "category"),
        ("order_id", "order_id"),
        ("search_string", "query"),
    ):
        if (text := _text(properties.get(key))) is not None:
            data[field] = text
    for key, raw in properties.items():
        if key in _STANDARD_KEYS or key in data:
            continue
        if isinstance(raw, bool):
            data[key] = raw
        elif (number := finite_number(raw)) is not None:
            data[key] = number
        elif isinstance(raw, str) and raw.strip():
            data[key] = raw.strip()
    return data


def _content(content_id: str, product: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ``contents[]`` item, or ``None`` without a positive whole quantity."""
    quantity = finite_number(product.get("quantity"))
    if quantity is None or quantity != int(quantity) or quantity <= 0:
        return None
    content: dict[str, Any] = {"id": content_id, "quantity": int(quantity)}
    price = finite_number(product.get("price"))
    if price is not None:
        content["item_price"] = price
    return content


def match_keys(user_data: Mapping[str, Any]) -> tuple[str, ...]:
    """The kinds of match keys in a ``user_data`` object, sorted and without repeats."""
    return tuple(sorted({MATCH_KINDS[key] for key in user_data if key in MATCH_KINDS}))


def _graph_error(body: bytes) -> Mapping[str, Any] | None:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    return error if isinstance(error, dict) else None


def _code(value: Any) -> str:
    """An error code as bounded digits for a metric label."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else ""
    return text if _DIGITS.fullmatch(text) else ""
