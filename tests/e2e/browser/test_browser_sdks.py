"""analytics.js 2.0 (with its consent wrapper) and RudderStack JS v3 in headless Chromium.

The pages come from a page server on another port than the router, so every call is a
cross-origin one with the browser's real CORS checks (preflights included). The router runs
without delivery workers: the tests read what it accepted from the destinations' Redis streams,
where ``all-feed`` (``requires: []``) keeps the consent each SDK attached to each event.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from playwright.async_api import BrowserContext, Page

from router.edge.state import STATE
from router.queue.items import entry_items
from router.queue.keys import QUARANTINE, queue_key
from router.routing import parse_routing
from tests.conftest import HOOK_SECRET, AppFactory, wait_for
from tests.e2e.browser.conftest import PageServer, Seen

WRITE_KEY = "browser-write-key"
ROUTING = """
sources:
  - id: web
    write_key: browser-write-key
    cors_origins: ["${PAGE_ORIGIN}"]
consent:
  mappings:
    ids: {C0001: necessary, C0002: analytics, C0004: advertising}
destinations:
  - id: all-feed
    type: webhook
    purpose: What the router accepted, with the consent the SDK attached
    requires: []
    fields: [messageId, type, event, userId, anonymousId, context.consent,
             context.consentManagement, context.library.name]
    settings: {url: "http://127.0.0.1:9/hook", secret: "${HOOK_SECRET}"}
  - id: analytics-feed
    type: webhook
    purpose: Needs analytics consent (C0002)
    requires: [analytics]
    fields: [messageId, type, event]
    settings: {url: "http://127.0.0.1:9/hook", secret: "${HOOK_SECRET}"}
  - id: ads-feed
    type: webhook
    purpose: Needs advertising consent (C0004)
    requires: [advertising]
    fields: [messageId, type, event]
    settings: {url: "http://127.0.0.1:9/hook", secret: "${HOOK_SECRET}"}
"""
GRANTED = {"C0001": True, "C0002": True, "C0004": False}

SEGMENT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/sdk/analytics-next.js"></script>
<script src="/sdk/consent-tools.js"></script>
<script>
  // The site's consent manager: OneTrust-style category ids, changeable by the visitor.
  window.categories = %(categories)s;
  window.analytics = new AnalyticsNext.AnalyticsBrowser();
  AnalyticsConsentTools.createWrapper({
    getCategories: () => window.categories,
    registerOnConsentChanged: (changed) => {
      window.setCategories = (categories) => {
        window.categories = categories;
        changed(categories);
      };
    },
  })(window.analytics);
  window.analytics.load(
    {writeKey: %(write_key)s, cdnSettings: %(cdn_settings)s},
    {integrations: {"Segment.io": %(segment_io)s}},
  );
</script></head><body>shop</body></html>
"""

RUDDER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script src="/sdk/rudderstack.js"></script>
<script>
  window.ra = new rudderanalytics.RudderAnalytics();
  window.ra.load(%(write_key)s, %(router)s, {
    getSourceConfig: () => (%(source_config)s),
    consentManagement: {
      enabled: true,
      provider: "custom",
      allowedConsentIds: ["C0001", "C0002"],
      deniedConsentIds: ["C0004"],
    },
    useBeacon: %(use_beacon)s,
    beaconQueueOptions: {flushQueueInterval: 600000},
    queueOptions: {minRetryDelay: 300, backoffFactor: 1},
    logLevel: "ERROR",
  });
  window.raReady = new Promise((resolve) => window.ra.ready(resolve));
