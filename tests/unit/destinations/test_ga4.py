"""GA4 Measurement Protocol encoder: pure tests, no network."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from destinations import base as destinations_base
from destinations import hashing
from destinations.base import ConsentFacts, Delivery, HttpRequest, HttpResponse
from destinations.ga4 import GA4Connector, GA4Settings, ga4_event_name

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-api"


def connector(**settings: Any) -> GA4Connector:
    base = {"measurement_id": "G-TEST123", "api_secret": SECRET}
    return GA4Connector("ga4-web", GA4Settings.model_validate({**base, **settings}))


def track(
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    anonymous_id: Any = "123.456",
    age: timedelta = timedelta(minutes=1),
    consent: ConsentFacts | None = None,
    message_id: str = "m-1",
    **payload: Any,
) -> Delivery:
    body: dict[str, Any] = {"event": event, "properties": properties or {}, **payload}
    if anonymous_id is not None:
        body["anonymousId"] = anonymous_id
    return Delivery(
        message_id=message_id,
        type="track",
        timestamp=NOW - age,
        payload=body,
        event=event,
        consent=consent or ConsentFacts(),
    )


def body_of(request: HttpRequest) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(request.body)
    return decoded


def only_event(delivery: Delivery, **settings: Any) -> dict[str, Any]:
    encoded = connector(**settings).encode([delivery], NOW)
    assert encoded.dropped == []
    assert len(encoded.requests) == 1
    events: list[dict[str, Any]] = body_of(encoded.requests[0])["events"]
    assert len(events) == 1
    return events[0]


# --- settings ----------------------------------------------------------------------------


def test_settings_reject_bad_measurement_id() -> None:
    """measurement_id must look like G-XXXX."""
    with pytest.raises(ValidationError):
        GA4Settings.model_validate({"measurement_id": "UA-1234-1", "api_secret": "x"})


def test_settings_reject_reserved_or_invalid_event_name_mapping() -> None:
    """event_names overrides must be valid, non-reserved GA4 names."""
    with pytest.raises(ValidationError):
        GA4Settings.model_validate(
            {
                "measurement_id": "G-TEST123",
                "api_secret": "x",
                "event_names": {"A": "session_start"},
            }
        )
    with pytest.raises(ValidationError):
        GA4Settings.model_validate(
            {"measurement_id": "G-TEST123", "api_secret": "x", "event_names": {"A": "1st"}}
        )


def test_settings_reject_unknown_keys_and_non_http_endpoints() -> None:
    """Unknown settings and non-http endpoint overrides are configuration errors."""
    with pytest.raises(ValidationError):
        GA4Settings.model_validate({"measurement_id": "G-TEST123", "api_secret": "x", "foo": 1})
    with pytest.raises(ValidationError):
        GA4Settings.model_validate(
            {"measurement_id": "G-TEST123", "api_secret": "x", "endpoint_url": "file:///etc"}
        )


def test_url_per_region_and_secret_is_masked() -> None:
    """global/eu hosts, measurement_id and api_secret in the query, secret masked when shown."""
    request = connector().encode([track("Clicked")], NOW).requests[0]
    assert request.url.startswith("https://www.google-analytics.com/mp/collect?")
    assert "measurement_id=G-TEST123" in request.url
    assert request.secrets == (SECRET,)
    assert SECRET not in json.dumps(request.redacted())
    eu = connector(region="eu").encode([track("Clicked")], NOW).requests[0]
    assert eu.url.startswith("https://region1.google-analytics.com/mp/collect?")


def test_validate_only_uses_the_validation_server() -> None:
    """validate_only sends to /debug/mp/collect (or its override)."""
    request = connector(validate_only=True).encode([track("Clicked")], NOW).requests[0]
    assert request.url.startswith("https://www.google-analytics.com/debug/mp/collect?")
    override = connector(
        validate_only=True, debug_endpoint_url="http://127.0.0.1:9/debug/mp/collect"
    )
    assert (
        override.encode([track("Clicked")], NOW).requests[0].url.startswith("http://127.0.0.1:9/")
    )


# --- event names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "ga4"),
    [
        ("Products Searched", "search"),
        ("Product List Viewed", "view_item_list"),
        ("Product Clicked", "select_item"),
        ("Product Viewed", "view_item"),
        ("Product Added", "add_to_cart"),
        ("Product Removed", "remove_from_cart"),
        ("Product Added to Wishlist", "add_to_wishlist"),
        ("Product Shared", "share"),
        ("Cart Viewed", "view_cart"),
        ("Checkout Started", "begin_checkout"),
        ("Payment Info Entered", "add_payment_info"),
        ("Order Completed", "purchase"),
        ("Order Refunded", "refund"),
        ("Promotion Viewed", "view_promotion"),
        ("Promotion Clicked", "select_promotion"),
        ("Signed Up", "sign_up"),
        ("Signed In", "login"),
        ("order completed", "purchase"),
        ("Video Played", "video_played"),
        ("videoPlayed", "video_played"),
        ("  Newsletter: Sign-up (footer)! ", "newsletter_sign_up_footer"),
    ],
)
def test_event_name_mapping(segment: str, ga4: str) -> None:
    """Segment spec events get GA4 recommended names; others are snake_cased."""
    assert ga4_event_name(segment) == ga4
    assert only_event(track(segment))["name"] == ga4


def test_long_event_name_is_cut_to_40_characters() -> None:
    """Custom names longer than 40 characters are truncated (no trailing underscore)."""
    name = only_event(track("A very long event name that keeps going on and on"))["name"]
    assert name == "a_very_long_event_name_that_keeps_going"
    assert len(name) <= 40


def test_event_names_setting_overrides_the_mapping() -> None:
    """event_names maps a Segment event to the configured GA4 name first."""
    event = only_event(track("Order Completed"), event_names={"Order Completed": "order_done"})
    assert event["name"] == "order_done"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("Session Start", "reserved_event_name"),
        ("first_visit", "reserved_event_name"),
        ("ga_custom", "invalid_event_name"),
        ("3D Viewed", "invalid_event_name"),
        ("!!!", "invalid_event_name"),
    ],
)
def test_event_that_cannot_get_a_valid_name_is_dropped(event: str, reason: str) -> None:
    """Reserved names, reserved prefixes and names not starting with a letter are drops."""
    encoded = connector().encode([track(event)], NOW)
    assert encoded.requests == []
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, reason)]


def test_page_and_screen_events() -> None:
    """page -> page_view with page params; screen -> screen_view with screen_name."""
    page = Delivery(
        message_id="p",
        type="page",
        timestamp=NOW,
        payload={
            "anonymousId": "1.2",
            "properties": {"url": "https://shop.test/a", "path": "/a", "section": "blog"},
            "context": {"page": {"title": "A", "referrer": "https://r.test/"}},
        },
    )
    event = only_event(page)
    assert event["name"] == "page_view"
    assert event["params"] == {
        "page_location": "https://shop.test/a",
        "page_title": "A",
        "page_referrer": "https://r.test/",
        "section": "blog",
    }
    screen = Delivery(
        message_id="s", type="screen", timestamp=NOW, payload={"anonymousId": "1.2", "name": "Home"}
    )
    assert only_event(screen) == {
        "name": "screen_view",
        "params": {"screen_name": "Home"},
        "timestamp_micros": int(NOW.timestamp()) * 1_000_000,
    }
    assert only_event(screen, screen_event_name="app_screen")["name"] == "app_screen"


def test_identify_is_not_sent() -> None:
    """identify/group/alias are dropped with unsupported_event_type."""
    identify = Delivery(
        message_id="i", type="identify", timestamp=NOW, payload={"anonymousId": "1.2"}
    )
    assert [d.reason for d in connector().encode([identify], NOW).dropped] == [
        "unsupported_event_type"
    ]


# --- e-commerce ----------------------------------------------------------------------------


def test_order_completed_becomes_purchase_with_items() -> None:
    """Order Completed -> purchase with transaction_id, value, currency, tax, items.

    value is ``revenue`` (Segment e-commerce spec v2, the router's one source of value:
    https://segment.com/docs/connections/spec/ecommerce/v2/), not ``total``.
    """
    properties = {
        "order_id": "T-1",
        "total": 31.5,
        "revenue": 25.0,
        "tax": 2.5,
        "shipping": 4,
        "coupon": "SPRING",
        "currency": "eur",
        "products": [
            {"product_id": "p1", "sku": "S1", "name": "Mat", "price": 10, "quantity": 2,
             "category": "Home", "brand": "Acme", "variant": "red", "position": 1, "url": "u"},
            {"sku": "S2", "name": "Cup", "price": 5.5},
            {"image_url": "no id, no name"},
        ],
    }  # fmt: skip
    params = only_event(track("Order Completed", properties))["params"]
    assert params == {
        "transaction_id": "T-1",
        "coupon": "SPRING",
        "shipping": 4,
        "tax": 2.5,
        "currency": "EUR",
        "value": 25.0,
        "items": [
            {"item_id": "p1", "item_name": "Mat", "index": 1, "item_brand": "Acme",
             "item_category": "Home", "item_variant": "red", "price": 10, "quantity": 2,
             "url": "u"},
            {"item_id": "S2", "item_name": "Cup", "price": 5.5},
        ],
    }  # fmt: skip


def test_single_product_event_uses_the_properties_as_item() -> None:
    """Product Added -> add_to_cart, one item, value = price x quantity when no value."""
    product = {"product_id": "p1", "name": "Mat", "price": 2.5, "quantity": 3}
    params = only_event(track("Product Added", {**product, "currency": "usd"}))["params"]
    assert params == {
        "value": 7.5,
        "currency": "USD",
        "items": [{"item_id": "p1", "item_name": "Mat", "price": 2.5, "quantity": 3}],
    }


def test_value_without_currency_is_left_out_and_counted() -> None:
    """A value without currency is omitted (value + omission), never sent bare.

    GA4 event reference, purchase: "If you set value then currency is required for revenue
    metrics to be computed accurately"
    (https://developers.google.com/analytics/devguides/collection/ga4/reference/events#purchase).
    """
    delivery = track("Order Completed", {"order_id": "T-1", "revenue": 25.0})
    encoded = connector().encode([delivery], NOW)
    params = body_of(encoded.requests[0])["events"][0]["params"]
    assert "value" not in params
    assert "currency" not in params
    assert params["transaction_id"] == "T-1"  # the purchase itself still counts
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "missing_currency")]


def test_default_currency_prices_a_value_without_currency() -> None:
    """The destination's default_currency goes with a value whose event names none."""
    delivery = track("Order Completed", {"order_id": "T-1", "revenue": 25.0})
    params = only_event(delivery, default_currency="eur")["params"]
    assert (params["value"], params["currency"]) == (25.0, "EUR")


@pytest.mark.parametrize("currency", ["euro", "EURO", "$", "usd dollars", "XXX", 978])
def test_invalid_currency_is_removed_with_its_value(currency: Any) -> None:
    """Not ISO 4217 (https://www.iso.org/iso-4217-currency-codes.html): both go, counted;
    the default currency never replaces it (the amount may be in another currency)."""
    delivery = track("Order Completed", {"revenue": 25.0, "currency": currency})
    encoded = connector(default_currency="USD").encode([delivery], NOW)
    params = body_of(encoded.requests[0])["events"][0]["params"]
    assert "value" not in params
    assert "currency" not in params
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "invalid_currency")]


