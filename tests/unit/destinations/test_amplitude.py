"""Amplitude encoder and response interpretation (pure)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

from destinations.amplitude import AmplitudeConnector, AmplitudeSettings
from destinations.base import DeletionSkipped, Delivery, HttpRequest, HttpResponse

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
WHEN = datetime(2026, 11, 22, 11, 59, 30, 123000, tzinfo=UTC)
WHEN_MS = 1795348770123


def connector(**settings: Any) -> AmplitudeConnector:
    return AmplitudeConnector("amp", AmplitudeSettings(api_key="key-123", **settings))


def delivery(
    type_: str = "track", event: str | None = "Order Completed", **payload: Any
) -> Delivery:
    payload.setdefault("userId", "user-12345")
    return Delivery(
        message_id=payload.pop("messageId", "msg-1"),
        type=type_,
        timestamp=WHEN,
        payload=payload,
        event=event,
    )


def body(request: HttpRequest) -> dict[str, Any]:
    decoded = msgspec.json.decode(request.body)
    assert isinstance(decoded, dict)
    return decoded


def only_event(delivery_: Delivery, **settings: Any) -> dict[str, Any]:
    encoded = connector(**settings).encode([delivery_], NOW)
    assert encoded.dropped == []
    events = body(encoded.requests[0])["events"]
    assert len(events) == 1
    event: dict[str, Any] = events[0]
    return event


def response(status: int, answer: dict[str, Any], **headers: str) -> HttpResponse:
    return HttpResponse(status=status, headers=headers, body=msgspec.json.encode(answer))


def request_for(count: int) -> HttpRequest:
    events = [{"user_id": f"user-{i:05d}", "event_type": "x"} for i in range(count)]
    payload = {"api_key": "key-123", "events": events}
    return HttpRequest("POST", "u", {}, msgspec.json.encode(payload), tuple(range(count)))


def test_encodes_track_event_with_ids_time_insert_id_and_properties() -> None:
    """A track event carries user_id, device_id, event_type, ms time, insert_id, properties."""
    event = only_event(
        delivery(
            anonymousId="anon-abcdef",
            properties={"order_id": "T1", "revenue": 49.99, "currency": "eur"},
            messageId="m-42",
        )
    )
    assert event == {
        "user_id": "user-12345",
        "device_id": "anon-abcdef",
        "event_type": "Order Completed",
        "time": WHEN_MS,
        "insert_id": "m-42",
        "event_properties": {"order_id": "T1", "revenue": 49.99, "currency": "eur"},
        "revenue": 49.99,
        "currency": "EUR",
    }


def test_request_carries_api_key_in_body_and_posts_json_to_us_endpoint() -> None:
    """The request posts JSON with the api_key in the body to the US HTTP V2 URL."""
    request = connector().encode([delivery()], NOW).requests[0]
    assert request.method == "POST"
    assert request.url == "https://api2.amplitude.com/2/httpapi"
    assert request.headers["Content-Type"] == "application/json"
    assert body(request)["api_key"] == "key-123"
    assert "options" not in body(request)
    assert request.indices == (0,)


def test_api_key_is_masked_when_the_request_is_shown() -> None:
    """The api_key is listed as a secret, so the redacted request hides it."""
    request = connector().encode([delivery()], NOW).requests[0]
    assert "key-123" not in msgspec.json.encode(request.redacted()).decode()


def test_eu_region_and_endpoint_override_choose_the_url() -> None:
    """region eu uses the EU host; endpoint_url overrides both."""
    assert connector(region="eu").url == "https://api.eu.amplitude.com/2/httpapi"
    assert connector(endpoint_url="http://127.0.0.1:9/x").url == "http://127.0.0.1:9/x"


def test_page_and_screen_use_loaded_names_and_keep_the_page_name() -> None:
    """page -> 'Loaded a Page', screen -> 'Loaded a Screen', the name in event_properties."""
    page = only_event(delivery("page", None, name="Pricing", properties={"path": "/pricing"}))
    assert page["event_type"] == "Loaded a Page"
    assert page["event_properties"] == {"path": "/pricing", "name": "Pricing"}
    screen = only_event(delivery("screen", None, name="Home"))
    assert screen["event_type"] == "Loaded a Screen"
    named = only_event(delivery("page", None), page_event_type="[Segment] Page")
    assert named["event_type"] == "[Segment] Page"


def test_identify_becomes_identify_event_setting_traits() -> None:
    """identify -> $identify with user_properties.$set = traits and no event_properties."""
    event = only_event(delivery("identify", None, traits={"plan": "pro", "seats": 3}))
    assert event["event_type"] == "$identify"
    assert event["user_properties"] == {"$set": {"plan": "pro", "seats": 3}}
    assert "event_properties" not in event


def test_identify_without_traits_is_dropped() -> None:
    """An identify with nothing to set is dropped with no_traits."""
    encoded = connector().encode([delivery("identify", None)], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "no_traits")]
    assert encoded.requests == []


@pytest.mark.parametrize("type_", ["group", "alias"])
def test_group_and_alias_are_dropped_as_unsupported(type_: str) -> None:
    """group and alias calls are not sent to Amplitude."""
    encoded = connector().encode([delivery(type_, None)], NOW)
    assert [d.reason for d in encoded.dropped] == ["unsupported_type"]


def test_track_without_event_name_is_dropped() -> None:
    """A track without an event name cannot become an event_type."""
    assert connector().encode([delivery(event=None)], NOW).dropped[0].reason == "missing_event"


@pytest.mark.parametrize("name", ["$identify", "[Amplitude] Revenue"])
def test_reserved_event_names_are_dropped(name: str) -> None:
    """Event names Amplitude reserves are dropped before sending."""
    dropped = connector().encode([delivery(event=name)], NOW).dropped
    assert [d.reason for d in dropped] == ["reserved_event_name"]


def test_event_whose_ids_are_all_too_short_is_dropped() -> None:
    """Ids under 5 characters are removed by Amplitude, so an event with only such ids drops."""
    encoded = connector().encode([delivery(userId="abcd", anonymousId="ab")], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "id_too_short")]
    assert encoded.requests == []


def test_short_user_id_is_removed_when_device_id_is_valid() -> None:
    """A too-short user_id is left out while the valid device_id carries the event."""
    event = only_event(delivery(userId="abcd", anonymousId="anon-abcdef"))
    assert "user_id" not in event
    assert event["device_id"] == "anon-abcdef"


def test_min_id_length_allows_short_ids_and_is_sent_in_options() -> None:
    """min_id_length lowers the limit and travels as options.min_id_length."""
    amplitude = connector(min_id_length=3)
    request = amplitude.encode([delivery(userId="abc")], NOW).requests[0]
    assert body(request)["events"][0]["user_id"] == "abc"
    assert body(request)["options"] == {"min_id_length": 3}


def test_event_without_any_id_is_dropped() -> None:
    """An event with neither userId nor anonymousId drops with missing_id."""
    encoded = connector().encode([delivery(userId=None)], NOW)
    assert [d.reason for d in encoded.dropped] == ["missing_id"]


def test_ids_on_amplitudes_invalid_list_are_dropped() -> None:
    """'undefined' and friends are refused by Amplitude, so the event drops with invalid_id."""
    encoded = connector().encode([delivery(userId="undefined", anonymousId="null")], NOW)
    assert [d.reason for d in encoded.dropped] == ["invalid_id"]


def test_numeric_user_id_is_sent_as_a_string() -> None:
    """An integer userId becomes its digits."""
    assert only_event(delivery(userId=1234567))["user_id"] == "1234567"


def test_context_fields_map_to_amplitude_top_level_fields() -> None:
    """ip, user agent, locale, OS, device, app, carrier and location come from context."""
    context = {
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0",
        "locale": "en-US",
        "os": {"name": "iOS", "version": "17.1"},
        "device": {"type": "ios", "manufacturer": "Apple", "model": "iPhone15,2"},
        "app": {"version": "4.2.0"},
        "network": {"carrier": "T-Mobile"},
        "location": {"country": "US", "city": "Austin", "latitude": 30.2, "longitude": -97.7},
        "traits": {"plan": "pro"},
    }
    event = only_event(delivery(context=context))
    expected = {
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "language": "en-US",
        "os_name": "iOS",
        "os_version": "17.1",
        "platform": "ios",
        "device_manufacturer": "Apple",
        "device_model": "iPhone15,2",
        "app_version": "4.2.0",
        "carrier": "T-Mobile",
        "country": "US",
        "city": "Austin",
        "location_lat": 30.2,
        "location_lng": -97.7,
        "user_properties": {"plan": "pro"},
    }
    assert {k: event[k] for k in expected} == expected


def test_only_payload_fields_reach_the_wire() -> None:
    """Keys the mapping does not read (writeKey, integrations, unknown) never leave."""
    request = (
        connector()
        .encode(
            [
                delivery(
                    writeKey="wk-secret",
                    integrations={"All": True},
                    sentAt="leak-sent-at",
                    unexpected="leak-value",
                )
            ],
            NOW,
        )
        .requests[0]
    )
    text = request.body.decode()
    for leak in ("wk-secret", "integrations", "leak-sent-at", "leak-value"):
        assert leak not in text
    event = body(request)["events"][0]
    assert set(event) == {"user_id", "event_type", "time", "insert_id"}


def test_splits_batches_at_the_event_limit() -> None:
    """max_events_per_request bounds each request; indices keep batch positions."""
    batch = [delivery(messageId=f"m{i}") for i in range(5)]
    requests = connector(max_events_per_request=2).encode(batch, NOW).requests
    assert [r.indices for r in requests] == [(0, 1), (2, 3), (4,)]


def test_splits_batches_at_the_byte_limit_and_every_body_fits() -> None:
    """Requests are split so that no body exceeds max_body_bytes."""
    batch = [delivery(messageId=f"m{i}", properties={"blob": "x" * 3000}) for i in range(10)]
    requests = connector(max_body_bytes=10_000).encode(batch, NOW).requests
    assert len(requests) > 1
    assert all(len(r.body) <= 10_000 for r in requests)
    assert [i for r in requests for i in r.indices] == list(range(10))


def test_event_larger_than_the_body_limit_is_dropped() -> None:
    """An event that cannot fit even alone drops with too_large; the others still go."""
    batch = [delivery(properties={"blob": "x" * 6000}), delivery(messageId="m2")]
    encoded = connector(max_body_bytes=5000).encode(batch, NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "too_large")]
    assert [r.indices for r in encoded.requests] == [(1,)]


def test_default_limits_follow_amplitude_documentation() -> None:
    """Requests default to 1,000 events and 1 MB; the setting refuses 2,000 events."""
    settings = AmplitudeSettings(api_key="k")
    assert settings.max_events_per_request == 1000
    assert settings.max_body_bytes == 1_000_000
    with pytest.raises(pydantic.ValidationError):
        AmplitudeSettings(api_key="k", max_events_per_request=2000)


def test_settings_refuse_unknown_keys_and_unknown_regions() -> None:
    """Configuration errors are caught by the settings model."""
    with pytest.raises(pydantic.ValidationError):
        AmplitudeSettings(api_key="k", apikey="typo")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        AmplitudeSettings(api_key="k", region="apac")


def test_200_is_ok() -> None:
    """A 200 answer delivers the whole request."""
    outcome = connector().interpret(response(200, {"code": 200}), request_for(2))
    assert (outcome.kind, outcome.failed) == ("ok", {})


def test_400_naming_events_fails_them_and_retries_the_rest() -> None:
    """Named positions fail permanently; Amplitude ingested nothing, so the rest retries."""
    answer = {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"user_id": [1]},
        "events_with_missing_fields": {"event_type": [3]},
    }
    outcome = connector().interpret(response(400, answer), request_for(4))
    assert outcome.kind == "retry"
    assert outcome.reason == "partial_rejection"
    assert outcome.failed == {1: "invalid_field", 3: "missing_field"}


def test_400_silenced_devices_fail_permanently() -> None:
    """silenced_events positions fail; the rest retries."""
    answer = {"code": 400, "error": "Events silenced for device_id", "silenced_events": [0]}
    outcome = connector().interpret(response(400, answer), request_for(2))
    assert (outcome.kind, outcome.failed) == ("retry", {0: "device_silenced"})


def test_400_naming_every_event_is_permanent() -> None:
    """When every position failed there is nothing left to retry."""
    answer = {"code": 400, "events_with_invalid_fields": {"time": [0]}}
    outcome = connector().interpret(response(400, answer), request_for(1))
    assert (outcome.kind, outcome.failed) == ("permanent", {0: "invalid_field"})


def test_400_indices_outside_the_request_are_ignored() -> None:
    """A position the request does not hold is not reported."""
    answer = {"code": 400, "events_with_invalid_fields": {"time": [7, True, "1"]}}
    outcome = connector().interpret(response(400, answer), request_for(2))
    assert (outcome.kind, outcome.reason, outcome.failed) == ("permanent", "invalid_request", {})


def test_400_invalid_api_key_fails_every_event_so_nothing_is_bisected() -> None:
    """A bad key fails each position permanently: no split of the request could succeed."""
    outcome = connector().interpret(
        response(400, {"code": 400, "error": "Invalid API key"}), request_for(2)
    )
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_api_key")
    assert outcome.failed == {0: "invalid_api_key", 1: "invalid_api_key"}


def test_413_is_permanent_and_the_worker_may_bisect() -> None:
    """413 is payload_too_large; split_on_rejection lets the worker bisect the request."""
    outcome = connector().interpret(response(413, {"code": 413}), request_for(2))
    assert (outcome.kind, outcome.reason) == ("permanent", "payload_too_large")
    assert AmplitudeConnector.split_on_rejection is True


def test_429_retries_after_the_documented_30_seconds() -> None:
    """Without Retry-After a throttled request waits Amplitude's 30 s pause."""
    answer = {"code": 429, "eps_threshold": 30, "throttled_events": [0, 1]}
    outcome = connector().interpret(response(429, answer), request_for(2))
    assert (outcome.kind, outcome.reason, outcome.retry_after_s) == ("retry", "throttled", 30.0)


