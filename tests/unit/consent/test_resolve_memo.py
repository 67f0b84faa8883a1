"""The memoized resolver decides exactly as the resolver before the memo did.

``reference_resolve`` is the resolver as it was before signal readings and merged states were
memoized (commit 2bfc166), kept here verbatim as the oracle: every generated sequence of
contexts (with values recurring, so the memo is hit, and with malformed signals, non-JSON
values and stored records) must give the same ``ConsentState``, member order included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import resolve
from consent.errors import DecodeError
from consent.memo import BoundedMemo, Unkeyable, frozen
from consent.model import ConsentState, DenyReason, Signal, StoredConsent
from consent.policy import ConsentPolicy, Missing
from consent.resolve import (
    READERS,
    Reader,
    RequestSignals,
    gpc_reading,
    region_of,
    resolve_consent,
    stored_reading,
    withdrawal_reading,
)
from consent.signals import SignalReading
from tests.unit.consent.test_decision_table import (
    GPP_NO_OPT_OUT,
    GPP_OPT_OUT,
    POLICY,
    TC_ALL,
    TC_NONE,
)


def reference_merge(
    readings: Sequence[SignalReading],
    unparseable: Sequence[Signal],
    policy: ConsentPolicy,
    region: str | None,
    *,
    expired: bool = False,
) -> ConsentState:
    """``consent.resolve.merge`` before the memo."""
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


def reference_resolve(
    context: Mapping[str, Any],
    request: RequestSignals,
    policy: ConsentPolicy,
    readers: Sequence[Reader] = READERS,
    *,
    stored: StoredConsent | None = None,
    event_time: datetime | None = None,
    now: datetime | None = None,
) -> ConsentState:
    """``consent.resolve.resolve_consent`` before the memo."""
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
    if request.gpc and not any(r.gpc for r in readings):
        readings.append(gpc_reading(policy))
    expired = False
    if stored is not None:
        has_choice = any(r.cmp for r in readings) or bool(unparseable)
        limit = timedelta(days=policy.max_age_days)
        if now is not None and stored.updated_at < now - limit:
            expired = not has_choice
        elif not has_choice:
            readings.append(stored_reading(stored))
        elif event_time is not None and stored.updated_at > event_time:
            readings.append(withdrawal_reading(stored))
    return reference_merge(
        readings, unparseable, policy, region_of(context, request), expired=expired
    )


def snapshot(state: ConsentState) -> tuple[Any, ...]:
    """Every field of a state, ``denied_by`` in its order (what the audit and facts read)."""
    return (
        state.granted,
        list(state.denied_by.items()),
        state.signals,
        state.unparseable,
        state.gpc,
        state.us_opt_out,
        state.region,
        state.collected_at,
        state.expired,
        state.tcf,
    )


NOW = datetime(2026, 12, 1, tzinfo=UTC)
IDS = ["C0001", "C0002", "C0003", "C0004", "analytics", " Advertising ", "c0002", "unknown", ""]
BOOLISH = st.sampled_from([True, False, True, False, 1, 0, 1.0, "true", None])
id_lists = st.one_of(
    st.lists(st.sampled_from(IDS), max_size=4),
    st.sampled_from([None, "C0002", ["C0002", 2], ("C0002",)]),
)
category_maps = st.one_of(
    st.dictionaries(st.sampled_from(IDS), BOOLISH, max_size=4),
    st.sampled_from([["C0002"], "C0002:1", None, {"C0002": [True]}]),
)
consent_objects = st.fixed_dictionaries(
    {},
    optional={
        "categoryPreferences": category_maps,
        "tcString": st.sampled_from([TC_ALL, TC_NONE, "CPSG_8A!!not-base64", 5, ""]),
        "gdprApplies": st.sampled_from([True, False, 0, 1, None, "false"]),
        "gppString": st.sampled_from([GPP_OPT_OUT, GPP_NO_OPT_OUT, "DBABM~@@@", ["x"]]),
        "gppSid": st.sampled_from([[7], [2, 7], "7", "2_7", [True], "x", (7,)]),
        "usPrivacy": st.sampled_from(["1YYN", "1YNN", "1---", "2XYZ", 1]),
        "googleConsentMode": st.one_of(
            st.dictionaries(
                st.sampled_from(["analytics_storage", "ad_storage", "ad_user_data", "other"]),
                st.sampled_from(["granted", "denied", "maybe", True]),
                max_size=3,
            ),
            st.just("granted"),
        ),
        "oneTrust": st.sampled_from(["C0001:1,C0002:1,C0004:1", "C0002:0,C0004:0", "C0002:x"]),
        "OnetrustActiveGroups": st.sampled_from([",C0001,C0002,", ",C0004,", 3]),
        "gpc": st.sampled_from([True, False, "1", 1]),
        "unrelated": st.sampled_from([1, "x", [1, 2]]),
    },
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "consent": st.one_of(consent_objects, st.sampled_from(["yes", None, [1]])),
        "consentManagement": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"allowedConsentIds": id_lists, "deniedConsentIds": id_lists}
            ),
            st.sampled_from(["C0002", None]),
        ),
        "gdpr_consent": st.sampled_from([TC_ALL, TC_NONE, "bad", None]),
        "us_privacy": st.sampled_from(["1YYN", "1YNN", "bad"]),
        "location": st.sampled_from([{"country": "us "}, {"country": "DE"}, {"country": 1}, "x"]),
        "ip": st.just("203.0.113.9"),
    },
)
stored_records = st.one_of(
    st.none(),
    st.builds(
        StoredConsent,
        granted=st.frozensets(st.sampled_from(["analytics", "advertising", "necessary"])),
        denied=st.frozensets(st.sampled_from(["analytics", "advertising", "functional"])),
        source=st.just("api"),
        updated_at=st.sampled_from(
            [NOW - timedelta(days=500), NOW - timedelta(days=2), NOW - timedelta(hours=1)]
        ),
    ),
)
calls = st.tuples(
    contexts,
    st.builds(RequestSignals, gpc=st.booleans(), region=st.sampled_from([None, "US", "de"])),
    stored_records,
    st.sampled_from([None, NOW - timedelta(days=1), NOW - timedelta(minutes=5)]),
    st.sampled_from([None, NOW]),
)
POLICIES = [
    POLICY,
    dataclasses.replace(POLICY, missing=Missing.ALLOW, honor_gpc=False),
    dataclasses.replace(POLICY, gpc_denies=("advertising", "personalization"), max_age_days=1),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(range(len(POLICIES))), calls), min_size=1, max_size=20
    ).flatmap(lambda drawn: st.permutations(drawn + drawn[: len(drawn) // 2]))
)
def test_memoized_resolver_decides_as_the_reference(
    drawn: list[tuple[int, tuple[Any, ...]]],
) -> None:
    """Every call (values recurring, so the memo is hit) equals the resolver before the memo."""
    for index, (context, request, stored, event_time, now) in drawn:
        policy = POLICIES[index]
        expected = reference_resolve(
            context, request, policy, stored=stored, event_time=event_time, now=now
        )
        got = resolve_consent(
            context, request, policy, stored=stored, event_time=event_time, now=now
        )
        assert snapshot(got) == snapshot(expected)


def test_recurring_signal_values_are_read_once() -> None:
    """Two people with the same category map share one reading and one merged state."""
    policy = dataclasses.replace(POLICY)
    first = {"consent": {"categoryPreferences": {"C0002": True, "C0004": False}}, "ip": "a"}
    second = {"consent": {"categoryPreferences": {"C0002": True, "C0004": False}}, "ip": "b"}
    state = resolve_consent(first, RequestSignals(), policy)
    assert resolve_consent(second, RequestSignals(), policy) is state
    assert state.granted == {"analytics"}
    assert state.denied_by == {"advertising": DenyReason.CATEGORY_DENIED}


def test_a_stored_record_is_merged_per_person_over_the_memoized_readings() -> None:
    """With a stored record, the state is the one of that record's categories and of how the
    event uses it: shared by people with the same record, apart for another record or use."""
    policy = dataclasses.replace(POLICY)
    context = {"consent": {"categoryPreferences": {"C0002": True}}}
    without = resolve_consent(context, RequestSignals(), policy)
    withdrawn = StoredConsent(frozenset(), frozenset({"analytics"}), "api", NOW)
    state = resolve_consent(
        context, RequestSignals(), policy, stored=withdrawn, event_time=NOW - timedelta(days=1)
    )
    assert without.granted == {"analytics"}
    assert state.denied_by == {"analytics": DenyReason.CONSENT_WITHDRAWN}
    assert resolve_consent(context, RequestSignals(), policy) is without
    # another person, the same record (another object): the same state
    again = StoredConsent(frozenset(), frozenset({"analytics"}), "api", NOW - timedelta(hours=1))
    assert (
        resolve_consent(
            context, RequestSignals(), policy, stored=again, event_time=NOW - timedelta(days=1)
        )
        is state
    )
    # the event newer than the record: the record is not used
    newer = resolve_consent(context, RequestSignals(), policy, stored=withdrawn, event_time=NOW)
    assert newer is not state
    assert newer.granted == {"analytics"}
    # no choice in the event: the record is the choice, and when too old, nothing is granted
    stored = StoredConsent(frozenset({"analytics"}), frozenset(), "api", NOW - timedelta(days=2))
    read = resolve_consent({}, RequestSignals(), policy, stored=stored, now=NOW)
    assert read.granted == {"analytics"}
    assert not read.expired
    old = resolve_consent(
        {}, RequestSignals(), policy, stored=stored, now=NOW + timedelta(days=900)
    )
    assert old.expired
    assert old.granted == frozenset()
    assert resolve_consent({}, RequestSignals(), policy, stored=stored, now=NOW) is read


def test_each_policy_reads_signals_under_its_own_mappings() -> None:
    """Equal signal values under two policies (a reloaded routing file) are two memo entries."""
    context = {"consent": {"categoryPreferences": {"C0009": True}}}
    before = resolve_consent(context, RequestSignals(), dataclasses.replace(POLICY))
    reloaded = dataclasses.replace(POLICY, ids={"C0009": "analytics"})
    after = resolve_consent(context, RequestSignals(), reloaded)
    assert before.granted == frozenset()
    assert after.granted == {"analytics"}


def test_the_memos_stay_bounded() -> None:
    """However many distinct values arrive, a policy's memo keeps at most ``MEMO_SIZE``."""
    policy = dataclasses.replace(POLICY)
    for n in range(resolve.MEMO_SIZE + 50):
        resolve_consent(
            {"consent": {"categoryPreferences": {f"X{n}": True}}}, RequestSignals(), policy
        )
    memo = resolve._memo_for(policy)
    assert len(memo.signals) == resolve.MEMO_SIZE
    assert len(memo.states) == resolve.MEMO_SIZE
    for _ in range(10):
        resolve._memo_for(dataclasses.replace(POLICY))
    assert len(resolve._MEMOS) <= resolve._MEMO_POLICIES


