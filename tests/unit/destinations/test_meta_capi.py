"""Meta Conversions API encoder: pure tests, no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from destinations import hashing
from destinations.base import ConsentFacts, Delivery, HttpRequest, HttpResponse, Outcome
from destinations.meta_capi import MetaCapiConnector, MetaCapiSettings, meta_event_name

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
TOKEN = "EAAB-token"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
# Meta's published examples (customer-information-parameters page).
META_EM = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
META_PH = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"


def connector(**settings: Any) -> MetaCapiConnector:
    base = {"pixel_id": "1234567890", "access_token": TOKEN}
    return MetaCapiConnector("meta", MetaCapiSettings.model_validate({**base, **settings}))


def web_context(**extra: Any) -> dict[str, Any]:
    return {"page": {"url": "https://shop.test/p"}, "userAgent": UA, "ip": "203.0.113.7", **extra}


def track(
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    age: timedelta = timedelta(minutes=1),
    consent: ConsentFacts | None = None,
    message_id: str = "msg-1",
    **payload: Any,
) -> Delivery:
    body: dict[str, Any] = {
        "anonymousId": "anon-1",
        "event": event,
        "properties": properties or {},
        "context": web_context(),
        **payload,
    }
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
    data: list[dict[str, Any]] = body_of(encoded.requests[0])["data"]
    assert len(data) == 1
    return data[0]


# --- settings and request --------------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    """api_version defaults per the reference; bad ids, versions and app source are refused."""
    settings = MetaCapiSettings.model_validate({"pixel_id": "123456", "access_token": "t"})
    assert settings.api_version == "v25.0"
    assert settings.action_source == "website"
    for bad in (
        {"pixel_id": "abc"},
        {"api_version": "25"},
        {"action_source": "app"},
        {"endpoint_url": "ftp://x"},
        {"event_names": {"A": "x" * 51}},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            MetaCapiSettings.model_validate({"pixel_id": "123456", "access_token": "t", **bad})


def test_request_url_token_and_test_code() -> None:
    """POST graph.facebook.com/{v}/{pixel}/events, token in the query and masked."""
    request = connector(test_event_code="TEST123").encode([track("Clicked")], NOW).requests[0]
    assert request.method == "POST"
    assert request.url == (
        f"https://graph.facebook.com/v25.0/1234567890/events?access_token={TOKEN}"
    )
    assert request.secrets == (TOKEN,)
    assert TOKEN not in json.dumps(request.redacted())
    assert body_of(request)["test_event_code"] == "TEST123"


def test_full_event_shape() -> None:
    """event_id = messageId, event_time in seconds, action_source, source URL, LDU off."""
    delivery = track("Order Completed", {"order_id": "T-1", "revenue": 10, "currency": "usd"})
    event = only_event(delivery)
    assert event["event_name"] == "Purchase"
    assert event["event_id"] == "msg-1"
    assert event["event_time"] == int((NOW - timedelta(minutes=1)).timestamp())
    assert event["action_source"] == "website"
    assert event["event_source_url"] == "https://shop.test/p"
    assert event["data_processing_options"] == []
    assert event["custom_data"] == {"value": 10, "currency": "USD", "order_id": "T-1"}


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "meta"),
    [
        ("Products Searched", "Search"),
        ("Product Viewed", "ViewContent"),
        ("Product List Viewed", "ViewContent"),
        ("Product Added", "AddToCart"),
        ("Product Added to Wishlist", "AddToWishlist"),
        ("Checkout Started", "InitiateCheckout"),
        ("Payment Info Entered", "AddPaymentInfo"),
        ("Order Completed", "Purchase"),
        ("Signed Up", "CompleteRegistration"),
        ("Lead Generated", "Lead"),
        ("Subscription Started", "Subscribe"),
        ("Trial Started", "StartTrial"),
        ("Video Played", "Video Played"),
    ],
)
def test_event_name_mapping(segment: str, meta: str) -> None:
    """Segment spec events map to Meta standard events; others keep their name."""
    assert meta_event_name(segment) == meta
    priced = {"revenue": 1, "currency": "USD"}  # Purchase requires them (see below)
    assert only_event(track(segment, priced))["event_name"] == meta


def test_page_is_page_view_and_overrides_apply() -> None:
    """page -> PageView; event_names overrides the built-in mapping."""
    page = Delivery(
        message_id="p",
        type="page",
        timestamp=NOW,
        payload={"anonymousId": "a", "context": web_context()},
    )
    assert only_event(page)["event_name"] == "PageView"
    event = only_event(track("Order Completed"), event_names={"Order Completed": "Sale"})
    assert event["event_name"] == "Sale"


def test_unsupported_types_and_long_names_are_dropped() -> None:
    """screen/identify are not sent; custom names over 50 characters are invalid."""
    screen = Delivery(message_id="s", type="screen", timestamp=NOW, payload={"anonymousId": "a"})
    encoded = connector().encode([screen, track("x" * 51)], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [
        (0, "unsupported_event_type"),
        (1, "invalid_event_name"),
    ]
    assert encoded.requests == []


# --- user_data ---------------------------------------------------------------------------------


def test_user_data_is_hashed_per_meta_rules() -> None:
    """em/ph/fn/ln/ct/st/zp/country/db/ge hashed; ph without +; gmail dots kept."""
    traits = {
        "email": " John_Smith@gmail.com ",
        "phone": "+1 (650) 555-1212",
        "firstName": "Mary",
        "lastName": "Smith-Jones",
        "gender": "Female",
        "birthday": "1997-02-16",
        "address": {"city": "New York", "state": "CA", "postalCode": "94025-1234", "country": "US"},
    }
    user_data = only_event(track("A", context=web_context(traits=traits)))["user_data"]
    assert user_data["em"] == [META_EM]
    assert user_data["ph"] == [META_PH]
    assert user_data["fn"] == hashing.sha256_hex("mary")
    assert user_data["ln"] == hashing.sha256_hex("smithjones")
    assert user_data["ge"] == hashing.sha256_hex("f")
    assert user_data["db"] == hashing.sha256_hex("19970216")
    assert user_data["ct"] == hashing.sha256_hex("newyork")
    assert user_data["st"] == hashing.sha256_hex("ca")
    assert user_data["zp"] == hashing.sha256_hex("94025")
    assert user_data["country"] == hashing.sha256_hex("us")
    assert user_data["external_id"] == [hashing.sha256_hex("anon-1")]


def test_browser_fields_are_never_hashed() -> None:
    """client_ip_address, client_user_agent, fbc and fbp are sent as they are."""
    properties = {"fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1558571054389.1098115397"}
    user_data = only_event(track("A", properties))["user_data"]
    assert user_data["client_ip_address"] == "203.0.113.7"
    assert user_data["client_user_agent"] == UA
    assert user_data["fbc"] == "fb.1.1554763741205.AbCdEf"
    assert user_data["fbp"] == "fb.1.1558571054389.1098115397"


def test_invalid_browser_values_are_left_out() -> None:
    """A malformed IP or cookie is omitted rather than sent."""
    delivery = track("A", {"fbp": "not-a-cookie"}, context=web_context(ip="999.1.1.1"))
    user_data = only_event(delivery)["user_data"]
    assert "client_ip_address" not in user_data
    assert "fbp" not in user_data


def test_prehashed_values_are_not_hashed_again() -> None:
    """A value already SHA-256 hex passes through unchanged."""
    delivery = track("A", context=web_context(traits={"email": META_EM, "phone": META_PH}))
    user_data = only_event(delivery)["user_data"]
    assert user_data["em"] == [META_EM]
    assert user_data["ph"] == [META_PH]


def test_external_id_from_user_id_and_anonymous_id() -> None:
    """userId and anonymousId both become hashed external_id values."""
    user_data = only_event(track("A", userId="User-42"))["user_data"]
    assert user_data["external_id"] == [
        hashing.sha256_hex("user-42"),
        hashing.sha256_hex("anon-1"),
    ]


def test_only_payload_fields_reach_the_wire() -> None:
    """Nothing absent from the minimized payload is invented (no email, no phone, no ip)."""
    delivery = Delivery(
        message_id="m",
        type="track",
        timestamp=NOW,
        event="Clicked",
        payload={"userId": "u", "context": {"page": {"url": "https://a.test/"}, "userAgent": UA}},
    )
    event = only_event(delivery)
    assert event["user_data"] == {
        "external_id": [hashing.sha256_hex("u")],
        "client_user_agent": UA,
    }
    assert "custom_data" not in event


# --- drops -------------------------------------------------------------------------------------


def test_events_older_than_7_days_are_dropped_not_sent() -> None:
    """A stale event is dropped so it cannot fail the batch; the others still go."""
    encoded = connector().encode(
        [
            track("A", age=timedelta(days=7, seconds=1), message_id="old"),
            track("B", age=timedelta(days=7), message_id="edge"),
            track("C", age=-timedelta(hours=2), message_id="future"),
        ],
        NOW,
    )
    assert [(d.index, d.reason) for d in encoded.dropped] == [
        (0, "too_old"),
        (2, "future_timestamp"),
    ]
    assert [e["event_id"] for e in body_of(encoded.requests[0])["data"]] == ["edge"]


def test_website_events_need_url_and_user_agent() -> None:
    """Website events without a page URL or user agent are dropped with their reason."""
    no_url = track("A", context={"userAgent": UA})
    no_ua = track("B", context={"page": {"url": "https://a.test/"}})
    encoded = connector().encode([no_url, no_ua], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [
        (0, "missing_event_source_url"),
        (1, "missing_user_agent"),
    ]
    other = connector(action_source="system_generated").encode([no_url], NOW)
    assert other.dropped == []


@pytest.mark.parametrize(
    "traits",
    [{}, {"gender": "f", "firstName": "Mary"}, {"address": {"city": "Paris", "country": "FR"}}],
)
def test_too_little_customer_information_is_dropped(traits: dict[str, Any]) -> None:
    """Events that fail Meta's baseline matching rule are insufficient_user_data."""
    delivery = Delivery(
        message_id="m",
        type="track",
        timestamp=NOW,
        event="A",
        payload={
            "context": {"page": {"url": "https://a.test/"}, "userAgent": UA, "traits": traits}
        },
    )
    encoded = connector().encode([delivery], NOW)
    assert [d.reason for d in encoded.dropped] == ["insufficient_user_data"]


