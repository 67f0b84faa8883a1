"""``router explain``: what each destination would receive for one event, and why. Pure.

It runs the same sanitize, consent and plan steps as the ingest handler, then each delivering
destination's encoder, and reports per destination: deliver or skip, the reason, the minimized
payload, the fields removed, and the platform request that would be sent (secrets masked),
the identifiers left out of it and why (``omitted``), and, for platforms that match people,
the kinds of match keys it carries (``match_keys``: email, phone, external_id, click_id...).
Suppression (erasure) lives in Redis and is not consulted here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from consent.resolve import READERS, RequestSignals, resolve_consent
from router.core.outcomes import Deliver, Rejection
from router.core.paths import removed
from router.core.plan import plan
from router.core.sanitize import Limits, sanitize
from router.core.schema import WireEvent
from router.routing import Routing


def consent_context(consent: Any) -> dict[str, Any]:
    """Interpret ``--consent JSON`` as context fields.

    Accepts a ``context.consent`` object (``{"categoryPreferences": {...}}``, ``{"tcString":
    ...}``, ``{"gpc": true}``...), an object with ``consent`` and/or ``consentManagement`` keys,
    or a bare ``{category id: bool}`` map.
    """
    if not isinstance(consent, Mapping):
        return {"consent": {"categoryPreferences": consent}}
    if "consent" in consent or "consentManagement" in consent:
        return dict(consent)
    known = {key for reader in READERS for key in reader.consent_keys}
    if known.intersection(consent) or not consent:
        return {"consent": dict(consent)}
    return {"consent": {"categoryPreferences": dict(consent)}}


def explain(
    routing: Routing,
    wire: WireEvent,
    *,
    now: datetime,
    new_id: Callable[[], str],
    signals: RequestSignals,
) -> list[dict[str, Any]] | Rejection:
    """One report per destination, or the rejection when the event itself is invalid."""
    limits = routing.file.limits
    event = sanitize(
        wire,
        route_type=None,
        received_at=now,
        new_id=new_id,
        limits=Limits(max_string_chars=limits.max_string_chars, max_depth=limits.max_depth),
    )
    if isinstance(event, Rejection):
        return event
    state = resolve_consent(event.data.get("context") or {}, signals, routing.policy)
    snapshot = {
        "granted": sorted(state.granted),
        "denied": {k: v.value for k, v in sorted(state.denied_by.items())},
        "signals": [s.value for s in state.signals],
        "unparseable": [s.value for s in state.unparseable],
        "region": state.region,
    }
    reports: list[dict[str, Any]] = []
    for decision in plan(event, state, routing.destinations, routing.policy):
        destination = decision.destination
        report: dict[str, Any] = {"id": destination.id, "type": destination.type}
        if isinstance(decision, Deliver):
            encoded = destination.connector.encode([decision.delivery], now)
            report.update(
                decision="deliver",
                reason="consent_granted" if destination.requires else "no_consent_required",
                payload=decision.delivery.payload,
                removed=removed(event.data, decision.delivery.payload),
                transformed=sorted(destination.allowlist.transformed_paths),
                requests=[r.redacted() for r in encoded.requests],
                dropped=[{"reason": d.reason, "detail": d.detail} for d in encoded.dropped],
                omitted=[{"field": o.field, "reason": o.reason} for o in encoded.omitted],
                dry_run=destination.config.dry_run,
            )
            if 0 in encoded.matched:
                # Match readiness: the identifiers the platform can match this person on.
                report["match_keys"] = list(encoded.matched[0])
        else:
            report.update(
                decision="skip", reason=decision.reason.value, detail=decision.detail, payload=None
            )
        report["requires"] = list(destination.requires)
        report["consent"] = snapshot
        reports.append(report)
    return reports
