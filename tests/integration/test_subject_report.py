"""Subject access report, consent status and audit query on a real Redis: what left for one
person and what did not, found through the audit trail's subject index (no raw id stored)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from router.cli import main
from router.compliance.audit_log import AuditLog
from router.compliance.subject_report import subject_records
from router.core.audit_records import subject_token
from router.edge.tokens import Role, token_hash
from router.queue.keys import AUDIT, optout_index_key, subject_index_key
from tests.conftest import TEST_CONFIG, WRITE_KEY, AppFactory, routing_from
from tests.integration.test_cli import run_router
from tests.redis_server import RedisServer
from tests.unit.compliance.test_subject_records import decisions_record

Client = TestClient[web.Request, web.Application]
AUDIT_KEY = "subject-audit-key"
TOKENS = {Role.AUDITOR: "auditor-token", Role.VIEWER: "viewer-token", Role.ADMIN: "admin-token"}
ADS = """
  - id: ads-hook
    type: webhook
    purpose: Retargeting (advertising consent)
    requires: [advertising]
    fields: [messageId, event]
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
"""
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


def _bearer(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def token(identifier: str) -> str:
    return subject_token(identifier, AUDIT_KEY.encode())


@pytest.fixture
async def router(make_router: AppFactory) -> Client:
    """The router with an advertising destination, an audit key and privacy-team tokens."""
    routing = routing_from(TEST_CONFIG.read_text() + ADS)
    tokens = json.dumps({token_hash(t): r.value for r, t in TOKENS.items()})
    return await make_router(routing, workers=False, audit_key=AUDIT_KEY, admin_tokens=tokens)


def _track(message_id: str, user_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": user_id,
        "anonymousId": f"anon-{user_id}",
        "properties": {"order_id": "o-1", "revenue": 5, **properties},
        "context": {"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}},
    }


async def _indexed(redis_client: aioredis.Redis, key: str, count: int) -> None:
    """Wait for the audit writer's flush (once a second) to index ``count`` records."""
    for _ in range(300):
        if await redis_client.zcard(key) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} never held {count} records")


@pytest.fixture
async def history(router: Client, redis_client: aioredis.Redis) -> Client:
    """u-1 stores consent, sends three orders with GPC on; u-2 sends one order without GPC."""
    response = await router.post(
        "/v1/consent",
        json={"userId": "u-1", "categories": {"analytics": True, "C0004": True}},
        headers=BASIC,
    )
    assert response.status == 200, await response.text()
    batch = {"batch": [_track(f"m-{i}", "u-1") for i in range(3)]}
    response = await router.post("/v1/batch", json=batch, headers={**BASIC, "Sec-GPC": "1"})
    assert (await response.json()) == {"success": True}
    response = await router.post("/v1/track", json=_track("m-other", "u-2"), headers=BASIC)
    assert response.status == 200
    await _indexed(redis_client, optout_index_key(AUDIT, token("u-1")), 1)
    await _indexed(redis_client, subject_index_key(AUDIT, token("u-2")), 1)
    return router


async def test_subject_report_lists_what_left_what_was_withheld_and_the_consent(
    history: Client, redis_client: aioredis.Redis
) -> None:
    """The auditor's report of u-1: each destination's deliveries with fields and consent
    snapshot, the GPC withholding, the stored consent and its write; nothing of u-2."""
    response = await history.post(
        "/admin/subject-report", json={"userId": "u-1"}, headers=_bearer(Role.AUDITOR)
    )
    report = await response.json()
    assert response.status == 200, report
    summary = report["summary"]
    assert summary["analytics-hook"]["received"] == 3
    assert "properties.revenue" in summary["analytics-hook"]["fields"]
    assert summary["ops-hook"]["received"] == 3
    assert summary["ops-hook"]["fields"] == ["event", "messageId", "properties.order_id"]
    assert summary["ads-hook"] == {
        "received": 0,
        "first": None,
        "last": None,
        "fields": [],
        "withheld": {"gpc_opt_out": 3},
    }
    events = {item["event"] for item in report["received"] + report["withheld"]}
    assert events == {token(f"m-{i}") for i in range(3)}  # u-2's order is not in it
    delivery = next(i for i in report["received"] if i["destination"] == "analytics-hook")
    assert "segment" in delivery["consent"]["sources"]
    assert "properties.order_id" in delivery["removed"]
    assert report["consent"]["current"]["granted"] == ["advertising", "analytics"]
    assert len(report["consent"]["ids"][0]["history"]) == 1
    assert report["consent"]["suppressed"] is False
    assert [w["route"] for w in report["consent_writes"]] == ["consent"]
    assert report["audit"]["trimmed"] == 0
    assert report["audit"]["altered"] == []
    assert "u-1" not in json.dumps(report)  # subjects are named by keyed token only
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{AUDIT}:*")]
    assert not [k for k in keys if "u-1" in k or "anon-u-1" in k]