def test_429_honours_retry_after() -> None:
    """A Retry-After header wins over the default pause."""
    outcome = connector().interpret(response(429, {}, **{"Retry-After": "7"}), request_for(1))
    assert outcome.retry_after_s == 7.0


def test_429_fails_events_of_users_over_their_daily_quota() -> None:
    """Events of users or devices over the daily quota fail; the others retry."""
    answer = {
        "code": 429,
        "throttled_events": [1],
        "exceeded_daily_quota_users": {"user-00001": 500001},
    }
    outcome = connector().interpret(response(429, answer), request_for(3))
    assert (outcome.kind, outcome.failed) == ("retry", {1: "daily_quota_exceeded"})


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_retry(status: int) -> None:
    """5xx answers retry (insert_id makes the resend safe)."""
    assert connector().interpret(response(status, {}), request_for(1)).kind == "retry"


def test_deletion_request_uses_basic_auth_and_masks_keys() -> None:
    """The User Privacy API request authenticates with api_key:secret_key and hides both."""
    amplitude = connector(secret_key="sec-999", deletion_requester="dpo@example.com")
    request = amplitude.deletion_request(["user-12345"])
    assert isinstance(request, HttpRequest)
    assert request.url == "https://amplitude.com/api/2/deletions/users"
    expected = base64.b64encode(b"key-123:sec-999").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert body(request) == {
        "user_ids": ["user-12345"],
        "ignore_invalid_id": True,
        "requester": "dpo@example.com",
    }
    shown = msgspec.json.encode(request.redacted()).decode()
    assert "sec-999" not in shown
    assert expected not in shown
    eu = connector(region="eu", secret_key="s").deletion_request(["u"])
    assert isinstance(eu, HttpRequest)
    assert eu.url.startswith("https://analytics.eu.amplitude.com/")


