"""Resolve an event's consent: every signal merged into one ``ConsentState``. Pure.

Merging rules (design.md section 5):
- a category is granted when some signal grants it and no signal denies it (a denial wins);
- a malformed signal makes the whole state unparseable (fail closed);
- when no CMP signal is present, the region's ``missing`` policy decides: ``deny`` grants
  nothing, ``allow`` grants every category (opt-out regimes); opt-out signals (GPC) still deny.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import ModuleType
from typing import Any

from consent.errors import DecodeError
from consent.iab import read_consent_mode, read_gpp, read_onetrust, read_tcf, read_us_privacy
from consent.memo import BoundedMemo, Unkeyable, frozen
from consent.model import ConsentState, DenyReason, Signal, StoredConsent
from consent.policy import ConsentPolicy, Missing
from consent.signals import (
    Extractor,
    SignalReading,
    gpc_reading,
    read_gpc_flag,
    read_rudderstack,
    read_segment,
)

_native: ModuleType | None
try:  # the memo key in C (consent/_speedups.pyx), when pip could build it (setup.py)
    import consent._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None


@dataclass(frozen=True, slots=True)
class Reader:
    """One signal's extractor and the keys whose presence means the signal may be there."""

    signal: Signal
    extract: Extractor
    consent_keys: frozenset[str] = frozenset()
    """Keys of ``context.consent`` that carry the signal."""
    context_keys: frozenset[str] = frozenset()
    """Keys of ``context`` itself that carry it."""


READERS: tuple[Reader, ...] = (
    Reader(Signal.SEGMENT, read_segment, frozenset({"categoryPreferences"})),
    Reader(Signal.RUDDERSTACK, read_rudderstack, context_keys=frozenset({"consentManagement"})),
    Reader(
        Signal.ONETRUST,
        read_onetrust,
        frozenset(
            {"oneTrust", "onetrust", "onetrustGroups", "OptanonConsent", "OnetrustActiveGroups"}
        ),
    ),
    Reader(
        Signal.TCF,
        read_tcf,
        frozenset({"tcString", "tcfString", "gdpr_consent"}),
        frozenset({"gdpr_consent"}),
    ),
    Reader(Signal.GPP, read_gpp, frozenset({"gppString", "gpp"})),
    Reader(
        Signal.US_PRIVACY,
        read_us_privacy,
        frozenset({"usPrivacy", "us_privacy", "uspString"}),
        frozenset({"us_privacy"}),
    ),
    Reader(
        Signal.CONSENT_MODE,
        read_consent_mode,
        frozenset({"googleConsentMode", "consentMode", "gcm"}),
    ),
    Reader(Signal.GPC, read_gpc_flag, frozenset({"gpc"})),
)
"""Every in-event signal, in the order their readings are merged. A reader runs only when one
of its keys is present, so an event without consent fields costs almost nothing. A reader reads
nothing of the context but ``context.consent`` and its own ``context_keys``: ``signal_key`` keys
the memo of readings by exactly these."""


_CONSENT_KEYS = frozenset().union(*(r.consent_keys for r in READERS))
_CONTEXT_KEYS = frozenset().union(*(r.context_keys for r in READERS))
_CONTEXT_KEY_ORDER = tuple(sorted(_CONTEXT_KEYS))

MEMO_SIZE = 4096
"""Distinct signal values (and, apart, merged states) remembered per policy."""
_MEMO_POLICIES = 4
"""Policies with a memo at once (a reloaded routing file brings a new one)."""


def carries_signals(context: Mapping[str, Any]) -> bool:
    """Whether an event's context holds any key a reader of ``READERS`` looks at. Without one,
    the event's consent depends only on its stored record, its region and its request."""
    if not _CONTEXT_KEYS.isdisjoint(context):
        return True
    consent = context.get("consent")
    return isinstance(consent, dict) and not _CONSENT_KEYS.isdisjoint(consent)


@dataclass(frozen=True, slots=True)
class RequestSignals:
    """Consent facts carried by the HTTP request rather than the event."""

    gpc: bool = False
    region: str | None = None


def region_of(context: Mapping[str, Any], request: RequestSignals) -> str | None:
    """The country code from ``context.location.country``, else the request's geo header."""
    location = context.get("location")
    # None or a dict first: ``isinstance`` with an ABC runs Python code (ABCMeta's check)
    if location is not None and (type(location) is dict or isinstance(location, Mapping)):
        country = location.get("country")
        if isinstance(country, str) and country.strip():
            return country.strip().upper()
    return request.region.upper() if request.region else None