# --- custom_data and privacy -----------------------------------------------------------------


def test_products_become_contents() -> None:
    """products[] -> content_ids, contents (id, quantity, item_price), num_items.

    Meta custom data parameters: contents[] "id and quantity are the required fields"
    (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data;
    offline events: "Required: id, quantity"). No default quantity is documented, so an item
    without one stays in content_ids only and is counted as omitted.
    """
    properties = {
        "order_id": "T-9",
        "total": 35,
        "currency": "eur",
        "affiliation": "web",
        "products": [
            {"product_id": "p1", "price": 10, "quantity": 2},
            {"sku": "S2", "price": 15},
            {"name": "no id"},
        ],
    }
    encoded = connector().encode([track("Order Completed", properties)], NOW)
    custom = body_of(encoded.requests[0])["data"][0]["custom_data"]
    assert custom == {
        "value": 35,
        "currency": "EUR",
        "content_ids": ["p1", "S2"],
        "contents": [{"id": "p1", "quantity": 2, "item_price": 10}],
        "content_type": "product",
        "num_items": 2,
        "order_id": "T-9",
        "affiliation": "web",
    }
    assert [(o.field, o.reason) for o in encoded.omitted] == [("contents", "missing_quantity")]


def test_single_product_and_search() -> None:
    """Product Viewed uses the properties as the content; Products Searched sets search_string."""
    product = {"product_id": "p1", "name": "Mat", "category": "Home", "price": 9}
    viewed = only_event(track("Product Viewed", {**product, "currency": "USD", "quantity": 1}))
    assert viewed["custom_data"] == {
        "value": 9,
        "currency": "USD",
        "content_ids": ["p1"],
        "contents": [{"id": "p1", "quantity": 1, "item_price": 9}],
        "content_type": "product",
        "num_items": 1,
        "content_name": "Mat",
        "content_category": "Home",
    }
    searched = only_event(track("Products Searched", {"query": "mat"}))["custom_data"]
    assert searched == {"search_string": "mat"}


