"""The ``router`` command line: check-config, explain, outbox and dlq list.

Most tests call ``router.cli.main([...])`` and read its output with capsys; the outbox and dlq
commands read a real Redis the router wrote to, and a few tests run the installed console
script in a subprocess, as an operator would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.cli import main
from router.queue.keys import dlq_key, outbox_key
from tests.conftest import HOOK_SECRET, TEST_CONFIG, WRITE_KEY, AppFactory, routing_from
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer

REPO = TEST_CONFIG.parent.parent
ROUTER_YAML = REPO / "config" / "router.yaml"
HOOK_URL = "http://127.0.0.1:9/hook"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
TOKENIZE_KEY = b"test-tokenize-key"  # config/test.yaml's analytics-hook tokenize_key


def router_command() -> list[str]:
    """The installed ``router`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("router")
    assert script.exists(), f"console script not installed at {script}"
    return [str(script)]


def run_router(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess from the repository root."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    environment.update(env or {})
    return subprocess.run(
        [*router_command(), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROUTER_* setting of the developer's shell leaks into a test; the hook is set."""
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOOK_URL", HOOK_URL)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)


def write_event(tmp_path: Path, event: dict[str, Any], name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(event))
    return path


def explain_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict[str, Any]]:
    """Run ``router explain --json`` and index its reports by destination id."""
    code = main(["explain", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    reports = json.loads(out)
    assert isinstance(reports, list)
    return {report["id"]: report for report in reports}


def token(user_id: str) -> str:
    return hmac.new(TOKENIZE_KEY, user_id.encode(), hashlib.sha256).hexdigest()


ORDER = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "msg-order-1",
    "userId": "user-42",
    "anonymousId": "anon-42",
    "properties": {
        "order_id": "T-1001",
        "revenue": 42.5,
        "email": "jane.doe@example.com",
        "products": [{"product_id": "p-1", "name": "Yoga mat"}],
    },
    "context": {"ip": "203.0.113.7"},
}

BROKEN_YAML = """
sources:
  - id: web
    write_key: test-write-key
    colour: blue                                  # unknown field
  - id: app
    write_key: ${CLI_TEST_UNSET_WRITE_KEY}        # missing environment variable
destinations:
  - id: bad-path
    type: webhook
    requires: []
    fields: [messageId, "properties..total"]      # bad field path
    settings: {url: "https://example.com/hook", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  - id: no-requires                               # missing requires
    type: webhook
    fields: [messageId]
    settings: {url: "https://example.com/hook", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  - id: bad-category
    type: webhook
    requires: [telepathy]                         # unknown category
    fields: [messageId]
    settings: {url: "https://example.com/hook", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  - id: bad-secret
    type: webhook
    requires: []
    fields: [messageId]
    settings: {url: "https://example.com/hook", secret: "hunter2"}   # not a whsec_ secret
  - id: bad-type
    type: carrier-pigeon                          # unknown type
    requires: []
    fields: [messageId]
"""

BROKEN_PATHS = {
    "sources[0].colour": "unknown field",
    "sources[1].write_key": "CLI_TEST_UNSET_WRITE_KEY",
    "destinations[0].fields[1]": "invalid segment",
    "destinations[1].requires": "requires: []",
    "destinations[2].requires[0]": "telepathy",
    "destinations[3].settings.secret": "whsec_",
    "destinations[4].type": "carrier-pigeon",
}


# --- check-config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "summary"),
    [
        (ROUTER_YAML, "2 source(s), 2 destination(s)"),
        (TEST_CONFIG, "1 source(s), 2 destination(s)"),
    ],
    ids=["router.yaml", "test.yaml"],
)
def test_check_config_accepts_the_shipped_routing_files(
    path: Path, summary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 0 on config/router.yaml and config/test.yaml and says OK."""
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == f"{path}: OK ({summary})\n"
    assert err == ""


def test_check_config_reports_every_error_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file with seven distinct mistakes: exit 1 and one line per mistake, each with its path."""
    monkeypatch.delenv("CLI_TEST_UNSET_WRITE_KEY", raising=False)
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML)
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}: ")
    problems = [line.strip() for line in lines[1:]]
    for where, what in BROKEN_PATHS.items():
        matching = [p for p in problems if p.startswith(f"{where}: ")]
        assert matching, f"no problem reported at {where}:\n{err}"
        assert any(what in p for p in matching), f"{where}: expected {what!r} in {matching}"
    assert f"{len(problems)} problem(s)" in lines[0]


def test_check_config_without_the_hook_env_names_the_missing_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """config/test.yaml without HOOK_URL/HOOK_SECRET: exit 1, each unset variable with its path."""
    monkeypatch.delenv("HOOK_URL")
    monkeypatch.delenv("HOOK_SECRET")
    code = main(["check-config", str(TEST_CONFIG)])
    _, err = capsys.readouterr()
    assert code == 1
    for index in (0, 1):
        assert f"destinations[{index}].settings.url: environment variable HOOK_URL" in err
        assert f"destinations[{index}].settings.secret: environment variable HOOK_SECRET" in err


def test_check_config_subprocess_exit_codes_and_stderr(tmp_path: Path) -> None:
    """The installed console script: 0 on test.yaml, 1 with every path on the broken file."""
    env = {"HOOK_URL": HOOK_URL, "HOOK_SECRET": HOOK_SECRET}
    ok = run_router("check-config", "config/test.yaml", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "config/test.yaml: OK (1 source(s), 2 destination(s))"

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    failed = run_router("check-config", str(broken), env=env)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    for where in BROKEN_PATHS:
        assert f"  {where}: " in failed.stderr, f"{where} missing from:\n{failed.stderr}"


def test_check_config_reads_router_config_when_no_path_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a path, check-config validates the file named by ROUTER_CONFIG."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML)
    monkeypatch.setenv("ROUTER_CONFIG", str(path))
    assert main(["check-config"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(f"{path}: ")


def test_check_config_on_a_missing_file_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A routing file that does not exist: exit 1 and "cannot read", no traceback."""
    path = tmp_path / "nowhere.yaml"
    assert main(["check-config", str(path)]) == 1
    _, err = capsys.readouterr()
    assert f"(file): cannot read {path}" in err


# --- explain --------------------------------------------------------------------------------


def test_explain_without_consent_skips_analytics_and_delivers_the_order_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No consent signal: analytics-hook is skipped (no_consent), ops-hook gets 3 fields."""
    event = write_event(tmp_path, ORDER)
    reports = explain_json(capsys, "--config", str(TEST_CONFIG), "--event", str(event))
    assert list(reports) == ["analytics-hook", "ops-hook"]
    analytics, ops = reports["analytics-hook"], reports["ops-hook"]
    assert (analytics["decision"], analytics["reason"]) == ("skip", "no_consent")
    assert analytics["payload"] is None
    assert (ops["decision"], ops["reason"]) == ("deliver", "no_consent_required")
    assert ops["payload"] == {
        "messageId": "msg-order-1",
        "event": "Order Completed",
        "properties": {"order_id": "T-1001"},
    }
    assert "properties.email" in ops["removed"]
    assert "userId" in ops["removed"]
    (request,) = ops["requests"]
    assert request["url"] == HOOK_URL
    assert request["headers"]["webhook-id"] == "msg-order-1"
    assert request["body"] == ops["payload"]


def test_explain_with_denied_category_skips_with_category_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The event's own consent denies C0002 (analytics): category_denied, not no_consent."""
    denied = {**ORDER, "context": {"consent": {"categoryPreferences": {"C0002": False}}}}
    event = write_event(tmp_path, denied)
    reports = explain_json(capsys, "--config", str(TEST_CONFIG), "--event", str(event))
    analytics = reports["analytics-hook"]
    assert (analytics["decision"], analytics["reason"]) == ("skip", "category_denied")
    assert analytics["payload"] is None
    assert reports["ops-hook"]["decision"] == "deliver"


def test_explain_consent_option_flips_analytics_to_deliver_with_exact_payload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--consent '{"C0002": true}' grants analytics: deliver exactly the allowlisted fields."""
    event = write_event(tmp_path, ORDER)
    reports = explain_json(
        capsys,
        "--config",
        str(TEST_CONFIG),
        "--event",
        str(event),
        "--consent",
        '{"C0002": true}',
    )
    analytics = reports["analytics-hook"]
    assert (analytics["decision"], analytics["reason"]) == ("deliver", "consent_granted")
    assert analytics["payload"] == {
        "messageId": "msg-order-1",
        "type": "track",
        "event": "Order Completed",
        "anonymousId": "anon-42",
        "userId": token("user-42"),
        "properties": {"revenue": 42.5, "products": [{"product_id": "p-1"}]},
    }
    assert analytics["transformed"] == ["userId"]
    assert {"properties.email", "properties.order_id", "properties.products[].name"} <= set(
        analytics["removed"]
    )
    assert "user-42" not in json.dumps(analytics["requests"])
    assert analytics["consent"]["granted"] == ["analytics"]


def test_explain_page_event_is_not_listed_for_the_order_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ops-hook only takes Order Completed: a page is skipped with event_not_listed."""
    page = {
        "type": "page",
        "name": "Checkout",
        "messageId": "msg-page-1",
        "anonymousId": "anon-42",
        "properties": {"url": "https://shop.example/checkout"},
    }
    event = write_event(tmp_path, page)
    reports = explain_json(
        capsys,
        "--config",
        str(TEST_CONFIG),
        "--event",
        str(event),
        "--consent",
        '{"C0002": true}',
    )
    ops = reports["ops-hook"]
    assert (ops["decision"], ops["reason"]) == ("skip", "event_not_listed")
    assert ops["payload"] is None
    analytics = reports["analytics-hook"]
    assert analytics["decision"] == "deliver"
    assert analytics["payload"] == {
        "messageId": "msg-page-1",
        "type": "page",
        "anonymousId": "anon-42",
    }


ADS_YAML = """
sources:
  - id: web
    write_key: ads-write-key
consent:
  mappings:
    ids: {C0004: advertising}
destinations:
  - id: ads-hook
    type: webhook
    requires: [advertising]
    fields: [messageId, event]
    settings: {url: "https://ads.example/hook", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
"""


@pytest.fixture
def ads_config(tmp_path: Path) -> Path:
    path = tmp_path / "ads.yaml"
    path.write_text(ADS_YAML)
    return path


def test_explain_gpc_header_opts_out_of_advertising(
    tmp_path: Path, ads_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Advertising granted, but --header 'Sec-GPC: 1' skips ads-hook with gpc_opt_out."""
    event = write_event(tmp_path, ORDER)
    args = ["--config", str(ads_config), "--event", str(event), "--consent", '{"C0004": true}']
    without = explain_json(capsys, *args)
    assert (without["ads-hook"]["decision"], without["ads-hook"]["reason"]) == (
        "deliver",
        "consent_granted",
    )
    assert without["ads-hook"]["payload"] == {
        "messageId": "msg-order-1",
        "event": "Order Completed",
    }
    with_gpc = explain_json(capsys, *args, "--header", "Sec-GPC: 1")
    assert (with_gpc["ads-hook"]["decision"], with_gpc["ads-hook"]["reason"]) == (
        "skip",
        "gpc_opt_out",
    )
    assert with_gpc["ads-hook"]["payload"] is None


def test_explain_reads_router_config_when_no_config_option(
    tmp_path: Path,
    ads_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --config, explain uses the routing file named by ROUTER_CONFIG."""
    monkeypatch.setenv("ROUTER_CONFIG", str(ads_config))
    event = write_event(tmp_path, ORDER)
    reports = explain_json(capsys, "--event", str(event))
    assert list(reports) == ["ads-hook"]
    assert (reports["ads-hook"]["decision"], reports["ads-hook"]["reason"]) == (
        "skip",
        "no_consent",
    )


def test_explain_text_output_lists_decisions_and_payload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json: one line per destination, then the payload of those delivering."""
    event = write_event(tmp_path, ORDER)
    code = main(["explain", "--config", str(TEST_CONFIG), "--event", str(event)])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["analytics-hook", "skip", "no_consent"]
    assert lines[1].split() == ["ops-hook", "deliver", "no_consent_required"]
    assert json.loads(lines[2].removeprefix("  payload: ")) == {
        "event": "Order Completed",
        "messageId": "msg-order-1",
        "properties": {"order_id": "T-1001"},
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
    ids=["invalid-json", "not-an-object"],
)
def test_explain_rejects_an_unusable_event_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """An event file that is not a JSON object: exit 1 with a one-line reason, no traceback."""
    path = tmp_path / "event.json"
    path.write_text(content)
    code = main(["explain", "--config", str(TEST_CONFIG), "--event", str(path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert message in err


HEADER_SECRET_YAML = f"""
sources:
  - id: web
    write_key: {WRITE_KEY}
destinations:
  - id: partner-hook
    type: webhook
    requires: []
    fields: [messageId]
    settings:
      url: https://partner.example/hooks/orders
      secret: "{HOOK_SECRET}"
      headers: {{authorization: "Bearer sk_live_partner_token_123"}}
"""


def test_explain_masks_credentials_in_webhook_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A partner token configured in settings.headers never appears in explain's requests."""
    config = tmp_path / "partner.yaml"
    config.write_text(HEADER_SECRET_YAML)
    event = write_event(tmp_path, ORDER)
    reports = explain_json(capsys, "--config", str(config), "--event", str(event))
    (request,) = reports["partner-hook"]["requests"]
    assert "authorization" in request["headers"]
    assert "sk_live_partner_token_123" not in json.dumps(request)


def test_explain_subprocess_prints_json_reports(tmp_path: Path) -> None:
    """The console script's explain --json output parses and carries the same decisions."""
    event = write_event(tmp_path, ORDER)
    result = run_router(
        "explain",
        "--config",
        "config/test.yaml",
        "--event",
        str(event),
        "--json",
        env={"HOOK_URL": HOOK_URL, "HOOK_SECRET": HOOK_SECRET},
    )
    assert result.returncode == 0, result.stderr
    reports = {r["id"]: r for r in json.loads(result.stdout)}
    assert reports["analytics-hook"]["reason"] == "no_consent"
    assert reports["ops-hook"]["decision"] == "deliver"


# --- outbox and dlq (real Redis, router started in-process) ---------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Poll an async condition until it holds; fail after ``within_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


DRY_RUN_YAML = f"""
sources:
  - id: web
    write_key: {WRITE_KEY}
destinations:
  - id: preview-hook
    type: webhook
    purpose: A new partner feed, tried out before it goes live
    requires: []
    events: ["Order Completed"]
    fields: [messageId, event, properties.order_id]
    settings: {{url: "https://partner.example/hooks/orders", secret: "{HOOK_SECRET}"}}
    delivery: {{batch_size: 1, max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50}}
    dry_run: true
"""


def verify_signature(headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(HOOK_SECRET.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["webhook-signature"], expected)


async def test_outbox_prints_the_dry_run_request_with_the_secret_masked(
    tmp_path: Path,
    make_router: AppFactory,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dry_run: the encoded, signed request lands in the outbox; `outbox` prints it, no secret."""
    config = tmp_path / "dry-run.yaml"
    config.write_text(DRY_RUN_YAML)
    client = await make_router(routing_from(DRY_RUN_YAML))
    response = await client.post("/v1/track", json=ORDER, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"success": True}

    async def in_outbox() -> bool:
        return await redis_client.xlen(outbox_key("preview-hook")) > 0

    await eventually(in_outbox)
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, ["outbox", "preview-hook", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err

    (line,) = out.splitlines()
    record = json.loads(line)
    request = record["request"]
    assert request["method"] == "POST"
    assert request["url"] == "https://partner.example/hooks/orders"
    assert request["body"] == {
        "messageId": "msg-order-1",
        "event": "Order Completed",
        "properties": {"order_id": "T-1001"},
    }
    headers = request["headers"]
    assert headers["webhook-id"] == "msg-order-1"
    assert headers["webhook-signature"].startswith("v1,")
    # the outbox prints with sorted keys; the router signed the payload in allowlist order
    signed = {
        "messageId": "msg-order-1",
        "event": "Order Completed",
        "properties": request["body"]["properties"],
    }
    assert verify_signature(headers, json.dumps(signed, separators=(",", ":")).encode())
    secret_part = HOOK_SECRET.removeprefix("whsec_")
    assert secret_part not in out
    assert secret_part not in err
    raw = await redis_client.xrange(outbox_key("preview-hook"))
    assert secret_part.encode() not in b"".join(v for _, fields in raw for v in fields.values())
    assert "jane.doe@example.com" not in out


async def test_outbox_of_an_unknown_destination_lists_the_configured_ones(
    tmp_path: Path,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`outbox nope`: exit 1 and the configured destination ids on stderr."""
    config = tmp_path / "dry-run.yaml"
    config.write_text(DRY_RUN_YAML)
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, ["outbox", "nope", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "unknown destination 'nope'" in err
    assert "preview-hook" in err


def test_dlq_list_without_redis_exits_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable: exit 1 and "cannot reach Redis", no traceback."""
    monkeypatch.setenv("ROUTER_REDIS_URL", "redis://127.0.0.1:9/0")
    code = main(["dlq", "list", "ops-hook", "--config", str(TEST_CONFIG)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("cannot reach Redis: ")


async def _dead_letter_one_order(
    make_router: AppFactory, state: WebhookReceiver, url: str, redis_client: aioredis.Redis
) -> None:
    """The partner answers 400: the order is dead-lettered for ops-hook at once."""
    state.script = [400]
    client = await make_router(routing_from(hook_url=url))
    response = await client.post("/v1/track", json=ORDER, headers=AUTH)
    assert response.status == 200

    async def dead_lettered() -> bool:
        return await redis_client.xlen(dlq_key("ops-hook")) > 0

    await eventually(dead_lettered)


async def test_dlq_list_shows_the_entry_rejected_with_http_400(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 400 from the partner dead-letters the order at once; `dlq list` shows it as http_400."""
    state, url = receiver
    await _dead_letter_one_order(make_router, state, url, redis_client)
    assert [r.status for r in state.requests] == [400]  # permanent: not retried
    assert state.invalid == []

    monkeypatch.setenv("HOOK_URL", url)
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, ["dlq", "list", "ops-hook", "--config", str(TEST_CONFIG)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (line,) = out.splitlines()
    record = json.loads(line)
    assert record["reason"] == "http_400"
    assert record["d"]["delivery"]["message_id"] == "msg-order-1"
    assert record["d"]["delivery"]["payload"] == {
        "messageId": "msg-order-1",
        "event": "Order Completed",
        "properties": {"order_id": "T-1001"},
    }
    assert "jane.doe@example.com" not in out

    # the other destination has nothing dead-lettered, and says so on stderr
    code = await asyncio.to_thread(
        main, ["dlq", "list", "analytics-hook", "--config", str(TEST_CONFIG)]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == ""
    assert f"(nothing in {dlq_key('analytics-hook')})" in err


async def test_dlq_list_subprocess_reads_the_test_redis(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
) -> None:
    """The console script with ROUTER_REDIS_URL prints the dead letter and its reason."""
    state, url = receiver
    await _dead_letter_one_order(make_router, state, url, redis_client)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    environment.update(HOOK_URL=url, HOOK_SECRET=HOOK_SECRET, ROUTER_REDIS_URL=redis_server.url)
    process = await asyncio.create_subprocess_exec(
        *router_command(),
        "dlq",
        "list",
        "ops-hook",
        "--config",
        "config/test.yaml",
        cwd=REPO,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    (line,) = stdout.decode().splitlines()
    record = json.loads(line)
    assert record["reason"] == "http_400"
    assert record["d"]["delivery"]["message_id"] == "msg-order-1"