def test_default_currency_must_be_iso_4217() -> None:
    """A default currency that is not an ISO 4217 code fails validation."""
    with pytest.raises(ValidationError):
        connector(default_currency="euro")


def test_value_property_setting_names_the_one_source() -> None:
    """value_property: that property alone is the value."""
    properties = {"revenue": 25.0, "total": 31.5, "currency": "EUR"}
    params = only_event(track("Order Completed", properties), value_property="total")["params"]
    assert params["value"] == 31.5


def test_search_and_promotion_parameters() -> None:
    """Products Searched -> search_term; Promotion Viewed -> promotion_* parameters."""
    assert only_event(track("Products Searched", {"query": "blue mat"}))["params"] == {
        "search_term": "blue mat"
    }
    promotion = {"promotion_id": "P1", "name": "Sale", "creative": "banner", "position": "top"}
    assert only_event(track("Promotion Viewed", promotion))["params"] == {
        "promotion_id": "P1",
        "promotion_name": "Sale",
        "creative_name": "banner",
        "creative_slot": "top",
    }


def test_items_are_capped_at_200_and_10_custom_parameters() -> None:
    """At most 200 items per event and 10 custom parameters per item."""
    product = {"product_id": "p", **{f"extra{i}": i for i in range(15)}}
    params = only_event(track("Cart Viewed", {"products": [product] * 250}))["params"]
    assert len(params["items"]) == 200
    assert len(params["items"][0]) == 1 + 10


