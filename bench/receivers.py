"""Fake destinations for the benchmark: they verify, count and answer fast.

``python -m bench.receivers --port P --secret whsec_...`` serves:

- ``POST /hook/{name}``: a Standard Webhooks receiver (single event or ``{"batch": [...]}``);
  the signature is checked as in ``tests/fakes/webhook.py`` (401 when it does not verify);
- ``POST /2/httpapi``: a fake Amplitude HTTP V2 API that checks the API key, counts
  ``events`` and answers 200 ``{"code": 200}``;
- ``GET /stats``: per destination, requests, events, unique message ids (``messageId`` /
  ``insert_id``), duplicates, rejected requests, and the times of the first and last event;
- ``POST /reset``: forget everything (between phases).

Bodies are decoded with msgspec into structs that keep only the ids, so the receivers are not
the bottleneck of a delivery measurement.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvloop
from aiohttp import web


class _Ident(msgspec.Struct):
    messageId: str = ""  # noqa: N815 - the wire name


class _HookBody(msgspec.Struct):
    batch: list[_Ident] | None = None
    messageId: str | None = None  # noqa: N815 - the wire name


class _AmplitudeEvent(msgspec.Struct):
    insert_id: str = ""


class _AmplitudeBody(msgspec.Struct):
    api_key: str
    events: list[_AmplitudeEvent]


HOOK_DECODER = msgspec.json.Decoder(_HookBody)
AMPLITUDE_DECODER = msgspec.json.Decoder(_AmplitudeBody)


@dataclass
class Counts:
    """What one destination received."""

    requests: int = 0
    events: int = 0
    rejected: int = 0
    first: float | None = None
    last: float | None = None
    ids: set[str] = field(default_factory=set)

    def record(self, ids: list[str]) -> None:
        """Count one accepted request."""
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.requests += 1
        self.events += len(ids)
        self.ids.update(ids)

    def summary(self) -> dict[str, Any]:
        """The JSON of ``/stats``."""
        return {
            "requests": self.requests,
            "events": self.events,
            "unique": len(self.ids),
            "duplicates": self.events - len(self.ids),
            "rejected": self.rejected,
            "first": self.first,
            "last": self.last,
        }


@dataclass
class Receivers:
    """State of every fake destination."""

    secret: str
    amplitude_key: str
    counts: dict[str, Counts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._key = base64.b64decode(self.secret.removeprefix("whsec_"))

    def of(self, name: str) -> Counts:
        """The counters of one destination."""
        return self.counts.setdefault(name, Counts())

    def verify(self, request: web.Request, body: bytes) -> bool:
        """Standard Webhooks signature check."""
        ident = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not ident or not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return False
        digest = hmac.new(self._key, f"{ident}.{stamp}.".encode() + body, hashlib.sha256)
        expected = base64.b64encode(digest.digest()).decode()
        return any(
            version == "v1" and hmac.compare_digest(value, expected)
            for version, _, value in (s.partition(",") for s in signatures.split(" "))
        )

    async def hook(self, request: web.Request) -> web.Response:
        """A webhook destination (``/hook/{name}``)."""
        counts = self.of(request.match_info["name"])
        body = await request.read()
        if not self.verify(request, body):
            counts.rejected += 1
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            decoded = HOOK_DECODER.decode(body)
        except msgspec.DecodeError:
            counts.rejected += 1
            return web.json_response({"error": "bad body"}, status=400)
        if decoded.batch is not None:
            counts.record([e.messageId for e in decoded.batch])
        else:
            counts.record([decoded.messageId or ""])
        return web.json_response({"ok": True})

    async def amplitude(self, request: web.Request) -> web.Response:
        """A fake Amplitude HTTP V2 API: count and answer 200."""
        counts = self.of("amplitude")
        body = await request.read()
        try:
            decoded = AMPLITUDE_DECODER.decode(body)
        except msgspec.DecodeError:
            counts.rejected += 1
            return web.json_response(
                {"code": 400, "error": "Invalid JSON request body"}, status=400
            )
        if decoded.api_key != self.amplitude_key:
            counts.rejected += 1
            return web.json_response({"code": 400, "error": "Invalid API key"}, status=400)
        counts.record([e.insert_id for e in decoded.events])
        return web.json_response({"code": 200, "events_ingested": len(decoded.events)})

    async def stats(self, request: web.Request) -> web.Response:
        """Per destination counters."""
        del request
        return web.json_response({name: c.summary() for name, c in self.counts.items()})

    async def reset(self, request: web.Request) -> web.Response:
        """Forget everything received."""
        del request
        self.counts.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        """The receivers' application."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/hook/{name}", self.hook)
        app.router.add_post("/2/httpapi", self.amplitude)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset)
        return app


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.receivers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True, help="the webhooks' whsec_ secret")
    parser.add_argument("--amplitude-key", required=True)
    args = parser.parse_args()
    receivers = Receivers(secret=args.secret, amplitude_key=args.amplitude_key)
    web.run_app(
        receivers.app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
