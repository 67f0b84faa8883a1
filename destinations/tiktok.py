"""TikTok Events API 2.0 (``event/track/``) for web events of one pixel.

Event names (Segment e-commerce spec -> TikTok standard event; ``event_names`` overrides or
adds; any other track event goes as a custom event under its own name):

==============================  ====================================================
Segment                         TikTok
==============================  ====================================================
Order Completed                 ``purchase_event`` setting: ``CompletePayment``
                                (default), ``Purchase`` or ``PlaceAnOrder``
Product Added                   AddToCart
Product Added to Wishlist       AddToWishlist
Product Viewed                  ViewContent
Checkout Started                InitiateCheckout
Payment Info Entered            AddPaymentInfo
Products Searched               Search
Signed Up                       CompleteRegistration
page                            ``page_event`` setting (default: pages are not sent)
==============================  ====================================================

Fields (``data[]`` entry):

==========================================  ===============================================
Segment                                     TikTok
==========================================  ===============================================
``messageId``                               ``event_id`` (dedup with the pixel, 48 h)
``timestamp``                               ``event_time`` (Unix seconds)
``context.traits.email`` / ``traits.email``  ``user.email``: SHA-256 of trimmed lower-case
/ ``properties.email``                      email (already hashed values pass through)
same paths, ``phone``                       ``user.phone``: SHA-256 of E.164 with ``+``
``userId``                                  ``user.external_id``: SHA-256 of the trimmed id
``context.ip`` / ``userAgent`` / ``locale``  ``user.ip`` / ``user_agent`` / ``locale``
``properties.ttclid`` / ``context.ttclid``  ``user.ttclid`` (else ``ttclid`` in the page URL)
``properties.ttp`` / ``context.ttp``        ``user.ttp`` (the ``_ttp`` cookie)
``context.page.url`` / ``referrer``         ``page.url`` / ``page.referrer``
``properties.revenue|total|value``          ``properties.value``: ``destinations.commerce``
(single-product events: price * quantity)   (the same amount GA4 and Meta receive)
``properties.currency``                     ``properties.currency``: ISO 4217 only, else
                                            ``default_currency``; a value without a valid
                                            currency is left out (counted as omitted)
``properties.products[]`` (or the product   ``properties.contents[]``: ``content_id``
itself for single-product events)           (product_id/sku), ``content_name``,
                                            ``content_category``, ``price``, ``quantity``,
                                            ``brand``; ``content_type: product``
``properties.query`` / ``order_id``         ``properties.query`` / ``order_id``
ConsentFacts ``us_opt_out`` or ``gpc``      ``limited_data_use: true``
==========================================  ===============================================

Dropped before sending: identify, group, alias, and pages without ``page_event``
(``unsupported_type``); track without a name (``missing_event``).

TikTok answers HTTP 200 with a ``code``: 0 ok; 20001 partial success (ok: TikTok does not
say which events failed); 40100 rate limit and 40700, 5xxxx internal errors retry; every
other code is permanent (40001 no permission, 40002 invalid parameters, 401xx access token).
40002 refuses the whole batch for one bad event, so the worker bisects the request to isolate
it; the other permanent codes concern every event and are not bisected. Non-200 statuses
follow the shared retry table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from destinations.base import (
    Connector,
    Delivery,
    DropReason,
    EventPayload,
    HttpRequest,
    HttpResponse,
    Notes,
    Outcome,
    OutcomeKind,
    Packing,
    outcome_from_status,
)
from destinations.commerce import currency_code, money
from destinations.hashing import hash_email, hash_external_id, hash_phone, phone_problem
from destinations.payload import (
    CONTACT_IDENTIFIERS,
    HASHED_CONTACT_FIELDS,
    id_text,
    is_number,
    mapping,
    path_value,
)

ENDPOINT = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
MAX_EVENTS_PER_REQUEST = 1000
"""What RudderStack batches for Events API 2.0; TikTok's own limit is not verified."""
DEFAULT_BODY_BYTES = 1024 * 1024
"""TikTok's body limit could not be verified; 1 MiB is what Tealium batches to, and no larger
than what aiohttp sends from bytes without a ``ResourceWarning``."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

STANDARD_EVENTS: dict[str, str] = {
    "Product Added": "AddToCart",
    "Product Added to Wishlist": "AddToWishlist",
    "Product Viewed": "ViewContent",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
    "Products Searched": "Search",
    "Signed Up": "CompleteRegistration",
}
"""Segment spec event -> TikTok standard event (Order Completed: ``purchase_event``)."""
SINGLE_PRODUCT_EVENTS = frozenset(
    {"Product Added", "Product Added to Wishlist", "Product Viewed", "Product Clicked"}
)
"""Events whose properties describe one product (Segment spec) rather than ``products[]``."""

MATCH_KINDS: Mapping[str, str] = {
    "email": "email", "phone": "phone", "external_id": "external_id", "ttclid": "click_id",
    "ttp": "browser_id", "ip": "ip", "user_agent": "user_agent",
}  # fmt: skip
"""``user`` key -> kind of match key (explain, data map)."""
EVENT_SPECIFIC_CODES = frozenset({40002})
"""Codes that may come from one event of the batch (invalid parameters): the worker bisects
the request to isolate it. Token, permission and pixel errors concern every event."""

RESPONSE_CODES: dict[int, tuple[OutcomeKind, str]] = {
    0: ("ok", ""),
    20001: ("ok", "partial_success"),
    40001: ("permanent", "no_permission"),
    40002: ("permanent", "invalid_params"),
    40100: ("retry", "rate_limited"),
    40104: ("permanent", "missing_access_token"),
    40105: ("permanent", "invalid_access_token"),
    40700: ("retry", "platform_error"),
}
"""Business API ``code`` -> outcome (RudderStack's handling and TikTok's help pages)."""


class TikTokSettings(BaseModel):
    """The ``settings`` block of a ``tiktok`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_token: str = Field(min_length=1)
    """The Events API access token generated for the pixel (``Access-Token`` header)."""
    pixel_code: str = Field(pattern=r"^[A-Za-z0-9]+$")
    """``event_source_id``."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Overrides the ``event/track/`` URL (tests, proxies)."""
    test_event_code: str | None = Field(default=None, min_length=1)
    purchase_event: Literal["CompletePayment", "Purchase", "PlaceAnOrder"] = "CompletePayment"
    """What Order Completed becomes: match what the site's pixel sends, or dedup fails."""
    event_names: dict[str, str] = Field(default_factory=dict)
    """Extra or overriding Segment event -> TikTok event names."""
    page_event: str | None = Field(default=None, min_length=1)
    """The TikTok event for page calls (``ViewContent``, ``Pageview``); ``None``: not sent."""
    default_phone_country_code: str | None = Field(default=None, pattern=r"^\+?[0-9]{1,3}$")
    """Country code for phone numbers written without one (``"44"``)."""
    max_events_per_request: int = Field(default=MAX_EVENTS_PER_REQUEST, ge=1, le=1000)
    max_body_bytes: int = Field(default=DEFAULT_BODY_BYTES, ge=4096, le=16 * 1024 * 1024)
    default_currency: str | None = None
    """ISO 4217 code sent with a value whose event names no currency; without it such a
    value is left out."""
    value_property: str | None = Field(default=None, min_length=1)
    """The property holding the event's value; default: revenue, then total, then value."""

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and currency_code(value) is None:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return currency_code(value) if value is not None else None


class TikTokConnector(Connector[TikTokSettings]):
    """TikTok Events API 2.0, web events."""

    type_name: ClassVar[str] = "tiktok"
    identifier_fields: ClassVar[Mapping[str, str]] = CONTACT_IDENTIFIERS
    recipient_name: ClassVar[str] = "TikTok (Events API)"
    hashed_fields: ClassVar[frozenset[str]] = HASHED_CONTACT_FIELDS
    settings_model: ClassVar[type[BaseModel]] = TikTokSettings
    max_batch_size: ClassVar[int] = MAX_EVENTS_PER_REQUEST
    split_on_rejection: ClassVar[bool] = True
    """TikTok refuses a whole batch for one bad event (40002): the worker bisects it. Token,
    permission and pixel errors are marked request-wide, so they are not bisected."""

    @property
    def url(self) -> str:
        """Where events are posted."""
        return self.settings.endpoint_url or ENDPOINT

    def event_name(self, delivery: Delivery) -> str | None:
        """The TikTok event for a delivery, or ``None`` when it is not sent."""
        if delivery.type == "page":
            return self.settings.page_event
        if delivery.type != "track" or not delivery.event:
            return None
        if delivery.event in self.settings.event_names:
            return self.settings.event_names[delivery.event]
        if delivery.event == "Order Completed":
            return self.settings.purchase_event
        return STANDARD_EVENTS.get(delivery.event, delivery.event)

    def packing(self, shared: bytes) -> Packing:
        """``{"event_source":"web","event_source_id":…[,"test_event_code":…],"data":[…]}``."""
        del shared
        envelope: dict[str, Any] = {
            "event_source": "web",
            "event_source_id": self.settings.pixel_code,
        }
        if self.settings.test_event_code:
            envelope["test_event_code"] = self.settings.test_event_code
        return Packing(
            head=msgspec.json.encode(envelope)[:-1] + b',"data":[',
            tail=b"]}",
            max_events=self.settings.max_events_per_request,
            max_bytes=self.settings.max_body_bytes,
        )

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """A POST to the Events API with the access token header."""
        return HttpRequest(
            method="POST",
            url=self.url,
            headers={
                "Content-Type": "application/json",
                "Access-Token": self.settings.access_token,
            },
            body=body,
            indices=indices,
            secrets=(self.settings.access_token,),
        )

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """The ``data[]`` entry for one delivery, or why it is not sent (TikTok's maximum
        event age is not documented anywhere we could verify: ``now`` is unused)."""
        del now
        if delivery.type == "track" and not delivery.event:
            return DropReason("missing_event", "track without an event name")
        name = self.event_name(delivery)
        if name is None:
            return DropReason("unsupported_type", f"{delivery.type} is not sent to TikTok")
        payload = delivery.payload
        event: dict[str, Any] = {
            "event": name,
            "event_time": (delivery.timestamp - _EPOCH) // timedelta(seconds=1),
            "event_id": delivery.message_id,
        }
        user = self._user(payload, notes)
        if user:
            event["user"] = user
        page = {
            key: value
            for key, path in (("url", "context.page.url"), ("referrer", "context.page.referrer"))
            if (value := id_text(path_value(payload, path)))
        }
        if page:
            event["page"] = page
        properties = self._properties(delivery, notes)
        if properties:
            event["properties"] = properties
        consent = delivery.consent
        event["limited_data_use"] = consent.us_opt_out or consent.gpc
        kinds = tuple(sorted({MATCH_KINDS[k] for k in user if k in MATCH_KINDS}))
        return EventPayload(event, matched=kinds)

    def _user(self, payload: Mapping[str, Any], notes: list[tuple[str, str]]) -> dict[str, str]:
        user: dict[str, str] = {}
        email = _first_text(payload, ("context.traits.email", "traits.email", "properties.email"))
        if email:
            if hashed := hash_email(email):
                user["email"] = hashed
            else:
                notes.append(("email", "invalid_email"))
        phone = _first_text(payload, ("context.traits.phone", "traits.phone", "properties.phone"))
        code = self.settings.default_phone_country_code
        if phone:
            if hashed := hash_phone(phone, code):
                user["phone"] = hashed
            else:
                notes.append(("phone", phone_problem(phone, code) or "invalid"))
        user_id = id_text(payload.get("userId"))
        if user_id and (hashed := hash_external_id(user_id)):
            user["external_id"] = hashed
        for key, path in (
            ("ip", "context.ip"),
            ("user_agent", "context.userAgent"),
            ("locale", "context.locale"),
        ):
            if value := id_text(path_value(payload, path)):
                user[key] = value
        ttclid = _first_text(payload, ("properties.ttclid", "context.ttclid")) or _url_param(
            id_text(path_value(payload, "context.page.url")), "ttclid"
        )
        if ttclid:
            user["ttclid"] = ttclid
        if ttp := _first_text(payload, ("properties.ttp", "context.ttp")):
            user["ttp"] = ttp
        return user

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """TikTok's answer: the body's ``code`` decides when the HTTP status is 200."""
        del request
        if response.status != 200:
            return outcome_from_status(response)
        try:
            body = msgspec.json.decode(response.body)
        except msgspec.DecodeError:
            return Outcome(kind="retry", reason="invalid_response")
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            return Outcome(kind="retry", reason="invalid_response")
        if code in RESPONSE_CODES:
            kind, reason = RESPONSE_CODES[code]
            return Outcome(kind=kind, reason=reason, event_specific=code in EVENT_SPECIFIC_CODES)
        if 50000 <= code < 60000:
            return Outcome(kind="retry", reason="platform_error")
        if 40100 <= code < 40200:
            return Outcome(kind="permanent", reason="auth_error", event_specific=False)
        return Outcome(kind="permanent", reason="api_error", event_specific=False)

    def _properties(self, delivery: Delivery, notes: list[tuple[str, str]]) -> dict[str, Any]:
        source = mapping(delivery.payload.get("properties"))
        amount = money(
            source,
            default_currency=self.settings.default_currency,
            single_product=delivery.event in SINGLE_PRODUCT_EVENTS,
            value_property=self.settings.value_property,
        )
        if amount.omitted is not None:
            notes.append(("value", amount.omitted))
        return _properties(delivery, source, amount.value, amount.currency)


def _properties(
    delivery: Delivery,
    source: Mapping[str, Any],
    value: float | None,
    currency: str | None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if value is not None:
        properties["value"] = value
    if currency is not None:
        properties["currency"] = currency
    if delivery.event in SINGLE_PRODUCT_EVENTS:
        products: list[Any] = [source]
    else:
        raw = source.get("products")
        products = raw if isinstance(raw, list) else []
    contents = [content for product in products if (content := _content(product))]
    if contents:
        properties["contents"] = contents
        properties["content_type"] = "product"
    for key in ("query", "order_id"):
        if text := id_text(source.get(key)):
            properties[key] = text
    return properties


def _content(product: Any) -> dict[str, Any] | None:
    if not isinstance(product, Mapping):
        return None
    content: dict[str, Any] = {}
    content_id = id_text(product.get("product_id")) or id_text(product.get("sku"))
    if content_id:
        content["content_id"] = content_id
    for key, field in (
        ("name", "content_name"),
        ("category", "content_category"),
        ("brand", "brand"),
    ):
        if value := id_text(product.get(key)):
            content[field] = value
    for key in ("price", "quantity"):
        if is_number(product.get(key)):
            content[key] = product[key]
    return content or None


def _url_param(url: str | None, name: str) -> str | None:
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values and values[0] else None


def _first_text(payload: Mapping[str, Any], paths: Sequence[str]) -> str | None:
    for path in paths:
        if value := id_text(path_value(payload, path)):
            return value
    return None
