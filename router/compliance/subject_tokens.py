"""Which subjects an audit record names, and where they go in the subject index. Pure.

``named_tokens``: the subject tokens a record names; ``index_tokens``: the same and those whose
opt-out it honours; ``group_for_index`` and ``index_arguments``: the records of one append
grouped by the index sets they go into, and those groups as the append script's keys and
arguments (``router.compliance.audit_log``; the index is described in
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


def add_tokens(seen: dict[str, None], value: Any) -> None:
    """``tokens_in(value)`` added to ``seen`` (no list of them made: the audit writer runs this
    for every event of every ``decisions`` record)."""
    if isinstance(value, list):
        for token in value:
            if isinstance(token, str) and token:
                seen[token] = None


def index_tokens(kind: str, data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The subject tokens a record names (``named_tokens``), and those among them whose
    opt-out it honours."""
    subjects = named_tokens(data)
    return subjects, subjects if honours_opt_out(kind, data) else []


def named_tokens(data: Mapping[str, Any]) -> list[str]:
    """The subject tokens a record names: its ``subjects`` (``decision``, ``consent_written``,
    ``erasure``) and the ``subjects`` of each of its ``events`` (``decisions``), their
    ``tokens_in``, each once, in order."""
    seen: dict[str, None] = {}
    add_tokens(seen, data.get("subjects"))
    events = data.get("events")
    if isinstance(events, list):
        for event in events:
            if type(event) is dict or isinstance(event, Mapping):  # dict: no ABC check
                add_tokens(seen, event.get("subjects"))
    return list(seen)


def honours_opt_out(kind: str, data: Mapping[str, Any]) -> bool:
    """Whether a record proves that its subjects' opt-out was honoured: a ``decision`` or
    ``decisions`` record skipping a destination for an opt-out signal."""
    reason = data.get("reason")
    return (
        kind in {"decision", "decisions"}
        and data.get("decision") == "skip"
        and isinstance(reason, str)
        and reason in OPT_OUT_REASONS
    )


IndexGroups = dict[tuple[tuple[str, ...], bool], list[str]]
"""The records of one append by the index sets they go into: (their ``named_tokens``' subject
tokens, whether their opt-out sets too) -> the records' ordinals in the append."""


def group_for_index(
    kind: str,
    data: Mapping[str, Any],
    groups: IndexGroups,
    ordinal: str,
    subjects: list[str] | None = None,
) -> None:
    """Add a record (its ``ordinal`` in its append) to ``groups``: records naming the same
    subjects share a group (the destinations' records of one request do). ``subjects``: the
    record's ``named_tokens`` when the caller collected them already (the audit writer does,
    as decisions arrive)."""
    if subjects is None:
        subjects = named_tokens(data)
    if subjects:
        groups.setdefault((tuple(subjects), honours_opt_out(kind, data)), []).append(ordinal)


def index_arguments(stream: str, groups: IndexGroups) -> tuple[list[str], list[str]]:
    """The append script's index sets and arguments for ``groups``: per group, its sets'
    keys (its tokens' subject sets, then their opt-out sets) go into ``KEYS``, and two
    arguments, its space-separated ordinals and how many of those keys are its own. A set
    of several groups is named once per group."""
    keys: list[str] = []
    args: list[str] = []
    for (tokens, honoured), ordinals in groups.items():
        keys += [subject_index_key(stream, t) for t in tokens]
        if honoured:
            keys += [optout_index_key(stream, t) for t in tokens]
        args += [" ".join(ordinals), str(len(tokens) * (2 if honoured else 1))]
    return keys, args
