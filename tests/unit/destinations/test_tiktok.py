"""TikTok Events API 2.0 encoder and response interpretation (pure)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

from destinations.base import ConsentFacts, Delivery, HttpRequest, HttpResponse
from destinations.tiktok import TikTokConnector, TikTokSettings

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
WHEN = datetime(2026, 11, 22, 11, 59, 30, 900000, tzinfo=UTC)
WHEN_S = 1795348770
PHONE_HASH = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
"""SHA-256 of +16505551212 (the reference's worked example)."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def connector(**settings: Any) -> TikTokConnector:
    base = {"access_token": "tok-abc", "pixel_code": "CPIXEL123"}
    return TikTokConnector("tt", TikTokSettings(**(base | settings)))


def delivery(
    type_: str = "track",
    event: str | None = "Order Completed",
    consent: ConsentFacts | None = None,
    **payload: Any,
) -> Delivery:
    return Delivery(
        message_id=payload.pop("messageId", "msg-1"),
        type=type_,
        timestamp=WHEN,
        payload=payload,
        event=event,
        consent=consent or ConsentFacts(),
    )


def body(request: HttpRequest) -> dict[str, Any]:
    decoded = msgspec.json.decode(request.body)
    assert isinstance(decoded, dict)
    return decoded


def only_event(delivery_: Delivery, **settings: Any) -> dict[str, Any]:
    encoded = connector(**settings).encode([delivery_], NOW)
    assert encoded.dropped == []
    [event] = body(encoded.requests[0])["data"]
    assert isinstance(event, dict)
    return event


def answer(code: int, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {}, msgspec.json.encode({"code": code, "message": "m"}))


REQUEST = HttpRequest("POST", "u", {}, b"{}", (0, 1))


@pytest.mark.parametrize(
    ("segment", "tiktok"),
    [
        ("Order Completed", "CompletePayment"),
        ("Product Added", "AddToCart"),
        ("Product Added to Wishlist", "AddToWishlist"),
        ("Product Viewed", "ViewContent"),
        ("Checkout Started", "InitiateCheckout"),
        ("Payment Info Entered", "AddPaymentInfo"),
        ("Products Searched", "Search"),
        ("Signed Up", "CompleteRegistration"),
        ("Trial Extended", "Trial Extended"),
    ],
)
def test_segment_spec_events_map_to_tiktok_standard_events(segment: str, tiktok: str) -> None:
    """Spec events become standard events; any other name goes as a custom event."""
    assert only_event(delivery(event=segment))["event"] == tiktok


def test_purchase_event_and_event_names_settings_change_the_mapping() -> None:
    """purchase_event renames Order Completed; event_names overrides or adds names."""
    assert only_event(delivery(), purchase_event="Purchase")["event"] == "Purchase"
    renamed = only_event(delivery(event="Lead Captured"), event_names={"Lead Captured": "Lead"})
    assert renamed["event"] == "Lead"


def test_envelope_is_web_pixel_with_access_token_header() -> None:
    """event_source web, the pixel as event_source_id, the token in Access-Token only."""
    request = connector(test_event_code="TEST123").encode([delivery()], NOW).requests[0]
    assert request.url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert request.headers["Access-Token"] == "tok-abc"
    decoded = body(request)
    assert decoded["event_source"] == "web"
    assert decoded["event_source_id"] == "CPIXEL123"
    assert decoded["test_event_code"] == "TEST123"
    assert "tok-abc" not in request.body.decode()
    assert "tok-abc" not in msgspec.json.encode(request.redacted()).decode()


def test_event_has_unix_seconds_time_and_message_id_as_event_id() -> None:
    """event_time is whole Unix seconds; event_id is the messageId (dedup with the pixel)."""
    event = only_event(delivery(messageId="m-77"))
    assert event["event_time"] == WHEN_S
    assert event["event_id"] == "m-77"


def test_email_phone_and_user_id_are_normalized_then_hashed() -> None:
    """Email lower-cased and trimmed, phone E.164 with +, external id: SHA-256 hex each."""
    event = only_event(
        delivery(
            userId="user-12345",
            context={"traits": {"email": "  John.Doe@Example.COM ", "phone": "+1 (650) 555-1212"}},
        )
    )
    assert event["user"] == {
        "email": sha256("john.doe@example.com"),
        "phone": PHONE_HASH,
        "external_id": sha256("user-12345"),
    }


def test_national_phone_uses_the_default_country_code() -> None:
    """A phone without country code is completed with default_phone_country_code."""
    event = only_event(delivery(traits={"phone": "(650) 555-1212"}), default_phone_country_code="1")
    assert event["user"]["phone"] == PHONE_HASH


def test_already_hashed_values_pass_through_and_unusable_ones_are_left_out() -> None:
    """A SHA-256 email is not hashed twice; an unparseable phone is omitted."""
    digest = sha256("jane@example.com")
    event = only_event(delivery(properties={"email": digest.upper(), "phone": "12"}))
    assert event["user"] == {"email": digest}


def test_ip_user_agent_locale_and_click_ids_are_sent_in_clear() -> None:
    """ip, user_agent, locale, ttclid (also from the page URL) and ttp are not hashed."""
    context = {
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0",
        "locale": "en-US",
        "page": {"url": "https://shop.example/p?ttclid=E.C.P.abc&x=1", "referrer": "https://r/"},
        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
    }
    event = only_event(delivery(context=context))
    assert event["user"] == {
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "locale": "en-US",
        "ttclid": "E.C.P.abc",
        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
    }
    assert event["page"] == {
        "url": "https://shop.example/p?ttclid=E.C.P.abc&x=1",
        "referrer": "https://r/",
    }


def test_order_products_become_contents_with_value_and_currency() -> None:
    """products[] -> contents[], revenue -> value, currency upper case, order_id kept."""
    properties = {
        "order_id": "T1",
        "revenue": 46,
        "currency": "usd",
        "products": [
            {"product_id": "1077218", "name": "Mug", "price": 8, "quantity": 2, "brand": "Acme"},
            {"sku": "SKU-2", "category": "Cups", "price": 30, "quantity": 1},
            "not a product",
        ],
    }
    event = only_event(delivery(properties=properties))
    assert event["properties"] == {
        "value": 46,
        "currency": "USD",
        "contents": [
            {
                "content_id": "1077218",
                "content_name": "Mug",
                "brand": "Acme",
                "price": 8,
                "quantity": 2,
            },
            {"content_id": "SKU-2", "content_category": "Cups", "price": 30, "quantity": 1},
        ],
        "content_type": "product",
        "order_id": "T1",
    }


def test_single_product_event_describes_the_product_itself() -> None:
    """Product Viewed's own properties become one content; price is the value."""
    properties = {"product_id": "p1", "name": "Mug", "price": 8, "currency": "EUR"}
    event = only_event(delivery(event="Product Viewed", properties=properties))
    assert event["properties"] == {
        "value": 8,
        "currency": "EUR",
        "contents": [{"content_id": "p1", "content_name": "Mug", "price": 8}],
        "content_type": "product",
    }


def test_search_query_is_sent() -> None:
    """Products Searched carries its query."""
    event = only_event(delivery(event="Products Searched", properties={"query": "blue mug"}))
    assert event["properties"] == {"query": "blue mug"}


@pytest.mark.parametrize(
    ("consent", "limited"),
    [
        (ConsentFacts(), False),
        (ConsentFacts(us_opt_out=True), True),
        (ConsentFacts(gpc=True), True),
    ],
)
def test_limited_data_use_follows_us_opt_out_and_gpc(consent: ConsentFacts, limited: bool) -> None:
    """limited_data_use is true when the person opted out (US) or sent GPC."""
    assert only_event(delivery(consent=consent))["limited_data_use"] is limited


def test_pages_are_not_sent_unless_page_event_is_set() -> None:
    """page is dropped by default; page_event names the TikTok event to send."""
    dropped = connector().encode([delivery("page", None)], NOW).dropped
    assert [d.reason for d in dropped] == ["unsupported_type"]
    assert only_event(delivery("page", None), page_event="Pageview")["event"] == "Pageview"


@pytest.mark.parametrize("type_", ["identify", "group", "alias", "screen"])
def test_calls_other_than_track_and_page_are_dropped(type_: str) -> None:
    """identify, group, alias and screen have no TikTok web event."""
    assert connector().encode([delivery(type_, None)], NOW).dropped[0].reason == (
        "unsupported_type"
    )


def test_track_without_a_name_is_dropped() -> None:
    """A track without a name has no event to send."""
    assert connector().encode([delivery(event=None)], NOW).dropped[0].reason == "missing_event"


def test_only_payload_fields_reach_the_wire() -> None:
    """A minimal payload sends only the event fields; unread keys never leave."""
    encoded = connector().encode(
        [delivery(writeKey="wk-secret", integrations={"All": True}, anonymousId="anon-leak")],
        NOW,
    )
    text = encoded.requests[0].body.decode()
    for leak in ("wk-secret", "integrations", "anon-leak"):
        assert leak not in text
    [event] = body(encoded.requests[0])["data"]
    assert set(event) == {"event", "event_time", "event_id", "limited_data_use"}


def test_splits_batches_at_1000_events() -> None:
    """1,001 events make two requests of 1,000 and 1."""
    batch = [delivery(messageId=f"m{i}") for i in range(1001)]
    requests = connector().encode(batch, NOW).requests
    assert [len(r.indices) for r in requests] == [1000, 1]
    assert len(body(requests[0])["data"]) == 1000


def test_settings_validate_pixel_and_limits() -> None:
    """A pixel code with spaces, an unknown purchase event or 1,001 events are refused."""
    with pytest.raises(pydantic.ValidationError):
        TikTokSettings(access_token="t", pixel_code="C PIXEL")
    with pytest.raises(pydantic.ValidationError):
        TikTokSettings(access_token="t", pixel_code="C1", purchase_event="Buy")
    with pytest.raises(pydantic.ValidationError):
        TikTokSettings(access_token="t", pixel_code="C1", max_events_per_request=1001)


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (0, "ok", ""),
        (20001, "ok", "partial_success"),
        (40100, "retry", "rate_limited"),
        (40700, "retry", "platform_error"),
        (50000, "retry", "platform_error"),
        (40001, "permanent", "no_permission"),
        (40002, "permanent", "invalid_params"),
        (40104, "permanent", "missing_access_token"),
        (40105, "permanent", "invalid_access_token"),
        (40102, "permanent", "auth_error"),
        (41000, "permanent", "api_error"),
    ],
)
def test_business_api_codes_decide_the_outcome(code: int, kind: str, reason: str) -> None:
    """HTTP 200 answers are judged by their code."""
    outcome = connector().interpret(answer(code), REQUEST)
    assert (outcome.kind, outcome.reason) == (kind, reason)


