"""Standard Webhooks signing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from destinations.base import Delivery
from destinations.webhook import WebhookConnector, WebhookSettings, sign, signing_key, webhook_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_signature_matches_the_spec_vector() -> None:
    """The vector computed with the spec's algorithm (shared/reference/destinations.md §7)."""
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret", ["nope", "whsec_!!!", "whsec_c2hvcnQ="])
def test_bad_secrets_are_refused(secret: str) -> None:
    """A secret without whsec_, not base64, or too short is a settings error."""
    with pytest.raises(ValueError, match="secret"):
        WebhookSettings(url="https://x.example/h", secret=secret)


def _delivery(message_id: str) -> Delivery:
    return Delivery(
        message_id=message_id, type="track", timestamp=NOW, payload={"messageId": message_id}
    )


def test_single_event_body_is_the_event_and_id_is_message_id() -> None:
    """batch_size 1: the body is the minimized event; webhook-id is its messageId."""
    connector = WebhookConnector(
        "h",
        WebhookSettings(url="https://x.example/h", secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    )
    request = connector.encode([_delivery("m-1")], NOW).requests[0]
    assert request.body == b'{"messageId":"m-1"}'
    assert request.headers["webhook-id"] == "m-1"
    assert request.headers["webhook-timestamp"] == str(int(NOW.timestamp()))


def test_batch_id_is_stable_and_has_no_dot() -> None:
    """A batch's id derives from its messageIds: the same on every retry, never with a dot."""
    batch = [_delivery("a.b"), _delivery("c")]
    assert webhook_id(batch) == webhook_id(batch)
    assert "." not in webhook_id(batch)
    assert "." not in webhook_id([_delivery("a.b")])
