"""Mixpanel encoder and response interpretation (pure)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pydantic
import pytest

from destinations.base import Delivery, HttpRequest, HttpResponse
from destinations.mixpanel import MixpanelConnector, MixpanelSettings, insert_id

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
WHEN = datetime(2026, 11, 22, 11, 59, 30, 123000, tzinfo=UTC)
WHEN_MS = 1795348770123
SERVICE_ACCOUNT = {
    "project_id": "424242",
    "service_account_username": "router.sa",
    "service_account_secret": "sa-secret-789",
}


def connector(**settings: Any) -> MixpanelConnector:
    if not {"api_secret", "project_token", "service_account_username"} & set(settings):
        settings = SERVICE_ACCOUNT | settings
    return MixpanelConnector("mp", MixpanelSettings(**settings))


def delivery(
    type_: str = "track",
    event: str | None = "Order Completed",
    timestamp: datetime = WHEN,
    **payload: Any,
) -> Delivery:
    payload.setdefault("userId", "user-12345")
    return Delivery(
        message_id=payload.pop("messageId", "msg-1"),
        type=type_,
        timestamp=timestamp,
        payload=payload,
        event=event,
    )


def events_of(request: HttpRequest) -> list[dict[str, Any]]:
    decoded = msgspec.json.decode(request.body)
    assert isinstance(decoded, list)
    return decoded


def only_event(delivery_: Delivery, **settings: Any) -> dict[str, Any]:
    encoded = connector(**settings).encode([delivery_], NOW)
    assert encoded.dropped == []
    [event] = events_of(encoded.requests[0])
    return event


def response(status: int, answer: dict[str, Any], **headers: str) -> HttpResponse:
    return HttpResponse(status=status, headers=headers, body=msgspec.json.encode(answer))


def request_for(count: int) -> HttpRequest:
    return HttpRequest("POST", "u", {}, b"[]", tuple(range(count)))


def test_encodes_track_event_with_the_properties_import_requires() -> None:
    """event, time (ms), distinct_id, $insert_id and the event's properties are sent."""
    event = only_event(
        delivery(anonymousId="anon-1", properties={"order_id": "T1", "total": 20}, messageId="m-1")
    )
    assert event == {
        "event": "Order Completed",
        "properties": {
            "order_id": "T1",
            "total": 20,
            "ip": 0,
            "time": WHEN_MS,
            "distinct_id": "user-12345",
            "$insert_id": "m-1",
            "$user_id": "user-12345",
            "$device_id": "anon-1",
        },
    }


def test_uuid_message_id_is_the_insert_id() -> None:
    """A UUID fits Mixpanel's 36 character rule and is used as is."""
    message_id = "29fc2962-6d9c-455d-95ad-95b84f09b9e4"
    assert insert_id(message_id) == message_id


@pytest.mark.parametrize(
    "message_id",
    ["ajs-next-1700000000000-9c0a7d1e-4b1f-4c55-9d4e-3e2f1a0b9c8d", "a_b.c", "undefined"],
)
def test_unfit_message_ids_become_a_stable_hash(message_id: str) -> None:
    """Too long, other characters or disallowed: the first 32 hex digits of its SHA-256."""
    expected = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    assert insert_id(message_id) == expected
    assert insert_id(message_id) == insert_id(message_id)


def test_anonymous_event_uses_anonymous_id_as_distinct_id() -> None:
    """Without userId the anonymousId is the distinct_id and the $device_id."""
    properties = only_event(delivery(userId=None, anonymousId="anon-9"))["properties"]
    assert properties["distinct_id"] == "anon-9"
    assert properties["$device_id"] == "anon-9"
    assert "$user_id" not in properties


def test_id_merge_off_omits_user_and_device_ids() -> None:
    """id_merge: false sends only distinct_id."""
    properties = only_event(delivery(anonymousId="anon-9"), id_merge=False)["properties"]
    assert "$user_id" not in properties
    assert "$device_id" not in properties


def test_disallowed_user_id_falls_back_to_anonymous_id() -> None:
    """A userId Mixpanel refuses ('null') gives way to a usable anonymousId."""
    properties = only_event(delivery(userId="null", anonymousId="anon-9"))["properties"]
    assert properties["distinct_id"] == "anon-9"


def test_event_without_usable_id_is_dropped() -> None:
    """No id at all drops with missing_id; only disallowed ids drop with invalid_id."""
    encoded = connector().encode(
        [delivery(userId=None), delivery(userId="undefined", anonymousId="0")], NOW
    )
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "missing_id"), (1, "invalid_id")]
    assert encoded.requests == []


def test_event_more_than_an_hour_ahead_is_dropped() -> None:
    """Mixpanel refuses events over 1 h in the future; 59 minutes ahead is still sent."""
    late = delivery(timestamp=NOW + timedelta(hours=1, seconds=1))
    soon = delivery(timestamp=NOW + timedelta(minutes=59))
    encoded = connector().encode([late, soon], NOW)
    assert [(d.index, d.reason) for d in encoded.dropped] == [(0, "time_in_future")]
    assert encoded.requests[0].indices == (1,)


