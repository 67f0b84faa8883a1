"""Google Analytics 4 Measurement Protocol connector (``type: ga4``).

GA4 answers ``2xx`` to a malformed payload and silently discards what it dislikes, so the
encoder is the validator: it only builds requests that follow the Measurement Protocol rules
(names, limits, reserved names, the 72-hour window, hashed ``user_data``) and returns every
event it cannot send as a ``Drop``. https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference

Request-level fields (``client_id``, ``user_id``, ``user_data``, ``consent``) apply to every
event of a request, so a batch is grouped by them before being cut into requests of at most
25 events and 130 kB.

Segment spec events map to GA4 recommended events (``_SPEC_EVENTS``); ``page`` and ``screen``
become ``page_view``/``screen_view``; other track events get a snake_cased name. Properties
become event parameters, ``properties.products[]`` becomes ``items``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
)
from destinations.commerce import currency_code, money
from destinations.payload import (
    CONTACT_IDENTIFIERS,
    HASHED_CONTACT_FIELDS,
    finite_number,
    mapping,
    trait,
)

__all__ = ["GA4Connector", "GA4Settings", "ga4_event_name"]

_HOSTS = {
    "global": "https://www.google-analytics.com",
    "eu": "https://region1.google-analytics.com",
}
MAX_EVENTS_PER_REQUEST = 25
MAX_BODY_BYTES = 130_000  # "POST body < 130 kB": a body is at most MAX_BODY_BYTES - 1 bytes
MAX_PARAMS_PER_EVENT = 25
MAX_ITEMS_PER_EVENT = 200  # Help Center collection limits (not in the MP reference)
MAX_CUSTOM_ITEM_PARAMS = 10
MAX_NAME_LENGTH = 40
MAX_VALUE_LENGTH = 100
MAX_USER_ID_LENGTH = 256
MAX_AGE = timedelta(hours=72)
MAX_CLOCK_SKEW = timedelta(hours=1)
# Longer limits of the automatically collected page parameters (Help Center 9234069).
_VALUE_LENGTHS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}

# Measurement Protocol reference, "Reserved names". ad_impression and in_app_purchase are
# reserved for web streams (this connector sends to web streams: measurement_id).
RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
        "adunit_exposure", "app_clear_data", "app_exception", "app_install", "app_remove",
        "app_store_refund", "app_update", "app_upgrade", "dynamic_link_app_open",
        "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
        "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression", "first_open", "first_visit", "in_app_purchase",
        "notification_dismiss", "notification_foreground", "notification_open",
        "notification_receive", "notification_send", "os_update", "session_start",
        "user_engagement",
    }
)  # fmt: skip
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")

_VALID_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")
_CLIENT_ID = re.compile(r"[0-9]+\.[0-9]+")
_GA_COOKIE = re.compile(r"GA\d+\.\d+\.([0-9]+\.[0-9]+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Spec:
    """How one Segment spec event maps onto a GA4 recommended event."""

    name: str
    items: Literal["none", "single", "list"] = "none"
    params: tuple[tuple[str, str], ...] = ()  # (GA4 parameter, Segment property)


_ORDER = (
    ("transaction_id", "order_id"),
    ("affiliation", "affiliation"),
    ("coupon", "coupon"),
    ("shipping", "shipping"),
    ("tax", "tax"),
)
_PROMOTION = (
    ("promotion_id", "promotion_id"),
    ("promotion_name", "name"),
    ("creative_name", "creative"),
    ("creative_slot", "position"),
)
_SPEC_EVENTS: dict[str, _Spec] = {
    "products searched": _Spec("search", params=(("search_term", "query"),)),
    "product list viewed": _Spec(
        "view_item_list", "list", (("item_list_id", "list_id"), ("item_list_name", "category"))
    ),
    "product clicked": _Spec("select_item", "single"),
    "product viewed": _Spec("view_item", "single"),
    "product added": _Spec("add_to_cart", "single"),
    "product removed": _Spec("remove_from_cart", "single"),
    "product added to wishlist": _Spec("add_to_wishlist", "single"),
    "product shared": _Spec("share", params=(("method", "share_via"), ("item_id", "product_id"))),
    "cart viewed": _Spec("view_cart", "list"),
    "checkout started": _Spec("begin_checkout", "list", (("coupon", "coupon"),)),
    "payment info entered": _Spec(
        "add_payment_info", "list", (("payment_type", "payment_method"), ("coupon", "coupon"))
    ),
    "order completed": _Spec("purchase", "list", _ORDER),
    "order refunded": _Spec("refund", "list", _ORDER),
    "promotion viewed": _Spec("view_promotion", params=_PROMOTION),
    "promotion clicked": _Spec("select_promotion", params=_PROMOTION),
    "signed up": _Spec("sign_up", params=(("method", "method"),)),
    "signed in": _Spec("login", params=(("method", "method"),)),
}
# GA4 item parameter <- Segment product property (item_id comes from product_id or sku).
_ITEM_FIELDS = (
    ("item_name", "name"),
    ("affiliation", "affiliation"),
    ("coupon", "coupon"),
    ("discount", "discount"),
    ("index", "position"),
    ("item_brand", "brand"),
    ("item_category", "category"),
    ("item_variant", "variant"),
    ("price", "price"),
    ("quantity", "quantity"),
)
_PRODUCT_KEYS = frozenset({"product_id", "sku", *(prop for _, prop in _ITEM_FIELDS)})
_MONEY_KEYS = frozenset({"value", "revenue", "total", "currency", "products"})
_PAGE_KEYS = frozenset({"url", "title", "referrer", "path", "search"})


def _is_valid_name(name: str) -> bool:
    return _VALID_NAME.fullmatch(name) is not None and not name.startswith(RESERVED_PREFIXES)


def _snake_case(text: str) -> str:
    spaced = _CAMEL_BOUNDARY.sub("_", text.strip())
    return _NOT_NAME_CHARS.sub("_", spaced.lower()).strip("_")[:MAX_NAME_LENGTH].rstrip("_")


def ga4_event_name(event: str) -> str:
    """The GA4 name of a Segment track event: the recommended one, or snake_case."""
    spec = _SPEC_EVENTS.get(event.strip().lower())
    return spec.name if spec is not None else _snake_case(event)


class GA4Settings(BaseModel):
    """The ``settings`` block of a ``ga4`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measurement_id: str = Field(pattern=r"^G-[A-Za-z0-9]{4,20}$")
    api_secret: SecretStr = Field(min_length=1)
    region: Literal["global", "eu"] = "global"
    """``eu`` sends to region1.google-analytics.com (data collected in the EU)."""
    endpoint_url: str | None = None
    """Full ``/mp/collect`` URL instead of the region's (tests point it at a fake)."""
    debug_endpoint_url: str | None = None
    """Full ``/debug/mp/collect`` URL instead of the region's."""
    validate_only: bool = False
    """Send to the validation server: nothing is recorded, answers list every problem."""
    event_names: dict[str, str] = Field(default_factory=dict)
    """Segment track event name -> GA4 event name, before the built-in mapping."""
    page_event_name: str = "page_view"
    screen_event_name: str = "screen_view"
    client_id_format: Literal["numeric", "as_is"] = "numeric"
    """``numeric``: anonymousId as GA's ``<number>.<number>`` (derived when it is not one)."""
    default_phone_country_code: str | None = Field(default=None, pattern=r"^\+?[1-9][0-9]{0,3}$")
    engagement_time_msec: int | None = Field(default=None, ge=0)
    """Added to every event when set: GA4 needs it to show users in Realtime reports."""
    default_currency: str | None = None
    """ISO 4217 code sent with a value whose event names no currency; without it such a
    value is left out (GA4 computes no revenue from a value without currency)."""
    value_property: str | None = Field(default=None, min_length=1)
    """The property holding the event's value; default: revenue, then total, then value."""

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and currency_code(value) is None:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return currency_code(value) if value is not None else None

    @field_validator("endpoint_url", "debug_endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("page_event_name", "screen_event_name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        _check_event_name(value)
        return value

    @field_validator("event_names")
    @classmethod
    def _event_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            _check_event_name(name)
        return value


def _check_event_name(name: str) -> None:
    if not _is_valid_name(name):
        raise ValueError(f"{name!r} is not a GA4 event name (letters, digits, _; <= 40)")
    if name in RESERVED_EVENT_NAMES:
        raise ValueError(f"{name!r} is a reserved GA4 event name")


class GA4Connector(Connector[GA4Settings]):
    """Encodes deliveries as Measurement Protocol requests."""

    type_name: ClassVar[str] = "ga4"
    identifier_fields: ClassVar[Mapping[str, str]] = CONTACT_IDENTIFIERS
    recipient_name: ClassVar[str] = "Google (Google Analytics 4)"
    hashed_fields: ClassVar[frozenset[str]] = HASHED_CONTACT_FIELDS
    settings_model: ClassVar[type[BaseModel]] = GA4Settings
    required_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("anonymousId",),)
    max_batch_size: ClassVar[int] = MAX_EVENTS_PER_REQUEST

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """2xx is success, except validation messages from the validation server."""
        if not 200 <= response.status < 300 or "/debug/" not in request.url:
            return outcome_from_status(response)
        try:
            messages = msgspec.json.decode(response.body).get("validationMessages") or []
        except (msgspec.DecodeError, AttributeError):
            return Outcome(kind="ok")
        failed: dict[int, str] = {}
        for message in messages:
            code = str(message.get("validationCode") or "unknown").lower()[:32]
            position = _event_position(str(message.get("description") or ""))
            if position is None or position >= len(request.indices):
                return Outcome(kind="permanent", reason=f"ga4_{code}")
            failed.setdefault(position, f"ga4_{code}")
        return Outcome(kind="ok", failed=failed)

    # --- one event -----------------------------------------------------------------------

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """The event and its request-level fields (``client_id``, ``user_id``, ``user_data``,
        ``consent``), or why GA4 would discard it."""
        payload = delivery.payload
        client_id = self._client_id(payload.get("anonymousId"))
        if client_id is None:
            return DropReason("missing_client_id", "anonymousId is missing or empty")
        timestamp = delivery.timestamp
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        if now - timestamp > MAX_AGE:
            return DropReason("too_old", "GA4 accepts events up to 72 hours old")
        if timestamp - now > MAX_CLOCK_SKEW:
            return DropReason("future_timestamp", "more than an hour in the future")
        timestamp = min(timestamp, now)
        name = self._event_name(delivery)
        if isinstance(name, DropReason):
            return name
        event: dict[str, Any] = {
            "name": name,
            "params": self._params(delivery, name, notes),
            "timestamp_micros": (timestamp - _EPOCH) // timedelta(microseconds=1),
        }
        envelope = self._envelope(delivery, client_id, notes)
        return EventPayload(event, shared=envelope, matched=match_keys(envelope))

    def _client_id(self, anonymous_id: Any) -> str | None:
        if isinstance(anonymous_id, int | float) and not isinstance(anonymous_id, bool):
            anonymous_id = str(anonymous_id)
        if not isinstance(anonymous_id, str) or not anonymous_id.strip():
            return None
        value = anonymous_id.strip()
        if self.settings.client_id_format == "as_is" or _CLIENT_ID.fullmatch(value):
            return value
        if (cookie := _GA_COOKIE.fullmatch(value)) is not None:
            return cookie.group(1)
        # GA wants "<number>.<number>" (validation server: VALUE_INVALID otherwise); derive a
        # stable one so the same anonymousId always maps to the same GA client.
        digest = hashing.sha256_hex(value)
        return f"{int(digest[:8], 16) + 1}.{int(digest[8:16], 16) + 1}"

    def _event_name(self, delivery: Delivery) -> str | DropReason:
        if delivery.type == "page":
            return self.settings.page_event_name
        if delivery.type == "screen":
            return self.settings.screen_event_name
        if delivery.type != "track":
            return DropReason("unsupported_event_type", f"{delivery.type} events are not sent")
        event = (delivery.event or "").strip()
        if not event:
            return DropReason("invalid_event_name", "track event without a name")
        name = self.settings.event_names.get(event) or ga4_event_name(event)
        if not _is_valid_name(name):
            return DropReason("invalid_event_name", "no valid GA4 name can be made from it")
        if name in RESERVED_EVENT_NAMES:
            return DropReason("reserved_event_name", f"{name} is reserved by GA4")
        return name

    def _params(
        self, delivery: Delivery, name: str, notes: list[tuple[str, str]]
    ) -> dict[str, Any]:
        payload = delivery.payload
        properties = mapping(payload.get("properties"))
        page = mapping(mapping(payload.get("context")).get("page"))
        standard: dict[str, Any] = {}
        consumed: set[str] = set()
        if delivery.type == "page":
            standard["page_location"] = page.get("url", properties.get("url"))
            standard["page_title"] = page.get("title", properties.get("title"))
            standard["page_referrer"] = page.get("referrer", properties.get("referrer"))
            consumed |= _PAGE_KEYS
        else:
            standard["page_location"] = page.get("url")
            standard["page_title"] = page.get("title")
            standard["page_referrer"] = page.get("referrer")
        if delivery.type == "screen":
            standard["screen_name"] = payload.get("name", properties.get("name"))
            consumed.add("name")
        spec = _SPEC_EVENTS.get((delivery.event or "").strip().lower())
        if delivery.type == "track" and spec is not None and spec.name == name:
            consumed |= self._spec_params(spec, properties, standard)
        else:
            spec = None
        if delivery.type == "track":
            # GA4 event reference: "If you set value then currency is required for revenue
            # metrics to be computed accurately"; currency is ISO 4217 for every event.
            amount = money(
                properties,
                default_currency=self.settings.default_currency,
                single_product=spec is not None and spec.items == "single",
                value_property=self.settings.value_property,
            )
            if (spec is not None and spec.items != "none") or "value" in properties:
                standard["value"] = amount.value
            standard["currency"] = amount.currency
            consumed |= {"value", "currency"}
            if amount.omitted is not None:
                notes.append(("value", amount.omitted))
        if self.settings.engagement_time_msec is not None:
            standard["engagement_time_msec"] = self.settings.engagement_time_msec
        params: dict[str, Any] = {}
        for key, raw in standard.items():
            value = raw if key == "items" else _param_value(key, raw)
            if value is not None:
                params[key] = value
        for key, raw in properties.items():
            if len(params) >= MAX_PARAMS_PER_EVENT:
                break
            param = _param_name(key)
            if key in consumed or param is None or param in params:
                continue
            value = _param_value(param, raw)
            if value is not None:
                params[param] = value
        return dict(list(params.items())[:MAX_PARAMS_PER_EVENT])

    @staticmethod
    def _spec_params(
        spec: _Spec, properties: Mapping[str, Any], standard: dict[str, Any]
    ) -> set[str]:
        consumed = {prop for _, prop in spec.params}
        for param, prop in spec.params:
            standard[param] = properties.get(prop)
        if spec.items == "none":
            return consumed
        consumed |= _MONEY_KEYS
        if spec.items == "single":
            consumed |= _PRODUCT_KEYS
            item = _item(properties)
            items = [item] if item is not None else []
        else:
            products = properties.get("products")
            products = products if isinstance(products, list) else []
            items = [it for p in products if (it := _item(mapping(p))) is not None]
        if items:
            standard["items"] = items[:MAX_ITEMS_PER_EVENT]
        return consumed

    # --- request-level fields ------------------------------------------------------------

    def _envelope(
        self, delivery: Delivery, client_id: str, notes: list[tuple[str, str]]
    ) -> dict[str, Any]:
        payload = delivery.payload
        envelope: dict[str, Any] = {"client_id": client_id}
        user_id = payload.get("userId")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if isinstance(user_id, str) and 0 < len(user_id.strip()) <= MAX_USER_ID_LENGTH:
            envelope["user_id"] = user_id.strip()
            # user_data goes only with a user_id (the uid-data page requires one).
            if user_data := self._user_data(payload, notes):
                envelope["user_data"] = user_data
        consent: dict[str, str] = {}
        for field in ("ad_user_data", "ad_personalization"):
            granted = getattr(delivery.consent, field)
            if granted is not None:
                consent[field] = "GRANTED" if granted else "DENIED"
        if consent:
            envelope["consent"] = consent
        return envelope

    def _user_data(
        self, payload: Mapping[str, Any], notes: list[tuple[str, str]]
    ) -> dict[str, Any]:
        user_data: dict[str, Any] = {}
        email = trait(payload, "email")
        if isinstance(email, str) and email.strip():
            if digest := hashing.hash_email(email, google=True):
                user_data["sha256_email_address"] = [digest]
            else:
                notes.append(("email", "invalid_email"))
        phone = trait(payload, "phone")
        if isinstance(phone, str) and phone.strip():
            code = self.settings.default_phone_country_code
            if digest := hashing.hash_phone(phone, code):
                user_data["sha256_phone_number"] = [digest]
            else:
                notes.append(("phone", hashing.phone_problem(phone, code) or "invalid"))
        address = _google_address(payload)
        if address:
            user_data["address"] = [address]
        return user_data

    # --- requests ------------------------------------------------------------------------

    def _url(self) -> str:
        settings = self.settings
        if settings.validate_only:
            base = settings.debug_endpoint_url or f"{_HOSTS[settings.region]}/debug/mp/collect"
        else:
            base = settings.endpoint_url or f"{_HOSTS[settings.region]}/mp/collect"
        query = urlencode(
            {
                "measurement_id": settings.measurement_id,
                "api_secret": settings.api_secret.get_secret_value(),
            }
        )
        return f"{base}{'&' if '?' in base else '?'}{query}"

    def packing(self, shared: bytes) -> Packing:
        """``{<request-level fields>,"events":[…]}``: 25 events, a body under 130 kB."""
        return Packing(
            head=shared[:-1] + b',"events":[',
            tail=b"]}",
            max_events=MAX_EVENTS_PER_REQUEST,
            max_bytes=MAX_BODY_BYTES - 1,
            too_large_detail="the event alone exceeds 130 kB",
        )

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """A POST to the collection (or validation) endpoint, secrets in the query."""
        return HttpRequest(
            method="POST",
            url=self._url(),
            headers={"Content-Type": "application/json"},
            body=body,
            indices=indices,
            secrets=(self.settings.api_secret.get_secret_value(),),
        )


# --- pure helpers ------------------------------------------------------------------------


def _google_address(payload: Mapping[str, Any]) -> dict[str, str]:
    address: dict[str, str] = {}
    for field, name in (("sha256_first_name", "firstName"), ("sha256_last_name", "lastName")):
        value = trait(payload, name)
        if isinstance(value, str) and (digest := hashing.hash_name(value)):
            address[field] = digest
    place = mapping(trait(payload, "address"))
    street = place.get("street")
    if isinstance(street, str) and (digest := hashing.hash_street_google(street)):
        address["sha256_street"] = digest
    for field, key in (("city", "city"), ("region", "state")):
        value = place.get(key)
        if isinstance(value, str) and (clear := hashing.normalize_address_google(value)):
            address[field] = clear
    postal = place.get("postalCode")
    if isinstance(postal, str) and (clear := hashing.normalize_postal_code_google(postal)):
        address["postal_code"] = clear
    country = place.get("country")
    if isinstance(country, str) and (code := hashing.normalize_country(country)):
        address["country"] = code.upper()
    return address


def _param_name(key: str) -> str | None:
    name = _snake_case(key)
    if not _is_valid_name(name) or name in RESERVED_PARAM_NAMES:
        return None
    return name


def _param_value(name: str, value: Any) -> str | int | float | None:
    """A GA4 parameter value: a string cut to its limit or a finite number; else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        return text[: _VALUE_LENGTHS.get(name, MAX_VALUE_LENGTH)] or None
    return None


def match_keys(envelope: Mapping[str, Any]) -> tuple[str, ...]:
    """The kinds of match keys a request envelope carries (explain, data map)."""
    kinds = {"browser_id"} if "client_id" in envelope else set()
    if "user_id" in envelope:
        kinds.add("external_id")
    user_data = mapping(envelope.get("user_data"))
    for key, kind in (
        ("sha256_email_address", "email"),
        ("sha256_phone_number", "phone"),
        ("address", "address"),
    ):
        if key in user_data:
            kinds.add(kind)
    return tuple(sorted(kinds))


def _item(product: Mapping[str, Any]) -> dict[str, Any] | None:
    item: dict[str, Any] = {}
    for key in ("product_id", "sku"):
        item_id = _param_value("item_id", product.get(key))
        if item_id is not None:
            item["item_id"] = str(item_id)
            break
    for param, prop in _ITEM_FIELDS:
        value = _param_value(param, product.get(prop))
        if value is None:
            continue
        if param in ("price", "discount", "quantity", "index") and finite_number(value) is None:
            continue
        item[param] = value
    if "item_id" not in item and "item_name" not in item:
        return None  # GA4: every item needs item_id or item_name
    custom = 0
    for key, raw in product.items():
        custom_name = _param_name(key)
        if key in _PRODUCT_KEYS or key in _MONEY_KEYS or custom_name is None or custom_name in item:
            continue
        if custom >= MAX_CUSTOM_ITEM_PARAMS:
            break
        custom_value = _param_value(custom_name, raw)
        if custom_value is not None:
            item[custom_name] = custom_value
            custom += 1
    return item


def _event_position(description: str) -> int | None:
    """The event index in a validation message ("Event at index: [3] has ...")."""
    match = re.search(r"[Ee]vent at index: \[(\d+)\]", description)
    return int(match.group(1)) if match else None