# --- parameters ----------------------------------------------------------------------------


def test_custom_properties_become_sanitized_parameters() -> None:
    """Scalar properties become snake_case params; nested, null and reserved ones are left out."""
    # "_private" is renamed "private" (valid); "ga_thing" keeps a reserved prefix: left out.
    properties = {
        "planTier": "pro",
        "Seats Count": 3,
        "is_trial": True,
        "ratio": float("nan"),
        "nested": {"a": 1},
        "list": [1],
        "missing": None,
        "_private": "x",
        "ga_thing": "x",
        "firebase_conversion": "x",
        "9lives": "x",
    }
    assert only_event(track("Plan Chosen", properties))["params"] == {
        "plan_tier": "pro",
        "seats_count": 3,
        "is_trial": "true",
        "private": "x",
    }


def test_parameter_values_are_cut_to_their_limits() -> None:
    """Values are cut to 100 characters, page_location to 1000, page_title to 300."""
    context = {"page": {"url": "https://x.test/" + "a" * 2000, "title": "t" * 400}}
    params = only_event(track("Clicked", {"label": "x" * 150}, context=context))["params"]
    assert len(params["label"]) == 100
    assert len(params["page_location"]) == 1000
    assert len(params["page_title"]) == 300


def test_at_most_25_parameters_per_event() -> None:
    """Standard parameters come first; custom ones stop at 25 in total."""
    properties = {f"prop_{i:02d}": i for i in range(40)}
    params = only_event(
        track("Clicked", properties, context={"page": {"url": "https://x.test/"}}),
        engagement_time_msec=100,
    )["params"]
    assert len(params) == 25
    assert list(params)[:3] == ["page_location", "engagement_time_msec", "prop_00"]


