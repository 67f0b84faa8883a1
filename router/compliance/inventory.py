"""The record of processing and third-party inventory (``router inventory``,
``GET /admin/inventory``).

Per destination: the recipient, purpose, legal basis and the recipient's stated retention (the
routing file's ``recipient``, ``purpose``, ``legal_basis``, ``retention``), the consent it
requires, what the data map says was actually sent over the last ``WINDOW_DAYS`` days (field
paths, their data categories, personal-data kinds, which fields were hashed, tokenized or
truncated), whether the connector can request deletion, and the last delivery. Findings a
privacy review acts on are flagged (``Flag``).

``build_inventory`` is pure (routing + data map days + last deliveries + ``now``);
``read_inventory`` reads the data map; ``render_markdown`` is a list of recipients fit for a
privacy policy, ``render_text`` the terminal view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from destinations.aggregate import AggregateConnector, AggregateSettings
from destinations.base import DeletionSkipped, HttpRequest
from destinations.fields import Transform
from router.compliance.aggregates import AggregateStore
from router.compliance.datamap import read_datamaps, read_last_deliveries
from router.routing import CompiledDestination, Routing

WINDOW_DAYS: Final = 30


class Flag(StrEnum):
    """What a privacy review should look at."""

    IDLE = "idle"
    """Enabled, but nothing delivered for ``WINDOW_DAYS`` days: the recipient still holds
    credentials and access for nothing (switch it off or remove it)."""
    UNUSED_FIELDS = "unused_fields"
    """Allowlisted fields never sent in ``WINDOW_DAYS`` days: the allowlist is wider than
    needed (data minimisation)."""
    UNDECLARED_PERSONAL_DATA = "undeclared_personal_data"
    """Personal-data kinds sent that the destination does not declare (``identifiers``)."""
    NO_LEGAL_BASIS = "no_legal_basis"
    """``legal_basis`` is not stated in the routing file."""
    NO_RETENTION = "no_retention"
    """The recipient's ``retention`` is not stated in the routing file."""


# Data categories of field paths, first match wins: (segment names or path prefixes, category).
_CATEGORIES: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("email",), "Contact details"),
    (("phone",), "Contact details"),
    (("firstName", "lastName", "name", "first_name", "last_name"), "Name"),
    (("context.ip",), "IP address"),
    (
        ("revenue", "total", "price", "currency", "products", "order_id", "value", "quantity"),
        "Purchase information",
    ),
    (("address", "context.location", "city", "postalCode", "country"), "Location"),
    (
        ("userId", "anonymousId", "context.device.id", "context.device.advertisingId"),
        "Online identifiers",
    ),
    (
        ("context.userAgent", "context.device", "context.os", "context.screen", "context.locale"),
        "Device and browser information",
    ),
    (("context.campaign", "context.referrer"), "Marketing attribution"),
    (("context.page", "url", "path", "referrer", "title", "search"), "Browsing activity"),
    (("messageId", "type", "event", "timestamp", "name", "sentAt"), "Event metadata"),
)
_OTHER: Final = "Other event properties"
AGGREGATES: Final = "Aggregate statistics with differential privacy (no personal data)"

# Personal-data kinds a sent path carries by its name (the safety net's kinds).
_KINDS: Final[Mapping[str, str]] = {"email": "email", "phone": "phone", "ip": "ip"}

_PROTECTION: Final[Mapping[Transform, str]] = {
    Transform.TOKENIZE: "tokenized",
    Transform.HASH_SHA256: "hashed",
    Transform.TRUNCATE_IP: "truncated",
}


def category_of(path: str) -> str:
    """The data category of a field path (``context.page.url`` -> ``Browsing activity``)."""
    plain = path.replace("[]", "")
    segments = plain.split(".")
    for names, category in _CATEGORIES:
        for name in names:
            if plain == name or plain.startswith(name + ".") or name in segments:
                return category
    return _OTHER


def kind_of(path: str) -> str | None:
    """The personal-data kind a path carries by its name (``traits.email`` -> ``email``)."""
    return _KINDS.get(path.replace("[]", "").rpartition(".")[2])


class Protection(msgspec.Struct, frozen=True):
    """A sent field that left transformed: ``hashed``, ``tokenized`` or ``truncated``, by the
    routing file's ``transforms`` (``by: router``) or the connector itself (``by: connector``)."""

    path: str
    protection: str
    by: str


class Deletion(msgspec.Struct, frozen=True):
    """Whether the router can ask the recipient to delete a person (``router erase``)."""

    supported: bool
    detail: str = ""


class PrivacyBudget(msgspec.Struct, frozen=True):
    """An aggregate destination's differential privacy: per-window epsilon, the daily budget
    and what today's releases spent of it."""

    window_s: int
    epsilon: float
    daily_epsilon: float
    spent_today: float
    max_contributions: int


