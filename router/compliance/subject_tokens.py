"""Which subjects an audit record names, and where they go in the subject index. Pure.

``index_tokens``: the subject tokens a record names (and those whose opt-out it honours);
``index_positions``: the same as the ``KEYS`` positions of their index sets in one append
script call; ``index_members``: the records of the append that go into each set
(``router.compliance.audit_log``; the index is described in
``router.compliance.subject_index``). Compiled in the compiled build: the audit flush runs them
for every event of every ``decisions`` record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from router.queue.keys import optout_index_key, subject_index_key

OPT_OUT_REASONS: Final = frozenset({"gpc_opt_out", "us_opt_out"})
"""Skip reasons that prove an opt-out signal was honoured."""


def tokens_in(value: Any) -> list[str]:
    """The non-empty strings of a record's ``subjects`` (anything else in it is ignored)."""
    if not isinstance(value, list):
        return []
    return [t for t in value if isinstance(t, str) and t]


def _add_tokens(seen: dict[str, None], value: Any) -> None:
    """``tokens_in(value)`` added to ``seen`` (no list of them made: the audit flush runs this
    for every event of every ``decisions`` record)."""
    if isinstance(value, list):
        for token in value:
            if isinstance(token, str) and token:
                seen[token] = None


def index_tokens(kind: str, data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The subject tokens a record names, and those among them whose opt-out it honours.

    A record names its ``subjects`` (``decision``, ``consent_written``, ``erasure``) and the
    ``subjects`` of each of its ``events`` (``decisions``): their ``tokens_in``, each once, in
    order."""
    seen: dict[str, None] = {}
    _add_tokens(seen, data.get("subjects"))
    events = data.get("events")
    if isinstance(events, list):
        for event in events:
            if type(event) is dict or isinstance(event, Mapping):  # dict: no ABC check
                _add_tokens(seen, event.get("subjects"))
    subjects = list(seen)
    reason = data.get("reason")
    honoured = (
        kind in {"decision", "decisions"}
        and data.get("decision") == "skip"
        and isinstance(reason, str)
        and reason in OPT_OUT_REASONS
    )
    return subjects, subjects if honoured else []


def index_positions(
    stream: str,
    kind: str,
    data: Mapping[str, Any],
    keys: list[str],
    positions: tuple[dict[str, int], dict[str, int]],
) -> list[int]:
    """The ``KEYS`` positions (1-based, added to ``keys`` when new) of the subject index sets
    a record goes into: its ``index_tokens``' subject sets, then their opt-out sets.
    ``positions``: the position of each token's subject set and opt-out set already in
    ``keys`` (the records of one append share subjects)."""
    subjects, honoured = index_tokens(kind, data)
    out: list[int] = []
    for key_of, tokens, known in (
        (subject_index_key, subjects, positions[0]),
        (optout_index_key, honoured, positions[1]),
    ):
        for token in tokens:
            position = known.get(token)
            if position is None:
                keys.append(key_of(stream, token))
                position = known[token] = len(keys)
            out.append(position)
    return out


def index_members(
    stream: str,
    kind: str,
    data: Mapping[str, Any],
    keys: list[str],
    positions: tuple[dict[str, int], dict[str, int]],
    *,
    members: list[list[str]],
    ordinal: str,
) -> None:
    """Add a record's ``ordinal`` in its append to the lists in ``members`` (by ``KEYS``
    position) of the index sets it goes into (``index_positions``): one list per set, so the
    append script adds each set's records of the append in one ``ZADD``."""
    for position in index_positions(stream, kind, data, keys, positions):
        while len(members) <= position:
            members.append([])
        members[position].append(ordinal)
