"""The PII safety net between minimization and the wire, end to end."""

from __future__ import annotations

import base64
import hashlib

from tests.conftest import HOOK_SECRET, WRITE_KEY, AppFactory, routing_from, wait_for
from tests.fakes.webhook import WebhookReceiver

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}

ROUTING = f"""
sources: [{{id: web, write_key: {WRITE_KEY}}}]
destinations:
  - id: partner
    type: webhook
    requires: []
    fields: [messageId, properties.additional_info, properties.contact, properties.note]
    transforms: {{properties.card_hash: hash_sha256}}
    identifiers: {{properties.contact: email}}
    settings: {{url: "HOOK", secret: "{HOOK_SECRET}"}}
"""


async def test_free_text_pii_is_redacted_before_leaving(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Cards and phones in free text are redacted; a declared email and a hash are kept."""
    state, url = receiver
    router = await make_router(routing_from(ROUTING.replace("HOOK", url), hook_url=url))
    card_hash = hashlib.sha256(b"4111111111111111").hexdigest()
    event = {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": "a-1",
        "messageId": "pii-1",
        "properties": {
            "additional_info": "card 4111 1111 1111 1111, call +1 650 555 1212",
            "contact": "Jane.Doe@example.com",
            "note": "mail me at jane@example.com or 4012-8888-8888-1881",
            "card_hash": "4111111111111111",
        },
    }
    response = await router.post("/v1/batch", json={"batch": [event]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: len(state.events()) == 1)
    properties = state.events()[0]["properties"]
    assert properties["additional_info"] == "card [redacted:card], call [redacted:phone]"
    assert properties["contact"] == "Jane.Doe@example.com"
    assert properties["note"] == "mail me at [redacted:email] or [redacted:card]"
    assert properties["card_hash"] == card_hash
