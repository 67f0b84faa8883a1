"""The record of processing on a real Redis, from a data map filled by real deliveries to a
signature-checking webhook: `router inventory` (JSON, Markdown, text) and
`GET /admin/inventory` agree, and the review flags point at the right destinations."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from router.cli import main
from router.edge.tokens import token_hash
from router.routing import Routing, parse_routing
from tests.conftest import HOOK_SECRET, WRITE_KEY, AppFactory, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
AUDITOR = "auditor-token-for-inventory-tests"
ROUTING = """
sources:
  - id: web
    write_key: test-write-key
consent:
  mappings:
    ids: {C0002: analytics}
destinations:
  - id: analytics-hook
    type: webhook
    recipient: Example Analytics Inc.
    purpose: Product analytics
    legal_basis: consent
    retention: 13 months
    requires: [analytics]
    fields: [messageId, type, event, properties.revenue, properties.coupon, context.ip]
    transforms: {userId: tokenize, context.ip: truncate_ip}
    tokenize_key: test-tokenize-key
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 10, backoff_initial_ms: 10, backoff_max_ms: 50}
  - id: ops-hook
    type: webhook
    purpose: Order fulfilment | shipping
    legal_basis: contract
    retention: 90 days
    requires: []
    events: ["Order Completed"]
    fields: [messageId, event, properties.order_id, properties.email]
    identifiers: {properties.email: email}
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 1, backoff_initial_ms: 10, backoff_max_ms: 50}
  - id: idle-hook
    type: webhook
    purpose: Returns partner
    requires: []
    events: ["Return Requested"]
    fields: [messageId, event]
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
  - id: old-hook
    type: webhook
    purpose: Retired partner
    requires: []
    enabled: false
    fields: [messageId]
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
"""


def _routing(url: str) -> Routing:
    return parse_routing(ROUTING, env={"HOOK_URL": url, "HOOK_SECRET": HOOK_SECRET})


def _order(number: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{number}",
        "userId": f"user-{number}",
        "properties": {"order_id": f"o-{number}", "revenue": 5, "email": "a@shop.example"},
        "context": {"ip": "203.0.113.7", "consent": {"categoryPreferences": {"C0002": True}}},
    }


async def _cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_server: RedisServer,
    config: str,
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, ["inventory", "--config", config, *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_inventory_reports_what_real_deliveries_sent_and_flags_the_rest(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """After three orders are delivered, each destination lists what left (categories, kinds,
    tokenized/truncated fields, last delivery); an unsent allowlisted field, undeclared IP
    addresses, an idle destination and missing declarations are flagged; CLI and API agree."""
    routing = _routing(receiver[1])
    before = datetime.now(UTC)
    router = await make_router(routing, audit_key="audit-key")
    batch = {"batch": [_order(n) for n in range(3)]}
    assert (await router.post("/v1/batch", json=batch, headers=AUTH)).status == 200
    await wait_for(lambda: len(receiver[0].events()) == 6)
    await router.close()  # flushes the data map
    config = tmp_path / "routing.yaml"
    config.write_text(
        ROUTING.replace("${HOOK_URL}", receiver[1]).replace("${HOOK_SECRET}", HOOK_SECRET)
    )

    code, out, err = await _cli(monkeypatch, capsys, redis_server, str(config), "--json")
    assert code == 0, err
    inventory = json.loads(out)
    assert inventory["window_days"] == 30
    rows = {r["id"]: r for r in inventory["recipients"]}
    analytics = rows["analytics-hook"]
    assert analytics["recipient"] == "Example Analytics Inc."
    assert (analytics["legal_basis"], analytics["retention"]) == ("consent", "13 months")
    assert analytics["consent_required"] == ["analytics"]
    assert analytics["events_sent"] == 3
    assert analytics["fields_sent"] == [
        "context.ip",
        "event",
        "messageId",
        "properties.revenue",
        "type",
        "userId",
    ]
    assert analytics["data_categories"] == [
        "Event metadata",
        "IP address",
        "Online identifiers",
        "Purchase information",
    ]
    assert analytics["protected_fields"] == [
        {"path": "context.ip", "protection": "truncated", "by": "router"},
        {"path": "userId", "protection": "tokenized", "by": "router"},
    ]
    assert analytics["unused_fields"] == ["properties.coupon"]
    assert analytics["undeclared_personal_data"] == ["ip"]
    assert analytics["flags"] == ["unused_fields", "undeclared_personal_data"]
    assert analytics["deletion"] == {"supported": False, "detail": "no_deletion_api"}
    last = datetime.fromisoformat(analytics["last_delivery"])
    assert before.timestamp() - 1 <= last.timestamp() <= datetime.now(UTC).timestamp()

    ops = rows["ops-hook"]
    assert ops["recipient"] == "127.0.0.1"  # a webhook without `recipient`: its URL's host
    assert ops["events_sent"] == 3
    assert ops["personal_data"] == ["email"]
    assert ops["declared_personal_data"] == ["email"]
    assert ops["flags"] == []
    assert ops["data_categories"] == ["Contact details", "Event metadata", "Purchase information"]

    idle = rows["idle-hook"]
    assert idle["events_sent"] == 0
    assert idle["last_delivery"] is None
    assert idle["unused_fields"] == []  # nothing sent at all: the idle flag says it
    assert idle["flags"] == ["idle", "no_legal_basis", "no_retention"]
    assert "idle" not in rows["old-hook"]["flags"]  # disabled: holds nothing

    reader = await make_router(
        routing,
        workers=False,
        audit_key="audit-key",
        admin_tokens=json.dumps({token_hash(AUDITOR): "auditor"}),
    )
    headers = {"Authorization": f"Bearer {AUDITOR}"}
    api = await reader.get("/admin/inventory", headers=headers)
    assert api.status == 200
    answer = await api.json()
    assert answer["recipients"] == inventory["recipients"]

    markdown = await reader.get("/admin/inventory?format=markdown", headers=headers)
    assert markdown.content_type == "text/markdown"
    text = await markdown.text()
    code, cli_text, _ = await _cli(monkeypatch, capsys, redis_server, str(config), "--markdown")
    assert code == 0
    assert cli_text == text
    lines = text.splitlines()
    assert lines[0].startswith("| Recipient | Purpose | Data shared | Legal basis |")
    assert (
        "| Example Analytics Inc. | Product analytics | Event metadata, IP address, Online "
        "identifiers, Purchase information (pseudonymised: userId) | Consent (GDPR art. 6(1)(a))"
        " | analytics | 13 months | No |"
    ) in lines
    ops_line = next(line for line in lines if "Order fulfilment" in line)
    assert "Order fulfilment \\| shipping" in ops_line  # a pipe cannot break the table
    assert "Performance of a contract" in ops_line
    assert not any("Retired partner" in line for line in lines)

    bad = await reader.get("/admin/inventory?format=xml", headers=headers)
    assert bad.status == 400
    problem = await bad.json()
    assert (problem["code"], problem["path"]) == ("invalid_format", "format")

    code, plain, _ = await _cli(monkeypatch, capsys, redis_server, str(config))
    assert code == 0
    assert "idle-hook (webhook, enabled) -> 127.0.0.1" in plain
    assert "  FLAGS: idle, no_legal_basis, no_retention" in plain
    assert "    userId: tokenized by the router" in plain