# --- identity, time and privacy --------------------------------------------------------------


def test_missing_anonymous_id_is_dropped_with_missing_client_id() -> None:
    """No anonymousId means no client_id: the event is dropped, the others still go."""
    encoded = connector().encode(
        [track("A", anonymous_id=None), track("B", anonymous_id="  "), track("C")], NOW
    )
    assert [(d.index, d.reason) for d in encoded.dropped] == [
        (0, "missing_client_id"),
        (1, "missing_client_id"),
    ]
    assert [r.indices for r in encoded.requests] == [(2,)]


def test_client_id_formats() -> None:
    """Numeric ids pass, _ga cookies lose their prefix, others map to a stable number pair."""
    assert body_of(connector().encode([track("A")], NOW).requests[0])["client_id"] == "123.456"
    cookie = track("A", anonymous_id="GA1.1.1780924981.1700000000")
    assert body_of(connector().encode([cookie], NOW).requests[0])["client_id"] == (
        "1780924981.1700000000"
    )
    uuid = track("A", anonymous_id="507f191e-810c-1972-9de8-60ea00000000")
    first = body_of(connector().encode([uuid], NOW).requests[0])["client_id"]
    second = body_of(connector().encode([uuid], NOW).requests[0])["client_id"]
    assert first == second
    assert re.fullmatch(r"[1-9][0-9]*\.[1-9][0-9]*", first)
    as_is = connector(client_id_format="as_is").encode([uuid], NOW).requests[0]
    assert body_of(as_is)["client_id"] == "507f191e-810c-1972-9de8-60ea00000000"


def test_events_older_than_72_hours_are_dropped() -> None:
    """72 h is the backdating limit: older events are too_old, the limit itself passes."""
    encoded = connector().encode(
        [track("A", age=timedelta(hours=72, seconds=1)), track("B", age=timedelta(hours=72))],
        NOW,
    )
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "too_old")]
    assert [r.indices for r in encoded.requests] == [(1,)]


def test_future_timestamps_are_clamped_or_dropped() -> None:
    """A little clock skew is clamped to now; over an hour ahead is future_timestamp."""
    encoded = connector().encode(
        [track("A", age=-timedelta(minutes=5)), track("B", age=-timedelta(hours=2))], NOW
    )
    assert [(d.index, d.reason) for d in encoded.dropped] == [(1, "future_timestamp")]
    event = body_of(encoded.requests[0])["events"][0]
    assert event["timestamp_micros"] == int(NOW.timestamp()) * 1_000_000


