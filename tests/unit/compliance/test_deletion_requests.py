"""Erasure's deletion requests through a fake transport: the receipt for each answer."""

from __future__ import annotations

import msgspec

from destinations.amplitude import AmplitudeConnector, AmplitudeSettings
from destinations.base import HttpRequest, HttpResponse
from destinations.errors import TransportError
from destinations.webhook import WebhookConnector, WebhookSettings
from router.compliance.erasure import DELETION_TIMEOUT_S, request_deletion
from tests.conftest import HOOK_SECRET
from tests.fakes.transport import RecordingTransport

AMPLITUDE = AmplitudeConnector("amp", AmplitudeSettings(api_key="key-1", secret_key="sec-1"))


def _answer(status: int, body: object) -> RecordingTransport:
    return RecordingTransport(
        lambda request: HttpResponse(status=status, headers={}, body=msgspec.json.encode(body))
    )


async def test_a_scheduled_deletion_gives_the_platform_details_without_ids() -> None:
    """The request goes out once with the deletion timeout; the receipt counts, never lists."""
    transport = _answer(200, {"day": "2026-12-22", "invalid_ids": ["x"]})
    receipt = await request_deletion(AMPLITUDE, ["user-00001"], transport)
    assert "user-00001" not in msgspec.json.encode(receipt).decode()
    details = ("ids", "http_status", "status", "job_day", "invalid_ids")
    assert [receipt[k] for k in details] == [1, 200, "scheduled", "2026-12-22", 1]
    [(request, timeout_s)] = transport.sent
    assert (request.url, timeout_s) == (
        "https://amplitude.com/api/2/deletions/users",
        DELETION_TIMEOUT_S,
    )


async def test_no_answer_is_a_retry_and_a_refusal_fails() -> None:
    """A transport error is a retry receipt with its reason; a 4xx is failed, a 5xx retry."""

    def down(request: HttpRequest) -> Exception:
        del request
        return TransportError("timeout", "no answer")

    receipt = await request_deletion(AMPLITUDE, ["user-00001"], RecordingTransport(down))
    assert (receipt["status"], receipt["reason"]) == ("retry", "timeout")
    refused = await request_deletion(AMPLITUDE, ["user-00001"], _answer(401, {}))
    assert (refused["status"], refused["reason"]) == ("failed", "http_401")
    busy = await request_deletion(AMPLITUDE, ["user-00001"], _answer(503, {}))
    assert (busy["status"], busy["reason"]) == ("retry", "http_503")


async def test_skips_send_nothing() -> None:
    """No deletion API, a dry run or a connector's own skip: nothing reaches the transport."""
    transport = RecordingTransport()
    hook = WebhookConnector("hook", WebhookSettings(url="https://h.example/", secret=HOOK_SECRET))
    no_api = await request_deletion(hook, ["u"], transport)
    assert (no_api["type"], no_api["status"], no_api["reason"]) == (
        "webhook",
        "skipped",
        "no_deletion_api",
    )
    dry = await request_deletion(AMPLITUDE, ["user-00001"], transport, dry_run=True)
    assert (dry["status"], dry["reason"], "ids" in dry) == ("skipped", "dry_run", False)
    keyless = AmplitudeConnector("amp", AmplitudeSettings(api_key="key-1"))
    skipped = await request_deletion(keyless, ["user-00001"], transport)
    assert (skipped["status"], skipped["reason"], skipped["ids"]) == ("skipped", "no_secret_key", 1)
    assert transport.sent == []