</script></head><body>shop</body></html>
"""

RUDDER_SOURCE_CONFIG = {
    "source": {
        "id": "browser-test-source",
        "name": "shop",
        "workspaceId": "browser-test-workspace",
        "enabled": True,
        "config": {
            "statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}
        },
        "destinations": [],
    }
}


def router_url(client: TestClient[Any, Any]) -> str:
    return str(client.server.make_url("")).rstrip("/")


@pytest.fixture
async def router(make_router: AppFactory, site: PageServer) -> TestClient[Any, Any]:
    """The router (no workers: accepted events stay in the streams), CORS for the site only."""
    routing = parse_routing(ROUTING, env={"PAGE_ORIGIN": site.origin, "HOOK_SECRET": HOOK_SECRET})
    return await make_router(routing, workers=False)


async def queued(client: aioredis.Redis, destination: str) -> list[dict[str, Any]]:
    """The payloads queued for a destination, oldest first."""
    entries = await client.xrange(queue_key(destination))
    return [
        msgspec.json.decode(raw)["delivery"]["payload"]
        for _, fields in entries
        for raw in entry_items({k.decode(): v for k, v in fields.items()})
    ]


async def wait_queued(client: aioredis.Redis, destination: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` payloads are queued for ``destination`` (and say what was)."""
    found: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 15
    while len(found) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{destination}: {len(found)} of {count} queued: {found}")
        await asyncio.sleep(0.05)
        found = await queued(client, destination)
    return found


def assert_clean(seen: Seen, site: PageServer, router: TestClient[Any, Any]) -> None:
    """Nothing failed, nothing in the console, nothing asked of a CDN or a control plane."""
    assert seen.failed == []
    assert seen.error_answers == []
    assert seen.console_errors == []
    assert seen.foreign(site.origin, router_url(router), "about:") == []


def segment_page(router: TestClient[Any, Any], delivery: dict[str, Any] | None = None) -> str:
    host = router_url(router).removeprefix("http://") + "/v1"
    segment_io: dict[str, Any] = {"apiHost": host, "protocol": "http"}
    if delivery is not None:
        segment_io["deliveryStrategy"] = delivery
    cdn_settings = {
        "integrations": {"Segment.io": {"apiKey": WRITE_KEY, **segment_io}},
        "plan": {},
        "metrics": {"flushTimer": 200, "sampleRate": 1},
        "consentSettings": {"allCategories": list(GRANTED), "hasUnmappedDestinations": False},
    }
    return SEGMENT_PAGE % {
        "categories": json.dumps(GRANTED),
        "write_key": json.dumps(WRITE_KEY),
        "cdn_settings": json.dumps(cdn_settings),
        "segment_io": json.dumps(segment_io),
    }


def rudder_page(router: TestClient[Any, Any], *, beacon: bool) -> str:
    return RUDDER_PAGE % {
        "write_key": json.dumps(WRITE_KEY),
        "router": json.dumps(router_url(router)),
        "source_config": json.dumps(RUDDER_SOURCE_CONFIG),
        "use_beacon": json.dumps(beacon),
    }


async def open_page(browser: BrowserContext, seen: Seen, url: str) -> Page:
    page = await browser.new_page()
    seen.watch(page)
    await page.goto(url)
    return page


async def test_analytics_js_events_carry_the_consent_wrapper_categories(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    redis_client: aioredis.Redis,
    seen: Seen,
) -> None:
    """analytics.js + consent wrapper: events accepted with categoryPreferences, routed by them;
    a consent change is sent and applied; its /v1/m counters get 200."""
    site.pages["segment"] = segment_page(router)
    page = await open_page(browser, seen, site.url("segment"))
    ids: dict[str, str] = await page.evaluate(
        """async () => {
            const ids = {};
            ids.identify = (await analytics.identify("user-1", {plan: "pro"})).event.messageId;
            const order = {order_id: "o-1"};
            ids.track = (await analytics.track("Order Completed", order)).event.messageId;
            ids.page = (await analytics.page("Shop", "Checkout")).event.messageId;
            return ids;
        }"""
    )
    accepted = await wait_queued(redis_client, "all-feed", 3)
    by_id = {event["messageId"]: event for event in accepted}
    assert set(by_id) == set(ids.values())
    for kind, message_id in ids.items():
        event = by_id[message_id]
        assert event["type"] == kind
        assert event["context"]["consent"] == {"categoryPreferences": GRANTED}
        assert event["context"]["library"]["name"] == "analytics.js"
    assert {e["messageId"] for e in await queued(redis_client, "analytics-feed")} == set(
        ids.values()
    )
    assert await queued(redis_client, "ads-feed") == []

    # the visitor withdraws analytics: the wrapper says so, and later events follow it
    withdrawn = {"C0001": True, "C0002": False, "C0004": False}
    await page.evaluate("(categories) => window.setCategories(categories)", withdrawn)
    later = await page.evaluate(
        """async () => (await analytics.track("Product Viewed", {})).event.messageId"""
    )
    accepted = await wait_queued(redis_client, "all-feed", 5)
    update = next(e for e in accepted if e.get("event") == "Segment Consent Preference Updated")
    assert update["context"]["consent"] == {"categoryPreferences": withdrawn}
    assert next(e for e in accepted if e["messageId"] == later)["context"]["consent"] == {
        "categoryPreferences": withdrawn
    }
    assert later not in {e["messageId"] for e in await queued(redis_client, "analytics-feed")}

    # analytics.js posts its usage counters to /v1/m (flushTimer 200 ms): answered, counted
    stats = router.server.app[STATE].stats
    await wait_for(lambda: stats.get("router_sdk_metrics_total", kind="analytics_js.invoke") >= 5)
    assert await redis_client.xlen(QUARANTINE) == 0
    assert_clean(seen, site, router)