def test_event_before_1971_is_dropped() -> None:
    """Mixpanel refuses times before 1971-01-01."""
    old = delivery(timestamp=datetime(1970, 6, 1, tzinfo=UTC))
    assert connector().encode([old], NOW).dropped[0].reason == "time_too_old"


@pytest.mark.parametrize("type_", ["identify", "group", "alias"])
def test_non_event_calls_are_not_sent_to_import(type_: str) -> None:
    """identify, group and alias are dropped with unsupported_type."""
    assert connector().encode([delivery(type_, None)], NOW).dropped[0].reason == (
        "unsupported_type"
    )


def test_page_and_screen_use_loaded_names_with_the_page_name() -> None:
    """page -> 'Loaded a Page', screen -> 'Loaded a Screen', name as a property."""
    page = only_event(delivery("page", None, name="Pricing"))
    assert page["event"] == "Loaded a Page"
    assert page["properties"]["name"] == "Pricing"
    assert only_event(delivery("screen", None))["event"] == "Loaded a Screen"


def test_context_becomes_mixpanel_default_properties() -> None:
    """ip, page URL, referrer, OS, device, app version and UTM fields come from context."""
    context = {
        "ip": "203.0.113.9",
        "page": {"url": "https://shop.example/p", "referrer": "https://ref.example/"},
        "os": {"name": "Mac OS X", "version": "14.1"},
        "device": {"manufacturer": "Apple", "model": "MacBookPro18,1"},
        "app": {"version": "2.0.1"},
        "campaign": {"source": "newsletter", "medium": "email", "name": "fall"},
    }
    properties = only_event(delivery(context=context))["properties"]
    expected = {
        "ip": "203.0.113.9",
        "$current_url": "https://shop.example/p",
        "$referrer": "https://ref.example/",
        "$os": "Mac OS X",
        "$os_version": "14.1",
        "$manufacturer": "Apple",
        "$model": "MacBookPro18,1",
        "$app_version_string": "2.0.1",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "fall",
    }
    assert {k: properties[k] for k in expected} == expected


def test_reserved_keys_in_properties_cannot_override_the_event_identity() -> None:
    """A 'time', 'distinct_id' or '$insert_id' property does not replace the real ones."""
    spoof = {"time": 1, "distinct_id": "someone-else", "$insert_id": "x", "token": "t"}
    properties = only_event(delivery(properties=spoof))["properties"]
    assert properties["time"] == WHEN_MS
    assert properties["distinct_id"] == "user-12345"
    assert properties["$insert_id"] == "msg-1"
    assert "token" not in properties


def test_only_payload_fields_reach_the_wire() -> None:
    """Keys the mapping does not read never leave."""
    encoded = connector().encode(
        [delivery(writeKey="wk-secret", integrations={"All": True}, unexpected="leak")], NOW
    )
    text = encoded.requests[0].body.decode()
    for leak in ("wk-secret", "integrations", "leak"):
        assert leak not in text
    [event] = events_of(encoded.requests[0])
    assert set(event["properties"]) == {"ip", "time", "distinct_id", "$insert_id", "$user_id"}


def test_service_account_request_has_basic_auth_strict_mode_and_project_id() -> None:
    """Service accounts authenticate with Basic user:secret and name the project."""
    request = connector().encode([delivery()], NOW).requests[0]
    assert request.url == "https://api.mixpanel.com/import?strict=1&project_id=424242"
    expected = base64.b64encode(b"router.sa:sa-secret-789").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"] == "application/json"
    shown = msgspec.json.encode(request.redacted()).decode()
    assert "sa-secret-789" not in shown
    assert expected not in shown


@pytest.mark.parametrize("credential", ["api_secret", "project_token"])
def test_secret_or_token_is_the_basic_user_name(credential: str) -> None:
    """The project secret or token is the Basic user name with an empty password."""
    request = connector(**{credential: "cred-1"}).encode([delivery()], NOW).requests[0]
    assert request.url == "https://api.mixpanel.com/import?strict=1"
    expected = base64.b64encode(b"cred-1:").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    ("region", "host"),
    [("eu", "https://api-eu.mixpanel.com"), ("in", "https://api-in.mixpanel.com")],
)
def test_region_chooses_the_residency_host(region: str, host: str) -> None:
    """EU and India residency projects use their own ingestion hosts."""
    assert connector(region=region).url.startswith(f"{host}/import?")


def test_endpoint_override_keeps_its_own_query() -> None:
    """endpoint_url gets strict and project_id appended."""
    url = connector(endpoint_url="http://127.0.0.1:1/import?x=1").url
    assert url == "http://127.0.0.1:1/import?x=1&strict=1&project_id=424242"