def test_timestamp_micros_is_exact() -> None:
    """timestamp_micros is the event time in integer microseconds."""
    delivery = track("A", age=timedelta(microseconds=1_000_001))
    expected = int(NOW.timestamp()) * 1_000_000 - 1_000_001
    assert only_event(delivery)["timestamp_micros"] == expected


def test_user_data_is_hashed_per_google_rules() -> None:
    """Email (gmail dots removed) and phone (E.164 with +) are sent as SHA-256 only."""
    traits = {
        "email": " Jane.Doe@GMail.com",
        "phone": "(650) 555-1212",
        "firstName": "Jane",
        "lastName": "Doe",
        "address": {"street": "1 Main St.", "city": "San Francisco", "state": "CA",
                    "postalCode": "94105", "country": "us"},
    }  # fmt: skip
    delivery = track("A", userId="u-1", context={"traits": traits})
    body = body_of(connector(default_phone_country_code="1").encode([delivery], NOW).requests[0])
    assert body["user_id"] == "u-1"
    assert body["user_data"] == {
        "sha256_email_address": [hashing.sha256_hex("janedoe@gmail.com")],
        "sha256_phone_number": [hashing.sha256_hex("+16505551212")],
        "address": [
            {
                "sha256_first_name": hashing.sha256_hex("jane"),
                "sha256_last_name": hashing.sha256_hex("doe"),
                "sha256_street": hashing.sha256_hex("1 main st"),
                "city": "san francisco",
                "region": "ca",
                "postal_code": "94105",
                "country": "US",
            }
        ],
    }
    assert "Jane" not in json.dumps(body)


def test_already_hashed_email_is_not_hashed_again() -> None:
    """A SHA-256 email from the site passes through unchanged."""
    digest = hashing.sha256_hex("jane@example.com")
    delivery = track("A", userId="u-1", traits={"email": digest})
    body = body_of(connector().encode([delivery], NOW).requests[0])
    assert body["user_data"] == {"sha256_email_address": [digest]}


def test_no_user_data_without_user_id_and_no_invented_fields() -> None:
    """Without userId there is no user_id nor user_data; nothing absent is invented."""
    delivery = track("Clicked", anonymous_id="1.2", context={"traits": {"email": "a@b.co"}})
    body = body_of(connector().encode([delivery], NOW).requests[0])
    assert body == {
        "client_id": "1.2",
        "events": [
            {
                "name": "clicked",
                "params": {},
                "timestamp_micros": body["events"][0]["timestamp_micros"],
            }
        ],
    }


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (ConsentFacts(ad_user_data=True, ad_personalization=False),
         {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}),
        (ConsentFacts(ad_user_data=False), {"ad_user_data": "DENIED"}),
        (ConsentFacts(), None),
    ],
)  # fmt: skip
def test_consent_flags_from_consent_facts(
    facts: ConsentFacts, expected: dict[str, str] | None
) -> None:
    """True -> GRANTED, False -> DENIED, None -> the key is omitted."""
    body = body_of(connector().encode([track("A", consent=facts)], NOW).requests[0])
    assert body.get("consent") == expected


# --- batching ------------------------------------------------------------------------------


def test_requests_are_grouped_by_client_and_user() -> None:
    """One request per (client_id, user_id, consent) group, in batch order."""
    batch = [
        track("A", anonymous_id="1.1"),
        track("B", anonymous_id="2.2"),
        track("C", anonymous_id="1.1"),
        track("D", anonymous_id="1.1", userId="u"),
        track("E", anonymous_id="1.1", consent=ConsentFacts(ad_user_data=True)),
    ]
    encoded = connector().encode(batch, NOW)
    assert [r.indices for r in encoded.requests] == [(0, 2), (1,), (3,), (4,)]
    assert [body_of(r)["client_id"] for r in encoded.requests] == ["1.1", "2.2", "1.1", "1.1"]


def test_at_most_25_events_per_request() -> None:
    """30 events of one client are cut into 25 + 5."""
    batch = [track(f"E{i}", message_id=str(i)) for i in range(30)]
    encoded = connector().encode(batch, NOW)
    assert [len(r.indices) for r in encoded.requests] == [25, 5]
    assert all(len(body_of(r)["events"]) == len(r.indices) for r in encoded.requests)