def test_unreadable_200_answer_retries() -> None:
    """A 200 without a JSON code is retried (event_id dedups the resend)."""
    outcome = connector().interpret(HttpResponse(200, {}, b"<html>"), REQUEST)
    assert (outcome.kind, outcome.reason) == ("retry", "invalid_response")


@pytest.mark.parametrize(("status", "kind"), [(429, "retry"), (500, "retry"), (401, "permanent")])
def test_non_200_statuses_follow_the_retry_table(status: int, kind: str) -> None:
    """Other HTTP statuses use the shared table."""
    assert connector().interpret(answer(0, status), REQUEST).kind == kind


# --- documented payload rules (issue 11) -------------------------------------------------------
# TikTok Events API 2.0 properties: currency is an ISO 4217 code; a request with an invalid
# parameter is refused as a whole with code 40002 (RudderStack's tiktok_ads handling and
# TikTok's error code list).


def test_40002_is_bisected_but_token_errors_are_not() -> None:
    """40002 may come from one event (bisect); 40001 and 401xx concern the whole request."""
    connector_ = connector()
    assert connector_.split_on_rejection
    assert connector_.interpret(answer(40002), REQUEST).event_specific
    for code in (40001, 40104, 40105, 40102, 41000):
        assert not connector_.interpret(answer(code), REQUEST).event_specific, code