def test_settings_need_exactly_a_usable_credential() -> None:
    """No credential, half a service account, or a service account without project fail."""
    with pytest.raises(pydantic.ValidationError, match="one credential is required"):
        MixpanelSettings()
    with pytest.raises(pydantic.ValidationError, match="go together"):
        MixpanelSettings(service_account_username="sa")
    with pytest.raises(pydantic.ValidationError, match="needs project_id"):
        MixpanelSettings(service_account_username="sa", service_account_secret="s")


def test_splits_at_2000_events_and_at_the_byte_limit() -> None:
    """2,001 events make two requests; a small byte limit makes more, each within it."""
    batch = [delivery(messageId=f"m{i}") for i in range(2001)]
    requests = connector().encode(batch, NOW).requests
    assert [len(r.indices) for r in requests] == [2000, 1]
    small = connector(max_body_bytes=8192).encode(batch[:100], NOW).requests
    assert len(small) > 1
    assert all(len(r.body) <= 8192 for r in small)


def test_default_body_limit_stays_under_the_2_mib_of_the_api_reference() -> None:
    """Requests default to 1 MiB; the documented 10 MB is the most one may configure."""
    assert MixpanelSettings(project_token="t").max_body_bytes == 1024 * 1024
    with pytest.raises(pydantic.ValidationError):
        MixpanelSettings(project_token="t", max_body_bytes=11 * 1024 * 1024)


def test_400_with_failed_records_is_a_partial_success() -> None:
    """Mixpanel ingested the valid rows: the rest is ok, the failed positions are permanent."""
    answer = {
        "code": 400,
        "failed_records": [
            {"index": 1, "insert_id": "a", "field": "properties.time", "message": "bad"},
            {"index": 2, "insert_id": "b", "field": "properties.$insert_id", "message": "bad"},
            {"index": 3, "field": "properties.distinct_id", "message": "bad"},
            {"index": 9, "field": "event", "message": "not in this request"},
        ],
        "num_records_imported": 1,
    }
    outcome = connector().interpret(response(400, answer), request_for(4))
    assert outcome.kind == "ok"
    assert outcome.failed == {
        1: "invalid_time",
        2: "invalid_insert_id",
        3: "invalid_distinct_id",
    }


def test_400_without_failed_records_is_permanent() -> None:
    """A 400 that names no event (malformed request) fails the request."""
    outcome = connector().interpret(response(400, {"error": "bad json"}), request_for(2))
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_request")


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "invalid_credentials"), (403, "http_403"), (413, "payload_too_large")],
)
def test_auth_and_size_errors_are_permanent(status: int, reason: str) -> None:
    """401, 403 and 413 are permanent with a bounded reason."""
    outcome = connector().interpret(response(status, {}), request_for(2))
    assert (outcome.kind, outcome.reason) == ("permanent", reason)


def test_429_retries_and_honours_retry_after() -> None:
    """Rate limits retry, after Retry-After when given."""
    outcome = connector().interpret(response(429, {}, **{"Retry-After": "3"}), request_for(1))
    assert (outcome.kind, outcome.retry_after_s) == ("retry", 3.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_retry(status: int) -> None:
    """5xx retry; $insert_id dedups the resend."""
    assert connector().interpret(response(status, {}), request_for(1)).kind == "retry"


def test_deletion_request_targets_gdpr_api_with_bearer_token() -> None:
    """The deletion goes to /data-deletions/v3.0/ with the project token and OAuth token."""
    mixpanel = connector(project_token="tok-1", gdpr_token="oauth-1", region="eu")
    request = mixpanel.deletion_request(["user-12345"], "CCPA")
    assert isinstance(request, HttpRequest)
    assert request.url == "https://eu.mixpanel.com/api/app/data-deletions/v3.0/?token=tok-1"
    assert request.headers["Authorization"] == "Bearer oauth-1"
    assert msgspec.json.decode(request.body) == {
        "distinct_ids": ["user-12345"],
        "compliance_type": "CCPA",
    }
    shown = msgspec.json.encode(request.redacted()).decode()
    assert "oauth-1" not in shown
    assert "tok-1" not in shown


def test_413_is_split_and_other_refusals_are_request_wide() -> None:
    """413 (https://docs.mixpanel.com/reference/import-events: "request exceeds max limit"):
    the worker splits the request, as for Amplitude; 400 without failed_records, 401 and 403
    concern every event, so nothing is bisected."""
    connector_ = connector(api_secret="s")
    assert connector_.split_on_rejection
    too_large = {"code": 413, "error": "request exceeds max limit of 2097152 bytes"}
    outcome = connector_.interpret(response(413, too_large), request_for(4))
    assert (outcome.kind, outcome.reason, outcome.event_specific) == (
        "permanent",
        "payload_too_large",
        True,
    )
    for status in (400, 401, 403):
        outcome = connector_.interpret(response(status, {"error": "x"}), request_for(4))
        assert outcome.kind == "permanent"
        assert not outcome.event_specific, status