async def test_subject_report_roles_and_errors(history: Client) -> None:
    """The privacy team's role (auditor) and admin may ask; a viewer may not; a body without
    an identifier or with a bad one is a 400 with its path."""
    ok = await history.post(
        "/admin/subject-report", json={"anonymousId": "anon-u-1"}, headers=_bearer(Role.ADMIN)
    )
    assert ok.status == 200
    assert (await ok.json())["summary"]["analytics-hook"]["received"] == 3
    viewer = await history.post(
        "/admin/subject-report", json={"userId": "u-1"}, headers=_bearer(Role.VIEWER)
    )
    assert viewer.status == 403
    for body, code, path in (
        ({}, "missing_identity", "userId"),
        ({"userId": 5}, "invalid_field", "userId"),
        ({"user": "u-1"}, "invalid_field", "user"),
    ):
        response = await history.post(
            "/admin/subject-report", json=body, headers=_bearer(Role.AUDITOR)
        )
        answer = await response.json()
        assert response.status == 400, answer
        assert (answer["code"], answer.get("path")) == (code, path)
    broken = await history.post(
        "/admin/subject-report", data=b"{not json", headers=_bearer(Role.AUDITOR)
    )
    assert (broken.status, (await broken.json())["code"]) == (400, "invalid_json")


async def test_subject_report_after_erasure_shows_the_erasure(
    history: Client, redis_client: aioredis.Redis
) -> None:
    """An erased person's report lists the erasure and the suppression, not the consent."""
    erased = await history.post("/admin/erase", json={"userId": "u-1"}, headers=_bearer(Role.ADMIN))
    assert erased.status == 200
    response = await history.post(
        "/admin/subject-report", json={"userId": "u-1"}, headers=_bearer(Role.AUDITOR)
    )
    report = await response.json()
    assert [e["actor"] for e in report["erasures"]] == [f"admin:{token_hash('admin-token')[:12]}"]
    assert report["erasures"][0]["removed"]["consent_records"] == 1
    assert report["consent"]["suppressed"] is True
    assert report["consent"]["current"] is None