class Recipient(msgspec.Struct, frozen=True):
    """One destination in the record of processing."""

    id: str
    type: str
    recipient: str
    purpose: str
    legal_basis: str | None
    retention: str | None
    enabled: bool
    dry_run: bool
    consent_required: list[str]
    events_sent: int
    fields_sent: list[str]
    data_categories: list[str]
    personal_data: list[str]
    declared_personal_data: list[str]
    protected_fields: list[Protection]
    deletion: Deletion
    last_delivery: datetime | None
    unused_fields: list[str]
    undeclared_personal_data: list[str]
    flags: list[Flag]
    privacy_budget: PrivacyBudget | None = None
    """Aggregate destinations only."""


class Inventory(msgspec.Struct, frozen=True):
    """The record of processing at ``generated_at``, over ``window_days`` days of data map."""

    generated_at: datetime
    window_days: int
    routing_digest: str
    recipients: list[Recipient]

    def to_json(self) -> dict[str, Any]:
        """The inventory as JSON-ready builtins."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def deletion_support(destination: CompiledDestination) -> Deletion:
    """Ask the connector (pure) how it would request a deletion."""
    answer = destination.connector.deletion_request(("inventory-probe",))
    if isinstance(answer, HttpRequest):
        return Deletion(True)
    if isinstance(answer, DeletionSkipped):
        return Deletion(False, answer.reason)
    return Deletion(False, "no_deletion_api")


def build_inventory(
    routing: Routing,
    days: Sequence[Mapping[str, Any]],
    last: Mapping[str, datetime],
    now: datetime,
    *,
    window_days: int = WINDOW_DAYS,
    spent: Mapping[str, float] | None = None,
) -> Inventory:
    """The record of processing from the routing file and ``days`` of data map (``read_datamap``
    answers); ``last``: each destination's last delivery; ``spent``: epsilon spent today by
    aggregate destinations."""
    recipients = [
        _recipient(
            d,
            days,
            last.get(d.id),
            now,
            window_days=window_days,
            spent=(spent or {}).get(d.id, 0.0),
        )
        for d in routing.destinations
    ]
    return Inventory(now, window_days, routing.digest, recipients)


def _recipient(
    destination: CompiledDestination,
    days: Sequence[Mapping[str, Any]],
    last: datetime | None,
    now: datetime,
    *,
    window_days: int,
    spent: float,
) -> Recipient:
    config = destination.config
    events = 0
    fields: set[str] = set()
    kinds: set[str] = set()
    for day in days:
        row = day["destinations"].get(destination.id)
        if row is None:
            continue
        events += int(row["events"])
        fields.update(row["fields"])
        kinds.update(row["pii"])
    kinds.update(k for k in map(kind_of, fields) if k is not None)
    declared = set(destination.identifiers.values())
    undeclared = sorted(kinds - declared)
    allowlist = destination.allowlist
    used = {allowlist.rule_for(path) for path in fields}
    listed = [*config.fields, *(p for p, t in config.transforms.items() if t is not Transform.DROP)]
    unused = sorted({p for p in listed if p not in used}) if events else []
    protected = [
        Protection(path, _PROTECTION[config.transforms[rule]], "router")
        for path in sorted(fields)
        if (rule := allowlist.rule_for(path)) in config.transforms
        and config.transforms[rule] in _PROTECTION
    ]
    protected += [
        Protection(path, "hashed", "connector")
        for path in sorted(fields & destination.connector.hashed_fields)
    ]
    active = last is not None and now - last < timedelta(days=window_days)
    flags = []
    if config.enabled and not events and not active:
        flags.append(Flag.IDLE)
    if unused:
        flags.append(Flag.UNUSED_FIELDS)
    if undeclared:
        flags.append(Flag.UNDECLARED_PERSONAL_DATA)
    if config.legal_basis is None:
        flags.append(Flag.NO_LEGAL_BASIS)
    if config.retention is None:
        flags.append(Flag.NO_RETENTION)
    return Recipient(
        id=destination.id,
        type=destination.type,
        recipient=config.recipient or destination.connector.recipient(),
        purpose=config.purpose,
        legal_basis=config.legal_basis.value if config.legal_basis else None,
        retention=config.retention,
        enabled=config.enabled,
        dry_run=config.dry_run,
        consent_required=list(destination.requires),
        events_sent=events,
        fields_sent=sorted(fields),
        data_categories=(
            [AGGREGATES]
            if destination.type == AggregateConnector.type_name
            else sorted({category_of(p) for p in fields})
        ),
        personal_data=sorted(kinds),
        declared_personal_data=sorted(declared),
        protected_fields=protected,
        deletion=deletion_support(destination),
        last_delivery=last,
        unused_fields=unused,
        undeclared_personal_data=undeclared,
        flags=flags,
        privacy_budget=_budget(destination, spent),
    )


def _budget(destination: CompiledDestination, spent: float) -> PrivacyBudget | None:
    settings = destination.connector.settings
    if not isinstance(settings, AggregateSettings):
        return None
    return PrivacyBudget(
        settings.window_s,
        settings.epsilon,
        settings.daily_epsilon,
        spent,
        settings.max_contributions,
    )


async def read_inventory(
    client: aioredis.Redis, routing: Routing, now: datetime, window_days: int = WINDOW_DAYS
) -> Inventory:
    """The record of processing from the data map in Redis."""
    today = now.date()
    days = await read_datamaps(client, (today - timedelta(days=n) for n in range(window_days)))
    spent = {}
    for destination in routing.destinations:
        settings = destination.connector.settings
        if isinstance(settings, AggregateSettings):
            store = AggregateStore(client, destination.id, settings)
            spent[destination.id] = await store.spent(today.isoformat())
    last = await read_last_deliveries(client)
    return build_inventory(routing, days, last, now, window_days=window_days, spent=spent)


_LEGAL_BASES: Final[Mapping[str, str]] = {
    "consent": "Consent (GDPR art. 6(1)(a))",
    "contract": "Performance of a contract (GDPR art. 6(1)(b))",
    "legal_obligation": "Legal obligation (GDPR art. 6(1)(c))",
    "vital_interests": "Vital interests (GDPR art. 6(1)(d))",
    "public_task": "Public task (GDPR art. 6(1)(e))",
    "legitimate_interests": "Legitimate interests (GDPR art. 6(1)(f))",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or "-"


def render_markdown(inventory: Inventory) -> str:
    """The recipients as a Markdown table, fit to paste into a privacy policy (enabled
    destinations only; the review flags are in ``render_text`` and the JSON)."""
    lines = [
        "| Recipient | Purpose | Data shared | Legal basis | Consent required | Retention |"
        " Deletion on request |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in inventory.recipients:
        if not row.enabled:
            continue
        shared = ", ".join(row.data_categories) or f"None in the last {inventory.window_days} days"
        hashed = sorted({p.path for p in row.protected_fields if p.protection != "truncated"})
        if hashed:
            shared += f" (pseudonymised: {', '.join(hashed)})"
        basis = _LEGAL_BASES.get(row.legal_basis or "", "Not stated")
        consent = ", ".join(row.consent_required) or "Not required"
        cells = (
            row.recipient,
            row.purpose,
            shared,
            basis,
            consent,
            row.retention or "Not stated",
            "Yes" if row.deletion.supported else "No",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    lines.append(
        f"_Data shared: what left in the {inventory.window_days} days before "
        f"{inventory.generated_at.date().isoformat()}._"
    )
    return "\n".join(lines) + "\n"


def render_text(inventory: Inventory) -> str:
    """A plain-text view for the terminal, flags first on each destination."""
    lines = [
        f"record of processing, {inventory.generated_at.isoformat(timespec='seconds')} "
        f"(data map: last {inventory.window_days} days)"
    ]
    for row in inventory.recipients:
        state = "enabled" if row.enabled else "disabled"
        if row.dry_run:
            state += ", dry run"
        lines.append(f"{row.id} ({row.type}, {state}) -> {row.recipient}")
        if row.flags:
            lines.append("  FLAGS: " + ", ".join(row.flags))
        last = row.last_delivery.isoformat(timespec="seconds") if row.last_delivery else "never"
        lines.append(f"  purpose: {row.purpose or '-'}")
        lines.append(
            f"  legal basis: {row.legal_basis or '-'}; retention: {row.retention or '-'}; "
            f"consent: {', '.join(row.consent_required) or 'none'}"
        )
        lines.append(f"  sent: {row.events_sent} events; last delivery: {last}")
        lines.append(f"  categories: {', '.join(row.data_categories) or '-'}")
        lines.append(f"  personal data: {', '.join(row.personal_data) or '-'}")
        for item in row.protected_fields:
            lines.append(f"    {item.path}: {item.protection} by the {item.by}")
        deletion = "yes" if row.deletion.supported else f"no ({row.deletion.detail})"
        lines.append(f"  deletion on request: {deletion}")
        if row.unused_fields:
            lines.append(f"  allowlisted, never sent: {', '.join(row.unused_fields)}")
        if row.undeclared_personal_data:
            lines.append(f"  undeclared personal data: {', '.join(row.undeclared_personal_data)}")
        if budget := row.privacy_budget:
            lines.append(
                f"  differential privacy: epsilon {budget.epsilon} per {budget.window_s} s window,"
                f" {budget.spent_today:g} of {budget.daily_epsilon} spent today"
            )
    return "\n".join(lines) + "\n"