async def test_analytics_js_batch_is_flushed_with_keepalive_on_unload(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    redis_client: aioredis.Redis,
    seen: Seen,
) -> None:
    """analytics.js batching: events still buffered when the visitor leaves are sent by the
    keepalive flush (/v1/b, a preflighted request) and accepted."""
    site.pages["segment"] = segment_page(
        router, delivery={"strategy": "batching", "config": {"size": 50, "timeout": 600000}}
    )
    page = await open_page(browser, seen, site.url("segment"))
    ids: list[str] = await page.evaluate(
        """async () => [
            (await analytics.track("Order Completed", {order_id: "o-2"})).event.messageId,
            (await analytics.track("Checkout Left", {})).event.messageId,
        ]"""
    )
    await asyncio.sleep(0.3)
    assert await redis_client.xlen(queue_key("all-feed")) == 0  # still in the SDK's buffer
    await page.goto("about:blank")  # pagehide: the batch leaves with keepalive
    accepted = await wait_queued(redis_client, "all-feed", 2)
    assert sorted(e["messageId"] for e in accepted) == sorted(ids)
    assert all(e["context"]["consent"] == {"categoryPreferences": GRANTED} for e in accepted)
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_accepted_total", route="batch") == 2
    assert_clean(seen, site, router)


RUDDER_CONSENT = {
    "provider": "custom",
    "allowedConsentIds": ["C0001", "C0002"],
    "deniedConsentIds": ["C0004"],
}


async def test_rudderstack_js_events_carry_consent_management(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    redis_client: aioredis.Redis,
    seen: Seen,
) -> None:
    """RudderStack JS v3 (XHR, preflighted AnonymousId/SentAt headers): events accepted with
    context.consentManagement and routed by it."""
    site.pages["rudder"] = rudder_page(router, beacon=False)
    page = await open_page(browser, seen, site.url("rudder"))
    await page.evaluate("() => window.raReady")
    await page.evaluate(
        """() => {
            ra.identify("user-2", {plan: "pro"});
            ra.track("Order Completed", {order_id: "o-3"});
            ra.page("Shop", "Checkout");
        }"""
    )
    accepted = await wait_queued(redis_client, "all-feed", 3)
    assert sorted(e["type"] for e in accepted) == ["identify", "page", "track"]
    for event in accepted:
        assert event["context"]["consentManagement"] == RUDDER_CONSENT
        assert event["context"]["library"]["name"] == "RudderLabs JavaScript SDK"
    assert len(await queued(redis_client, "analytics-feed")) == 3
    assert await queued(redis_client, "ads-feed") == []
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_accepted_total", route="batch") == 0
    assert await redis_client.xlen(QUARANTINE) == 0
    assert_clean(seen, site, router)