async def test_consent_status_shows_stored_consent_and_the_honoured_gpc(history: Client) -> None:
    """What a site shows its visitor: stored categories, source, time, and that GPC was
    honoured (an advertising destination withheld), with CORS for the site's origin."""
    origin = {"Origin": "http://localhost:3000"}
    response = await history.get(
        "/v1/consent/status", params={"userId": "u-1"}, headers={**BASIC, **origin}
    )
    status = await response.json()
    assert response.status == 200, status
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert status["consent"]["granted"] == ["advertising", "analytics"]
    assert status["consent"]["source"] == "api"
    assert status["ids"]["userId"]["expiresAt"] > status["ids"]["userId"]["timestamp"]
    assert status["ids"]["anonymousId"] is None
    assert status["optOut"]["gpc"]["honoured"] is True
    assert status["optOut"]["gpc"]["at"].startswith(str(datetime.now(UTC).year))
    assert status["optOut"]["gpc"]["at"].endswith("Z")
    assert status["optOut"]["usPrivacy"] == {"honoured": False, "at": None}
    other = await history.get(
        "/v1/consent/status", params={"anonymousId": "anon-u-2", "writeKey": WRITE_KEY}
    )
    answer = await other.json()
    assert answer["consent"] is None  # u-2 sent consent on events only: nothing stored
    assert answer["optOut"]["gpc"] == {"honoured": False, "at": None}
    preflight = await history.options(
        "/v1/consent/status",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert preflight.status == 204
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    ("query", "headers", "status", "code", "path"),
    [
        ("", BASIC, 400, "missing_identity", "userId"),
        ("?userId=", BASIC, 400, "missing_identity", "userId"),
        ("?userId=a&userId=b", BASIC, 400, "invalid_id", "userId"),
        ("?anonymousId=" + "x" * 300, BASIC, 400, "invalid_id", "anonymousId"),
        ("?userId=u-1", {}, 401, "missing_write_key", None),
        ("?userId=u-1&writeKey=nope", {}, 401, "invalid_write_key", None),
    ],
    ids=["none", "empty", "twice", "too-long", "no-key", "bad-key"],
)
async def test_consent_status_errors_have_a_code_and_path(
    router: Client, query: str, headers: dict[str, str], status: int, code: str, path: str | None
) -> None:
    """Missing or invalid parameters and keys: a stable code, the parameter, a message."""
    response = await router.get(
        "/v1/consent/status" + query, headers={**headers, "Origin": "http://localhost:3000"}
    )
    answer = await response.json()
    assert response.status == status, answer
    assert answer["success"] is False
    assert answer["code"] == code
    assert answer.get("path") == path
    assert answer["message"]
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


async def test_consent_status_odd_ids_are_looked_up_not_refused(router: Client) -> None:
    """Percent-encoded bytes that are not UTF-8, control characters, a long but allowed id:
    a 200 with nothing stored, never a 500."""
    for query in ("?userId=%FF%FE", "?anonymousId=a%00b%0A", "?userId=" + "x" * 256):
        response = await router.get("/v1/consent/status" + query, headers=BASIC)
        answer = await response.json()
        assert response.status == 200, (query, answer)
        assert answer["consent"] is None


async def test_consent_status_without_redis_is_503(
    router: Client, redis_server: RedisServer
) -> None:
    """Redis down: 503 with Retry-After, never a 500."""
    redis_server.stop()
    response = await router.get("/v1/consent/status?userId=u-9", headers=BASIC)
    assert response.status == 503
    assert (await response.json())["code"] == "consent_store_unavailable"
    assert response.headers["Retry-After"]


def _decisions(
    destination: str, decision: str, reason: str, events: list[tuple[str, str]]
) -> dict[str, Any]:
    """A ``decisions`` record of (message id, subject id) pairs, named by keyed tokens."""
    return decisions_record(
        destination, decision, reason, [(token(e), token(s)) for e, s in events]
    )


async def test_index_follows_the_audit_retention(redis_client: aioredis.Redis) -> None:
    """Trimming the trail trims the index; an id the trail lost is dropped at lookup."""
    log = AuditLog(redis_client, key=AUDIT_KEY.encode())
    for index in range(5):
        await log.append(
            "decisions",
            _decisions("ads-hook", "skip", "gpc_opt_out", [(f"e{index}", "u-1"), ("x", "u-2")]),
        )
    key = subject_index_key(AUDIT, token("u-1"))
    assert await redis_client.zcard(key) == 5
    assert await redis_client.zcard(optout_index_key(AUDIT, token("u-2"))) == 5
    assert await log.trim(max_records=3) == 2
    assert await redis_client.zcard(key) == 3
    assert await redis_client.zcard(optout_index_key(AUDIT, token("u-1"))) == 3
    oldest = (await redis_client.zrange(key, 0, 0))[0]
    await redis_client.xdel(AUDIT, oldest)  # as if a trim stopped half-way
    found = await subject_records(redis_client, [token("u-1")])
    assert (len(found.records), found.missing) == (2, 1)
    assert await redis_client.zcard(key) == 2
    assert (await log.verify()).ok is False  # the deleted record is still noticed by verify


