"""What the load generator posts: a realistic Segment "Order Completed" event, alone or in
batches of 100, each event with its own ``messageId``.

The body is the same for every request except the message ids, which the load generator
writes into the template (``MARKER``) so that every accepted event can be found again at its
destinations (receivers count unique ids). The same workload drives the baseline and the
router.

Two batch workloads: ``batch`` repeats one person's event (same user, order id and URL: the
router's memos of subjects, consent, paths and transforms hit on every event, which flatters
it), ``distinct_batch`` gives every event its own user id, anonymous id, order id and page URL
(also written into the template by the load generator), with the consent choice in the event
since those people have no stored record.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MARKER = "@MID@"
USER_ID = "user-7f3c9a12e4"
ANONYMOUS_ID = "5f1c2a9e-6b0d-4c1e-9a53-2f8e1b7c4d90"
CONSENT_PREFERENCES = {"C0001": True, "C0002": True, "C0003": False, "C0004": False}
"""In-event consent (OneTrust ids through ``consent.mappings.ids`` of ``bench/routing.yaml``):
necessary and analytics granted, functional and advertising denied."""
STORED_CONSENT = {"necessary": True, "analytics": True, "functional": False, "advertising": False}
"""The same choice, as the stored record posted to ``POST /v1/consent`` when it exists."""


def run_tag(number: int) -> str:
    """``number`` in base 36 and a closing letter: a run's prefix of ids without long digit
    runs (a 13-digit run in every user id would send each through the PII net's card check,
    which real ids do not). The letter keeps the counters written after it (``-{n}-{index}``)
    apart from the tag's last digits, so what the PII net sees does not change from run to run.
    """
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = "x"
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def auth_header(write_key: str) -> str:
    """HTTP Basic with the write key as user name, as the Segment SDKs send it."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def order_completed(
    message_id: str,
    *,
    in_event_consent: bool,
    now: datetime,
    person: str | None = None,
) -> dict[str, Any]:
    """One event as analytics.js would send it (about 1.3 KB of JSON).

    ``person``: a text put into the user id, anonymous id, order id and page URL (the
    ``distinct`` workloads pass ``MARKER``, so that each gets a value of its own); ``None``:
    the one bench user and order."""
    user_id, anonymous_id, order_id = USER_ID, ANONYMOUS_ID, "ORD-2026-000123"
    if person is not None:
        user_id, anonymous_id, order_id = f"user-{person}", f"anon-{person}", f"ORD-{person}"
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    context: dict[str, Any] = {
        "ip": "203.0.113.42",
        "locale": "en-US",
        "userAgent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        ),
        "page": {
            "path": "/checkout/complete",
            "url": f"https://shop.example.com/checkout/complete?order={order_id}",
            "title": "Thank you for your order",
            "referrer": "https://shop.example.com/cart",
        },
        "library": {"name": "analytics.js", "version": "next-1.72.0"},
        "campaign": {"source": "newsletter", "medium": "email", "name": "black-friday"},
    }
    if in_event_consent:
        context["consent"] = {"categoryPreferences": dict(CONSENT_PREFERENCES)}
    return {
        "messageId": message_id,
        "type": "track",
        "event": "Order Completed",
        "userId": user_id,
        "anonymousId": anonymous_id,
        "timestamp": stamp,
        "properties": {
            "order_id": order_id,
            "total": 127.4,
            "revenue": 112.5,
            "shipping": 9.9,
            "tax": 5.0,
            "currency": "EUR",
            "coupon": "BF2026",
            "products": [
                {
                    "product_id": f"SKU-{n:05d}",
                    "name": f"Product {n}",
                    "price": 37.5,
                    "quantity": 1,
                    "category": "Shoes",
                }
                for n in range(3)
            ],
        },
        "context": context,
    }


@dataclass(frozen=True)
class Workload:
    """One kind of request: where it goes and its body template, split at the markers."""

    name: str
    path: str
    parts: tuple[str, ...]
    events_per_request: int
    authorization: str

    @property
    def sample_body(self) -> bytes:
        """A body with placeholder ids (for sizes and smoke checks)."""
        ids = (f"sample-{n}" for n in range(1, len(self.parts)))
        out = [self.parts[0]]
        for ident, part in zip(ids, self.parts[1:], strict=True):
            out += [ident, part]
        return "".join(out).encode()


def single(write_key: str, *, in_event_consent: bool) -> Workload:
    """``POST /v1/track`` with one event."""
    event = order_completed(MARKER, in_event_consent=in_event_consent, now=datetime.now(UTC))
    text = json.dumps(event, separators=(",", ":"))
    return Workload("single", "/v1/track", tuple(text.split(MARKER)), 1, auth_header(write_key))


def batch(write_key: str, *, size: int, in_event_consent: bool) -> Workload:
    """``POST /v1/batch`` with ``size`` events."""
    now = datetime.now(UTC)
    events = [order_completed(MARKER, in_event_consent=in_event_consent, now=now)] * size
    sent_at = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    text = json.dumps({"batch": events, "sentAt": sent_at}, separators=(",", ":"))
    return Workload(
        f"batch{size}", "/v1/batch", tuple(text.split(MARKER)), size, auth_header(write_key)
    )


def distinct_batch(write_key: str, *, size: int) -> Workload:
    """``POST /v1/batch`` with ``size`` events of ``size`` different people: every event has
    its own user id, anonymous id, order id and page URL (each written by the load generator,
    like the message ids), and carries its consent (no stored record exists for them)."""
    now = datetime.now(UTC)
    events = [
        order_completed(MARKER, in_event_consent=True, now=now, person=MARKER) for _ in range(size)
    ]
    sent_at = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    text = json.dumps({"batch": events, "sentAt": sent_at}, separators=(",", ":"))
    return Workload(
        f"distinct{size}", "/v1/batch", tuple(text.split(MARKER)), size, auth_header(write_key)
    )


def _lua_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(workload: Workload, run_id: str) -> str:
    """The wrk script: POST the template with fresh ids; ``done`` prints exact figures as JSON.

    Message ids are ``{run_id}_{thread}-{100000 + request}-{1000 + n}``: unique across threads
    and runs, and, like real ids, holding numbers: a grouped run of ten digits and more, which
    the PII net must look at (plain counters stayed under its 8 digits for the first thousand
    requests of a thread, which flattered it). The ``_`` keeps the digits the run id ends with
    (``distinct100``) out of that run: glued, they made a 14-digit run, a card number to check.
    """
    parts = ",\n  ".join(_lua_string(p) for p in workload.parts)
    return f"""-- generated by bench/payload.py
local parts = {{
  {parts}
}}
local path = {_lua_string(workload.path)}
local auth = {_lua_string(workload.authorization)}
local run_id = {_lua_string(run_id)}
local threads = {{}}
local counter = 0
local prefix = ""
local buf = {{}}
local nparts = #parts

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

function init(args)
  prefix = run_id .. "_" .. tostring(thread_index) .. "-"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = auth
end

function request()
  counter = counter + 1
  local base = prefix .. (100000 + counter) .. "-"
  buf[1] = parts[1]
  for i = 2, nparts do
    buf[2 * i - 2] = base .. (1000 + i - 1)
    buf[2 * i - 1] = parts[i]
  end
  return wrk.format(nil, path, nil, table.concat(buf, "", 1, 2 * nparts - 1))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"p999_us":%.0f,"max_us":%.0f,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""