async def test_rudderstack_js_beacon_delivers_on_unload(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    redis_client: aioredis.Redis,
    seen: Seen,
) -> None:
    """RudderStack JS v3 with useBeacon: leaving the page sends the queue with sendBeacon to
    /beacon/v1/batch?writeKey=..., and the router accepts it."""
    site.pages["rudder"] = rudder_page(router, beacon=True)
    page = await open_page(browser, seen, site.url("rudder"))
    await page.evaluate("() => window.raReady")
    await page.evaluate(
        """() => {
            ra.track("Order Completed", {order_id: "o-4"});
            ra.track("Checkout Left", {});
        }"""
    )
    await asyncio.sleep(0.3)
    assert await redis_client.xlen(queue_key("all-feed")) == 0  # still in the beacon queue
    await page.goto("about:blank")
    accepted = await wait_queued(redis_client, "all-feed", 2)
    assert sorted(e["event"] for e in accepted) == ["Checkout Left", "Order Completed"]
    assert all(e["context"]["consentManagement"] == RUDDER_CONSENT for e in accepted)
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_accepted_total", route="batch") == 2
    assert_clean(seen, site, router)


async def test_rudderstack_js_retries_a_503_with_its_retry_headers(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    redis_client: aioredis.Redis,
    redis_server: Any,
    seen: Seen,
) -> None:
    """Redis down: RudderStack reads the 503, retries with Rsa-Retry-* headers (a preflight
    of its own), and the event is accepted once Redis is back."""
    site.pages["rudder"] = rudder_page(router, beacon=False)
    page = await open_page(browser, seen, site.url("rudder"))
    await page.evaluate("() => window.raReady")
    sent: list[dict[str, str]] = []
    page.on("request", lambda request: sent.append(request.headers))
    redis_server.kill()
    await page.evaluate("""() => ra.track("Order Completed", {order_id: "o-5"})""")
    stats = router.server.app[STATE].stats
    await wait_for(lambda: stats.get("router_requests_unavailable_total", route="track") >= 1)
    await asyncio.to_thread(redis_server.start)
    accepted = await wait_queued(redis_client, "all-feed", 1)
    assert [e["event"] for e in accepted] == ["Order Completed"]
    assert accepted[0]["context"]["consentManagement"] == RUDDER_CONSENT
    router_track = f"{router_url(router)}/v1/track"
    assert f"503 {router_track}" in seen.error_answers  # read by the SDK, not a CORS failure
    assert seen.failed == []
    assert sum(url == router_track for url in seen.requests) >= 2
    assert "rsa-retry-attempt" not in sent[0]
    assert [h["rsa-retry-attempt"] for h in sent[1:2]] == ["1"]
    assert {"sentat", "anonymousid", "rsa-retry-reason"} <= set(sent[1])


async def test_browser_reads_error_status_and_retry_after(
    browser: BrowserContext,
    site: PageServer,
    router: TestClient[Any, Any],
    seen: Seen,
) -> None:
    """A page on a listed origin can read a 401's code and a 429's Retry-After (drop vs retry)."""
    site.pages["plain"] = "<!doctype html><title>plain</title>"
    page = await open_page(browser, seen, site.url("plain"))
    call = """async ([url, key]) => {
        const response = await fetch(url + "/v1/track", {
            method: "POST",
            headers: {
                "Content-Type": "application/json",
                "Authorization": "Basic " + btoa(key + ":"),
            },
            body: JSON.stringify({event: "Signed Up", anonymousId: "a-1"}),
        });
        return {status: response.status, retryAfter: response.headers.get("Retry-After"),
                body: await response.json()};
    }"""
    url = router_url(router)
    refused = await page.evaluate(call, [url, "not-a-key"])
    assert refused["status"] == 401
    assert refused["body"]["code"] == "invalid_write_key"
    router.server.app[STATE].backlogged = True
    throttled = await page.evaluate(call, [url, WRITE_KEY])
    assert throttled["status"] == 429
    assert throttled["body"]["code"] == "backlog"
    assert throttled["retryAfter"] is not None
    assert throttled["retryAfter"].isdigit()