async def test_one_append_indexes_every_record_of_each_set(redis_client: aioredis.Redis) -> None:
    """The append script adds each group's records to each of its sets in chunks of ZADDs:
    every record naming a subject is in its set, scored by its id's milliseconds, whichever
    group it is in (``other-9``'s 500-odd records: more than one chunk), and a record
    honouring an opt-out is in that set too."""
    log = AuditLog(redis_client, key=AUDIT_KEY.encode())
    items = [
        (
            "decisions",
            _decisions(
                "ads-hook" if i % 7 == 0 else "ga4",
                "skip" if i % 7 == 0 else "deliver",
                "gpc_opt_out" if i % 7 == 0 else "consent_granted",
                [(f"e{i}", "u-1"), (f"f{i}", f"other-{i % 3}" if i < 90 else "other-9")],
            ),
        )
        for i in range(700)
    ]
    await log.append_many(items)
    ids = [entry_id.decode() for entry_id, _ in await redis_client.xrange(AUDIT, count=1000)]
    assert len(ids) == 700
    indexed = await redis_client.zrange(
        subject_index_key(AUDIT, token("u-1")), 0, -1, withscores=True
    )
    assert sorted((m.decode(), int(score)) for m, score in indexed) == sorted(
        (entry_id, int(entry_id.split("-")[0])) for entry_id in ids
    )
    others = subject_index_key(AUDIT, token("other-1"))
    assert {m.decode() for m in await redis_client.zrange(others, 0, -1)} == set(ids[1:90:3])
    many = subject_index_key(AUDIT, token("other-9"))
    assert {m.decode() for m in await redis_client.zrange(many, 0, -1)} == set(ids[90:])
    optout = optout_index_key(AUDIT, token("u-1"))
    assert {m.decode() for m in await redis_client.zrange(optout, 0, -1)} == set(ids[::7])


async def test_lookup_cost_follows_the_person_not_the_trail(
    redis_client: aioredis.Redis,
) -> None:
    """A person's records are found among many others' without reading theirs."""
    log = AuditLog(redis_client, key=AUDIT_KEY.encode())
    others = [(f"o{i}", f"other-{i}") for i in range(400)]
    await log.append_many(
        [("decisions", _decisions("ga4", "deliver", "consent_granted", others))] * 50
    )
    await log.append("decisions", _decisions("ga4", "deliver", "consent_granted", [("m", "u-1")]))
    found = await subject_records(redis_client, [token("u-1")])
    assert [r.kind for _, r in found.records] == ["decisions"]
    assert await redis_client.zcard(subject_index_key(AUDIT, token("other-3"))) == 50
    later = await subject_records(
        redis_client,
        [token("u-1")],
        after_ms=int((datetime.now(UTC) + timedelta(minutes=1)).timestamp() * 1000),
    )
    assert later.records == []


def _write_history(url: str) -> None:
    """u-1: one order delivered to ga4 and withheld from ads-hook (GPC); u-2: one order."""

    async def write() -> None:
        client = aioredis.Redis.from_url(url)
        log = AuditLog(client, key=AUDIT_KEY.encode())
        await log.append_many(
            [
                ("decisions", _decisions("ga4", "deliver", "consent_granted", [("m1", "u-1")])),
                ("decisions", _decisions("ads-hook", "skip", "gpc_opt_out", [("m1", "u-1")])),
                ("decisions", _decisions("ga4", "deliver", "consent_granted", [("m2", "u-2")])),
            ]
        )
        await client.aclose()

    asyncio.run(write())


@pytest.fixture
def cli_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> RedisServer:
    """The CLI pointed at the test's Redis, with the audit key."""
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    monkeypatch.setenv("ROUTER_AUDIT_KEY", AUDIT_KEY)
    _write_history(redis_server.url)
    return redis_server