@pytest.mark.parametrize(
    "facts", [ConsentFacts(us_opt_out=True), ConsentFacts(gpc=True)], ids=["us_opt_out", "gpc"]
)
def test_opt_out_turns_on_limited_data_use(facts: ConsentFacts) -> None:
    """US opt-out or GPC -> data_processing_options LDU with country/state 0 (geolocate)."""
    event = only_event(track("A", consent=facts))
    assert event["data_processing_options"] == ["LDU"]
    assert event["data_processing_options_country"] == 0
    assert event["data_processing_options_state"] == 0


def test_limited_data_use_settings() -> None:
    """ldu_country/ldu_state are used; limited_data_use=always applies LDU to everyone."""
    event = only_event(track("A"), limited_data_use="always", ldu_country=1, ldu_state=1000)
    assert event["data_processing_options"] == ["LDU"]
    assert event["data_processing_options_country"] == 1
    assert event["data_processing_options_state"] == 1000


def test_at_most_1000_events_per_request() -> None:
    """A larger batch is cut into requests of 1,000 events."""
    batch = [track("A", message_id=str(i)) for i in range(1001)]
    encoded = connector().encode(batch, NOW)
    assert [len(r.indices) for r in encoded.requests] == [1000, 1]
    assert connector().max_batch_size == 1000
    assert connector().split_on_rejection is True


