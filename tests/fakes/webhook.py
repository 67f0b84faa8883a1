"""A partner's webhook endpoint that verifies Standard Webhooks signatures.

It rejects (401) a request whose signature, id or timestamp does not verify, answers with the
scripted statuses first (e.g. ``[500, 200]``), and records every accepted delivery.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    """One request as the receiver saw it."""

    webhook_id: str
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """State of the fake endpoint."""

    secret: str
    script: list[int] = field(default_factory=list)
    tolerance_s: int = 300
    requests: list[Received] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    retry_after: str | None = None
    hang_first: bool = False
    hanging: int = 0
    times: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def events(self) -> list[dict[str, Any]]:
        """Every event accepted, batches flattened."""
        out: list[dict[str, Any]] = []
        for request in self.accepted:
            body = request.body
            out.extend(body["batch"] if isinstance(body, dict) and "batch" in body else [body])
        return out

    def verify(self, headers: dict[str, str], body: bytes) -> str | None:
        """The reason a request fails verification, or None."""
        ident = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not ident or not stamp or not signatures:
            return "missing webhook headers"
        if "." in ident:
            return "webhook-id contains a dot"
        if abs(time.time() - int(stamp)) > self.tolerance_s:
            return "timestamp outside tolerance"
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(
            hmac.new(key, f"{ident}.{stamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        for signature in signatures.split(" "):
            version, _, value = signature.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return None
        return "bad signature"

    def app(self) -> web.Application:
        """The aiohttp application serving ``POST /hook``."""

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            problem = self.verify(headers, body)
            if problem is not None:
                self.invalid.append(problem)
                return web.json_response({"error": problem}, status=401)
            if self.hang_first:
                self.hang_first = False
                self.hanging += 1
                await asyncio.sleep(3600)
            status = self.script.pop(0) if self.script else 200
            self.times.append(time.monotonic())
            self.requests.append(
                Received(headers.get("webhook-id", ""), status, json.loads(body), headers)
            )
            headers_out = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response({"ok": status < 300}, status=status, headers=headers_out)

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app