def merge(
    readings: Sequence[SignalReading],
    unparseable: Sequence[Signal],
    policy: ConsentPolicy,
    region: str | None,
    *,
    expired: bool = False,
) -> ConsentState:
    """Merge signal readings into one state; denials win, absence falls to the policy."""
    granted: set[str] = set()
    denied_by: dict[str, DenyReason] = {}
    tcf = None
    for reading in readings:
        for category, vote in reading.votes.items():
            if vote:
                granted.add(category)
            elif category not in denied_by:
                denied_by[category] = reading.deny_reason
        if reading.tcf is not None:
            tcf = reading.tcf
    no_choice = not any(r.cmp for r in readings) and not unparseable and not expired
    if no_choice and policy.missing_for(region) is Missing.ALLOW:
        granted.update(policy.categories)
    granted.difference_update(denied_by)
    return ConsentState(
        granted=frozenset(granted),
        denied_by=denied_by,
        signals=tuple(r.signal for r in readings),
        unparseable=tuple(unparseable),
        gpc=any(r.gpc for r in readings),
        us_opt_out=any(r.us_opt_out for r in readings),
        region=region,
        expired=expired,
        tcf=tcf,
    )


def resolve_consent(
    context: Mapping[str, Any],
    request: RequestSignals,
    policy: ConsentPolicy,
    readers: Sequence[Reader] = READERS,
    *,
    stored: StoredConsent | None = None,
    event_time: datetime | None = None,
    now: datetime | None = None,
) -> ConsentState:
    """Every signal of an event and its request, merged under the policy.

    Stored consent (``stored``) is used when the event carries no CMP choice; when the event
    does carry one, only a stored withdrawal newer than the event counts, and it wins. A stored
    record older than ``max_age_days`` is expired: without another choice, nothing is granted
    (``consent_expired``).

    The event's own signals are read once per distinct value (``SignalMemo``): the same
    TC strings and category maps arrive with person after person. The merged state itself is
    shared by every event of the same signals, region and request GPC, and, with a stored
    record, of the same use of it (expired, read, only its withdrawals, or not read) and the
    same categories it grants and denies: what ``merge`` reads of it.
    """
    region = region_of(context, request)
    memo = _memo_for(policy) if readers is READERS else None
    key = signal_key(context) if memo is not None else None
    if memo is not None and key is not None:
        state_key = (key, request.gpc, region)
        if stored is None:
            state = memo.states.get(state_key)
            if state is not None:
                return state
        own = memo.signals.get(key)
        if own is None:
            own = memo.signals.put(key, read_signals(context, policy, readers))
        if stored is None:
            return memo.states.put(state_key, _merge_own(own, request, policy, region))
        use = _stored_use(own, policy, stored, event_time, now)
        # The categories as iterated: the order of their votes is the order of ``denied_by``.
        stored_key = (state_key, use, tuple(stored.granted), tuple(stored.denied))
        state = memo.states.get(stored_key)
        if state is None:
            state = memo.states.put(
                stored_key, _merge_stored(own, request, policy, region, stored=stored, use=use)
            )
        return state
    own = read_signals(context, policy, readers)
    if stored is None:
        return _merge_own(own, request, policy, region)
    use = _stored_use(own, policy, stored, event_time, now)
    return _merge_stored(own, request, policy, region, stored=stored, use=use)


class StoredUse(Enum):
    """How an event's consent uses its subject's stored record."""

    EXPIRED = "expired"
    """Older than ``max_age_days`` and the event makes no choice: nothing is granted."""
    READ = "read"
    """The event makes no choice: the record is the choice."""
    WITHDRAWALS = "withdrawals"
    """The event makes a choice, older than the record: the record's denials win."""
    UNUSED = "unused"
    """The event makes a choice newer than the record (or the record is too old)."""


def _stored_use(
    own: OwnSignals,
    policy: ConsentPolicy,
    stored: StoredConsent,
    event_time: datetime | None,
    now: datetime | None,
) -> StoredUse:
    has_choice = own.choice
    if now is not None and stored.updated_at < now - timedelta(days=policy.max_age_days):
        return StoredUse.UNUSED if has_choice else StoredUse.EXPIRED
    if not has_choice:
        return StoredUse.READ
    if event_time is not None and stored.updated_at > event_time:
        return StoredUse.WITHDRAWALS
    return StoredUse.UNUSED