def test_frozen_keeps_json_types_and_member_order_apart() -> None:
    """``true``, ``1`` and ``1.0`` (equal in Python) and reordered members are distinct keys."""
    keys = [frozen(v) for v in (True, 1, 1.0, "1", None, [1], {"a": 1, "b": 2}, {"b": 2, "a": 1})]
    assert len(set(keys)) == len(keys)
    assert frozen({"a": [1, {"b": None}]}) == frozen({"a": [1, {"b": None}]})


@pytest.mark.parametrize("value", [(1,), {1, 2}, b"x", {"a": (1,)}, [frozenset()]])
def test_frozen_refuses_values_that_are_not_json(value: Any) -> None:
    """A tuple is not a list to the readers: such values are resolved without the memo."""
    with pytest.raises(Unkeyable):
        frozen(value)


def test_bounded_memo_forgets_the_oldest_entry_first() -> None:
    """A full memo makes room by dropping its oldest entry; re-putting a key adds nothing."""
    memo: BoundedMemo[int] = BoundedMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("b", 3)
    assert len(memo) == 2
    memo.put("c", 4)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (None, 3, 4)
    with pytest.raises(ValueError, match="at least one"):
        BoundedMemo(0)


odd_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.sampled_from([(1,), b"x", frozenset(), 1.0, True, 1]),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.booleans()), children)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        contexts, st.dictionaries(st.sampled_from(["consent", "gdpr_consent", "x"]), odd_values)
    )
)
def test_the_native_signal_key_is_the_pure_one(context: dict[str, Any]) -> None:
    """``consent._speedups.signal_key`` (C) gives ``pure_signal_key``'s keys, ``None`` where a
    value is not JSON (a tuple, bytes, a set; non-string object keys are keyed apart)."""
    if resolve._native is None:
        pytest.skip("consent._speedups is not built")
    native = resolve.signal_key(context)
    pure = resolve.pure_signal_key(context)
    assert native == pure
    assert repr(native) == repr(pure)  # True, 1 and 1.0 stay apart inside the key too


def test_the_native_signal_key_refuses_what_frozen_refuses() -> None:
    if resolve._native is None:
        pytest.skip("consent._speedups is not built")
    for value in [(1,), {1, 2}, b"x", {"a": (1,)}, [frozenset()], {(1,): 1}]:
        assert resolve.signal_key({"consent": value}) is None
        assert resolve.signal_key({"gdpr_consent": value}) is None
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        resolve.signal_key({"consent": deep})