@pytest.mark.parametrize("currency", ["euro", "EURO", "Eur0", "$"])
def test_invalid_currency_leaves_with_its_value(currency: str) -> None:
    """ "euro" never leaves as "EURO": value and currency are removed and counted."""
    encoded = connector(default_currency="USD").encode(
        [delivery(properties={"revenue": 46, "currency": currency})], NOW
    )
    [event] = body(encoded.requests[0])["data"]
    assert "currency" not in event.get("properties", {})
    assert "value" not in event.get("properties", {})
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "invalid_currency")]


def test_value_is_revenue_then_total_with_a_valid_currency() -> None:
    """The same value as GA4 and Meta for one order (Segment spec: revenue, then total)."""
    properties = {"revenue": 40, "total": 46, "value": 50, "currency": "usd"}
    event = only_event(delivery(properties=properties))
    assert (event["properties"]["value"], event["properties"]["currency"]) == (40, "USD")
    event = only_event(delivery(properties={"total": 46}), default_currency="EUR")
    assert (event["properties"]["value"], event["properties"]["currency"]) == (46, "EUR")


def test_value_without_any_currency_is_left_out() -> None:
    """No currency and no default: no value (counted)."""
    encoded = connector().encode([delivery(properties={"revenue": 40})], NOW)
    [event] = body(encoded.requests[0])["data"]
    assert "value" not in event.get("properties", {})
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "missing_currency")]


def test_phone_without_country_code_is_omitted_and_matched_keys_reported() -> None:
    """(650) 555-1212 without default code: no user.phone; matched lists what was sent."""
    traits = {"phone": "(650) 555-1212", "email": "a@b.co"}
    encoded = connector().encode([delivery(context={"traits": traits}, userId="u-1")], NOW)
    [event] = body(encoded.requests[0])["data"]
    assert "phone" not in event["user"]
    assert [(o.field, o.reason) for o in encoded.omitted] == [("phone", "no_country_code")]
    assert encoded.matched == {0: ("email", "external_id")}