def test_cli_subject_report_json_and_text(
    cli_env: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`router subject-report` prints the same report as the API; text lists destinations."""
    assert main(["subject-report", "--user-id", "u-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["ga4"]["received"] == 1
    assert report["summary"]["ads-hook"]["withheld"] == {"gpc_opt_out": 1}
    assert [i["event"] for i in report["received"]] == [token("m1")]
    assert main(["subject-report", "--anonymous-id", "u-1"]) == 0
    text = capsys.readouterr().out
    assert "ga4: received 1 event(s)" in text
    assert "withheld 1: gpc_opt_out" in text
    assert main(["subject-report"]) == 2
    assert "--user-id" in capsys.readouterr().err


def test_cli_audit_query_exit_status_answers_the_question(
    cli_env: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 and the deliveries when something left after T; 0 when nothing did (for that
    destination, or after a later T); 2 on bad arguments."""
    before = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    code = main(["audit", "query", "--subject", "u-1", "--after", before, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(i["destination"], i["event"]) for i in answer["left"]] == [("ga4", token("m1"))]
    assert answer["left"][0]["sent"] == ["event", "messageId"]
    assert [i["reason"] for i in answer["withheld"]] == ["gpc_opt_out"]
    assert answer["complete"] is True
    assert (
        main(["audit", "query", "--subject", "u-1", "--after", before, "--destination", "ads-hook"])
        == 0
    )
    assert "0 event(s) left for ads-hook" in capsys.readouterr().out
    assert main(["audit", "query", "--user-id", "u-1", "--after", later]) == 0
    assert main(["audit", "query", "--subject", "u-1", "--after", "yesterday"]) == 2
    assert "--after: expected an ISO 8601 time" in capsys.readouterr().err
    assert main(["audit", "query", "--after", before]) == 2


def test_cli_audit_query_without_redis_exits_3(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis unreachable: exit 3 (not 0 or 1, which answer the question) and a clear reason."""
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    redis_server.stop()
    assert main(["audit", "query", "--subject", "u-1", "--after", "2026-01-01"]) == 3
    assert "cannot reach Redis" in capsys.readouterr().err
    assert main(["subject-report", "--user-id", "u-1"]) == 1


def test_cli_audit_query_subprocess_exit_status(cli_env: RedisServer) -> None:
    """The installed command's exit status is the answer (for scripts)."""
    result = run_router(
        "audit",
        "query",
        "--subject",
        "u-2",
        "--after",
        "2020-01-01T00:00:00Z",
        env={"ROUTER_REDIS_URL": cli_env.url, "ROUTER_AUDIT_KEY": AUDIT_KEY},
    )
    assert result.returncode == 1, result.stderr
    assert "1 event(s) left for any destination" in result.stdout


def test_cli_reindex_indexes_a_trail_written_before_the_index(
    cli_env: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records without index entries (an older router wrote them) are found after
    `router audit reindex`; running it again adds nothing."""

    async def forget() -> None:
        client = aioredis.Redis.from_url(cli_env.url)
        keys = [k async for k in client.scan_iter(match=f"{AUDIT}:*:*")]
        assert keys
        await client.delete(*keys)
        await client.aclose()

    asyncio.run(forget())
    assert main(["subject-report", "--user-id", "u-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {}
    assert main(["audit", "reindex"]) == 0
    assert "3 record(s) read, 4 index entr(y/ies) added" in capsys.readouterr().out
    assert main(["audit", "reindex"]) == 0
    assert "0 index entr" in capsys.readouterr().out
    assert main(["subject-report", "--user-id", "u-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["ga4"]["received"] == 1


def test_cli_audit_query_warns_when_the_trail_no_longer_reaches_back(
    cli_env: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a trim, an --after older than the oldest record held answers with a warning and
    `complete: false`: an exit 0 then covers only what the trail still holds."""

    async def trim() -> None:
        client = aioredis.Redis.from_url(cli_env.url)
        log = AuditLog(client, key=AUDIT_KEY.encode())
        assert await log.trim(max_records=1) == 2  # u-1's two records go
        await client.aclose()

    asyncio.run(trim())
    code = main(["audit", "query", "--subject", "u-1", "--after", "2020-01-01", "--json"])
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert code == 0
    assert answer["complete"] is False
    assert answer["left"] == []
    assert "only reaches back to" in captured.err