# --- interpret ---------------------------------------------------------------------------------


def outcome(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Outcome:
    conn = connector()
    request = conn.encode([track("A")], NOW).requests[0]
    raw = json.dumps(body).encode() if body is not None else b""
    return conn.interpret(HttpResponse(status=status, headers=headers or {}, body=raw), request)


def graph_error(code: int, subcode: int | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": "m", "type": "OAuthException", "code": code, **extra}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def test_success_is_ok() -> None:
    """200 with events_received is ok."""
    assert outcome(200, {"events_received": 1, "messages": []}) == Outcome(kind="ok")


def test_invalid_parameter_is_permanent_with_code_and_subcode() -> None:
    """code 100 (subcode 2804016, not hashed) is permanent: meta_error_100_2804016."""
    result = outcome(400, graph_error(100, 2804016))
    assert (result.kind, result.reason) == ("permanent", "meta_error_100_2804016")
    assert outcome(400, graph_error(190)).reason == "meta_error_190"
    assert outcome(403, graph_error(10)).kind == "permanent"


@pytest.mark.parametrize("code", [1, 2, 4, 17, 32, 341, 368, 613])
def test_rate_limit_and_transient_codes_retry(code: int) -> None:
    """Throttling and transient Graph codes retry even when the status is 400."""
    result = outcome(400, graph_error(code), {"Retry-After": "30"})
    assert (result.kind, result.reason, result.retry_after_s) == (
        "retry",
        f"meta_error_{code}",
        30.0,
    )


def test_is_transient_and_server_errors_retry() -> None:
    """is_transient true, 5xx and 429 retry; a body without an error uses the status."""
    assert outcome(400, graph_error(100, is_transient=True)).kind == "retry"
    assert outcome(500, graph_error(100)).kind == "retry"
    assert outcome(503).kind == "retry"
    assert outcome(429).kind == "retry"
    assert (outcome(404, "not json").kind, outcome(404).reason) == ("permanent", "http_404")


def test_token_errors_are_not_bisected() -> None:
    """An invalid token (code 190) fails the whole request without splitting the batch."""
    connector = MetaCapiConnector("meta", MetaCapiSettings(pixel_id="1234567890", access_token="t"))
    body = b'{"error": {"message": "bad token", "type": "OAuthException", "code": 190}}'
    outcome = connector.interpret(HttpResponse(400, {}, body), _any_request())
    assert outcome.kind == "permanent"
    assert outcome.event_specific is False
    bad_event = json.dumps(
        {"error": {"message": "x", "type": "OAuthException", "code": 100, "error_subcode": 2804003}}
    ).encode()
    assert (
        connector.interpret(HttpResponse(400, {}, bad_event), _any_request()).event_specific is True
    )


def _any_request() -> HttpRequest:
    return HttpRequest(method="POST", url="https://x", headers={}, body=b"", indices=(0, 1))


# --- documented payload rules (issue 11) -------------------------------------------------------
# Meta custom data parameters
# (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data):
# value "Required for purchase events", currency "Required for purchase events", ISO 4217.


def test_purchase_without_currency_is_skipped_with_missing_required() -> None:
    """A Purchase without an ISO 4217 currency is never sent: Meta rejects the request."""
    encoded = connector().encode([track("Order Completed", {"revenue": 20})], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "missing_required")]
    assert encoded.requests == []


@pytest.mark.parametrize("currency", ["euro", "EURO", "€", "XTS"])
def test_purchase_with_invalid_currency_is_skipped(currency: str) -> None:
    """ "euro" is not ISO 4217: the default currency must not price it, the event is skipped."""
    delivery = track("Order Completed", {"revenue": 20, "currency": currency})
    encoded = connector(default_currency="USD").encode([delivery], NOW)
    assert [d.reason for d in encoded.dropped] == ["missing_required"]


def test_purchase_without_value_is_skipped() -> None:
    """A Purchase needs custom_data.value: no amount anywhere, no event."""
    encoded = connector().encode([track("Order Completed", {"currency": "USD"})], NOW)
    assert [d.reason for d in encoded.dropped] == ["missing_required"]


def test_purchase_takes_the_destination_default_currency() -> None:
    """default_currency prices a purchase whose event names no currency."""
    event = only_event(track("Order Completed", {"revenue": 20}), default_currency="eur")
    assert (event["custom_data"]["value"], event["custom_data"]["currency"]) == (20, "EUR")


def test_other_events_lose_a_value_without_currency_but_are_sent() -> None:
    """AddToCart with a value and no currency: sent without value, the omission counted."""
    product = {"product_id": "p1", "price": 5, "quantity": 2}
    encoded = connector().encode([track("Product Added", product)], NOW)
    custom = body_of(encoded.requests[0])["data"][0]["custom_data"]
    assert "value" not in custom
    assert custom["contents"] == [{"id": "p1", "quantity": 2, "item_price": 5}]
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "missing_currency")]