def test_deletion_is_skipped_without_secret_ids_or_over_the_id_limit() -> None:
    """No secret key, no ids or over 100 ids: a skip with its reason, nothing to send."""
    assert connector().deletion_request(["u"]) == DeletionSkipped("no_secret_key")
    keyed = connector(secret_key="s")
    assert keyed.deletion_request([]) == DeletionSkipped("no_ids")
    ids = [f"user-{n}" for n in range(101)]
    assert keyed.deletion_request(ids) == DeletionSkipped("too_many_ids")


@pytest.mark.parametrize("currency", ["euro", "EURO", "dollars", 840])
def test_invalid_currency_is_removed_with_the_revenue(currency: Any) -> None:
    """HTTP V2 ``currency`` is ISO 4217 (https://amplitude.com/docs/apis/analytics/http-v2);
    Amplitude answers 400 for the event otherwise: revenue and currency go, counted."""
    properties = {"revenue": 12.5, "currency": currency}
    encoded = connector().encode([delivery(properties=properties)], NOW)
    [event] = body(encoded.requests[0])["events"]
    assert "revenue" not in event
    assert "currency" not in event
    assert [(o.field, o.reason) for o in encoded.omitted] == [("value", "invalid_currency")]


def test_valid_currency_is_sent_upper_case_with_the_revenue() -> None:
    """ " eur " -> EUR with the revenue; no currency at all: the revenue alone."""
    event = only_event(delivery(properties={"revenue": 12.5, "currency": " eur "}))
    assert (event["revenue"], event["currency"]) == (12.5, "EUR")
    event = only_event(delivery(properties={"revenue": 12.5}))
    assert event["revenue"] == 12.5
    assert "currency" not in event