def test_requests_stay_under_130_kb() -> None:
    """Large events are spread over requests so every body stays under 130 kB."""
    products = [{"product_id": f"p{i}", "name": "n" * 90, "variant": "v" * 90} for i in range(200)]
    batch = [track("Cart Viewed", {"products": products}, message_id=str(i)) for i in range(6)]
    encoded = connector().encode(batch, NOW)
    assert encoded.dropped == []
    assert len(encoded.requests) > 1
    assert all(len(r.body) < 130_000 for r in encoded.requests)
    assert sorted(i for r in encoded.requests for i in r.indices) == list(range(6))


# --- interpret -----------------------------------------------------------------------------


def interpret(status: int, body: bytes = b"", *, debug: bool = False) -> Any:
    conn = connector(validate_only=debug)
    request = conn.encode([track("A"), track("B")], NOW).requests[0]
    return conn.interpret(HttpResponse(status=status, headers={}, body=body), request)


def test_interpret_status_codes() -> None:
    """204 ok; 5xx and 429 retry; other 4xx permanent."""
    assert interpret(204).kind == "ok"
    assert interpret(503).kind == "retry"
    assert interpret(429).kind == "retry"
    outcome = interpret(400)
    assert (outcome.kind, outcome.reason) == ("permanent", "http_400")


def test_interpret_validation_messages() -> None:
    """Validation messages fail the named events, or the request when no event is named."""
    per_event = json.dumps(
        {"validationMessages": [{"fieldPath": "events", "validationCode": "NAME_INVALID",
                                 "description": "Event at index: [1] has invalid name [_x]."}]}
    ).encode()  # fmt: skip
    outcome = interpret(200, per_event, debug=True)
    assert (outcome.kind, outcome.failed) == ("ok", {1: "ga4_name_invalid"})
    whole = json.dumps(
        {"validationMessages": [{"fieldPath": "client_id", "validationCode": "VALUE_REQUIRED",
                                 "description": "client_id is required"}]}
    ).encode()  # fmt: skip
    outcome = interpret(200, whole, debug=True)
    assert (outcome.kind, outcome.reason) == ("permanent", "ga4_value_required")
    assert interpret(200, b'{"validationMessages": []}', debug=True).kind == "ok"


class _CountingEncoder:
    """Stands in for the shared encoder of ``destinations.base`` and counts its work."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0

    def encode(self, value: Any) -> bytes:
        self.calls += 1
        encoded = msgspec.json.encode(value)
        self.bytes += len(encoded)
        return encoded


def test_packing_many_events_keeps_limits_and_encodes_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3,000 events of 10 people, some near 10 kB: every request holds at most 25 events of one
    person in a body under 130 kB, every event is sent once in order, and the encoder runs
    twice per event (event and request-level fields), never on growing lists."""
    counting = _CountingEncoder()
    monkeypatch.setattr(destinations_base, "_ENCODER", counting)
    products = [{"product_id": f"p{k}", "name": "n" * 90} for k in range(200)]
    batch = [
        track(
            "Order Completed",
            {"products": products if n % 3 == 0 else products[:1], "n": n, "currency": "EUR"},
            anonymous_id=f"{n % 10}.1",
            userId=f"user-{n % 10}",
            message_id=f"m{n}",
        )
        for n in range(3_000)
    ]
    encoded = connector().encode(batch, NOW)
    assert encoded.dropped == []
    assert sorted(i for r in encoded.requests for i in r.indices) == list(range(3_000))
    for request in encoded.requests:
        assert 1 <= len(request.indices) <= 25
        assert len(request.body) < 130_000
        body = body_of(request)
        assert {body["user_id"]} == {f"user-{i % 10}" for i in request.indices}
        assert [e["params"]["n"] for e in body["events"]] == list(request.indices)
    sizes = [len(r.body) for r in encoded.requests]
    assert max(sizes) > 100_000  # the byte limit, not only the event count, cut requests
    assert counting.calls == 2 * len(batch)
    wire = sum(len(r.body) for r in encoded.requests)
    assert counting.bytes <= 2 * wire  # each event's bytes once, plus its short envelope