def test_value_is_revenue_first_like_ga4_and_tiktok() -> None:
    """Segment spec: revenue, then total (https://segment.com/docs/connections/spec/ecommerce/v2/)."""
    properties = {"revenue": 25.0, "total": 31.5, "value": 40, "price": 3, "currency": "EUR"}
    assert only_event(track("Order Completed", properties))["custom_data"]["value"] == 25.0


def test_phone_without_country_code_is_omitted_and_counted() -> None:
    """(650) 555-1212 without default_phone_country_code: no ph (never +6505551212)."""
    delivery = track("A", context={**web_context(), "traits": {"phone": "(650) 555-1212"}})
    encoded = connector().encode([delivery], NOW)
    user_data = body_of(encoded.requests[0])["data"][0]["user_data"]
    assert "ph" not in user_data
    assert [(o.field, o.reason) for o in encoded.omitted] == [("phone", "no_country_code")]
    assert "phone" not in encoded.matched[0]
    with_code = connector(default_phone_country_code="1").encode([delivery], NOW)
    assert body_of(with_code.requests[0])["data"][0]["user_data"]["ph"] == [META_PH]
    assert "phone" in with_code.matched[0]


def test_full_state_and_country_names_and_birthdays_are_normalized() -> None:
    """st: "the 2-character ANSI abbreviation code in lowercase" (California -> ca); country:
    ISO 3166-1 alpha-2 (United States -> us); db: YYYYMMDD (2/16/1997 -> 19970216)
    (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters)."""
    traits = {
        "birthday": "2/16/1997",
        "address": {"state": "California", "country": "United States"},
    }
    event = only_event(track("A", context={**web_context(), "traits": traits}))
    user_data = event["user_data"]
    assert user_data["st"] == hashing.sha256_hex("ca")
    assert user_data["country"] == hashing.sha256_hex("us")
    # Meta's published example hash for country "us".
    assert user_data["country"] == (
        "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
    )
    assert user_data["db"] == hashing.sha256_hex("19970216")


def test_unusable_country_and_birthday_are_omitted_and_counted() -> None:
    """A country that is no ISO code or known name, a date that does not exist: left out."""
    traits = {"birthday": "1997-02-30", "address": {"country": "Atlantis"}}
    encoded = connector().encode([track("A", context={**web_context(), "traits": traits})], NOW)
    user_data = body_of(encoded.requests[0])["data"][0]["user_data"]
    assert "db" not in user_data
    assert "country" not in user_data
    assert sorted((o.field, o.reason) for o in encoded.omitted) == [
        ("birthday", "invalid_date"),
        ("country", "invalid_country"),
    ]


def test_matched_lists_the_match_keys_sent() -> None:
    """matched: the kinds of identifiers Meta can match this event on."""
    context = {**web_context(), "traits": {"email": "a@b.co"}}
    delivery = track("A", {"fbc": "fb.1.1554763741205.AbCd"}, userId="u-1", context=context)
    encoded = connector().encode([delivery], NOW)
    assert encoded.matched == {
        0: ("click_id", "email", "external_id", "ip", "user_agent"),
    }