def _merge_stored(
    own: OwnSignals,
    request: RequestSignals,
    policy: ConsentPolicy,
    region: str | None,
    *,
    stored: StoredConsent,
    use: StoredUse,
) -> ConsentState:
    """The state of an event's own signals, its request's and its stored record's (``use``)."""
    readings = list(own.readings)
    if request.gpc and not own.gpc:
        readings.append(gpc_reading(policy))
    if use is StoredUse.READ:
        readings.append(stored_reading(stored))
    elif use is StoredUse.WITHDRAWALS:
        readings.append(withdrawal_reading(stored))
    return merge(readings, own.unparseable, policy, region, expired=use is StoredUse.EXPIRED)


@dataclass(frozen=True, slots=True)
class OwnSignals:
    """What an event's own consent fields say, before the request and stored state join in.

    Shared between events (memoized): nothing may change a reading once it is here."""

    readings: tuple[SignalReading, ...]
    unparseable: tuple[Signal, ...]

    @property
    def choice(self) -> bool:
        """Whether the event makes a CMP choice (a malformed signal counts as one)."""
        return bool(self.unparseable) or any(r.cmp for r in self.readings)

    @property
    def gpc(self) -> bool:
        """Whether some signal of the event is a GPC opt-out."""
        return any(r.gpc for r in self.readings)


def read_signals(
    context: Mapping[str, Any], policy: ConsentPolicy, readers: Sequence[Reader] = READERS
) -> OwnSignals:
    """Run every reader whose keys the context holds; a malformed signal is ``unparseable``."""
    readings: list[SignalReading] = []
    unparseable: list[Signal] = []
    consent = context.get("consent")
    consent_keys = consent.keys() if isinstance(consent, dict) else frozenset()
    for reader in readers:
        if reader.consent_keys.isdisjoint(consent_keys) and reader.context_keys.isdisjoint(context):
            continue
        try:
            reading = reader.extract(context, policy)
        except DecodeError:
            unparseable.append(reader.signal)
            continue
        if reading is not None:
            readings.append(reading)
    return OwnSignals(tuple(readings), tuple(unparseable))


def _merge_own(
    own: OwnSignals, request: RequestSignals, policy: ConsentPolicy, region: str | None
) -> ConsentState:
    """The state of an event's own signals and its request's, without stored consent."""
    readings: Sequence[SignalReading] = own.readings
    if request.gpc and not own.gpc:
        readings = (*readings, gpc_reading(policy))
    return merge(readings, own.unparseable, policy, region)


def signal_key(context: Mapping[str, Any]) -> Hashable | None:
    """What the readers of ``READERS`` read of a context, as an exact key; ``None`` when some
    value of it is not JSON (then nothing is memoized). Native when built (same keys)."""
    if _native is not None:
        return _native.signal_key(context, _CONTEXT_KEY_ORDER)  # type: ignore[no-any-return]
    return pure_signal_key(context)


def pure_signal_key(context: Mapping[str, Any]) -> Hashable | None:
    """``signal_key`` over ``consent.memo.frozen``."""
    try:
        return (
            frozen(context.get("consent")),
            tuple(
                [(name, frozen(context[name])) for name in _CONTEXT_KEY_ORDER if name in context]
            ),
        )
    except Unkeyable:
        return None


@dataclass(frozen=True, slots=True)
class SignalMemo:
    """One policy's memos: the readings of each distinct signal value, and the merged state of
    each (signal value, request GPC, region) without stored consent."""

    policy: ConsentPolicy
    signals: BoundedMemo[OwnSignals]
    states: BoundedMemo[ConsentState]


_MEMOS: dict[int, SignalMemo] = {}
"""By ``id(policy)``; each memo holds its policy, so the id stays that policy's while it lives."""


def _memo_for(policy: ConsentPolicy) -> SignalMemo:
    memo = _MEMOS.get(id(policy))
    if memo is None or memo.policy is not policy:
        if len(_MEMOS) >= _MEMO_POLICIES:
            del _MEMOS[next(iter(_MEMOS))]
        memo = _MEMOS[id(policy)] = SignalMemo(
            policy, BoundedMemo(MEMO_SIZE), BoundedMemo(MEMO_SIZE)
        )
    return memo


def stored_reading(stored: StoredConsent) -> SignalReading:
    """A stored record as a CMP choice."""
    reading = SignalReading(Signal.STORED)
    for category in stored.granted:
        reading.vote(category, True)
    for category in stored.denied:
        reading.vote(category, False)
    return reading


def withdrawal_reading(stored: StoredConsent) -> SignalReading:
    """Only the denials of a stored record newer than the event: they win."""
    reading = SignalReading(Signal.STORED, deny_reason=DenyReason.CONSENT_WITHDRAWN)
    for category in stored.denied:
        reading.vote(category, False)
    return reading
