"""OneTrust consent groups: the ``OptanonConsent`` cookie and the active-groups string.

Three shapes are accepted (reference section 6.1):

- the whole ``OptanonConsent`` cookie value, a URL-encoded query string whose ``groups`` field
  is ``C0001:1,C0002:0,...`` (1 = consented, 0 = not);
- that ``groups`` list on its own, plain or URL-encoded (``C0001%3A1%2CC0002%3A0``);
- an active-groups string (``window.OnetrustActiveGroups``, ``OptanonActiveGroups``) such as
  ``,C0001,C0003,``: only consented ids, each decoded as ``True``.

Group ids are compared case-insensitively (an old OneTrust build lower-cased them) and returned
upper-cased. Ids are per-tenant (``C0001`` is only the default "Strictly Necessary"), so mapping
them to categories is the caller's job; an id that is absent means "not granted".
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote

from consent.errors import CMPFormatError

MAX_TEXT_CHARS = 16 * 1024
"""Longest accepted input (a browser cookie is at most 4 KiB)."""

MAX_GROUPS = 256
"""Most groups a value may list."""

MAX_QUERY_FIELDS = 100
"""Most ``&``-separated fields accepted in a cookie value."""

_GROUP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FLAGS = {"1": True, "0": False}


def decode_onetrust_groups(text: str) -> dict[str, bool]:
    """Decode OneTrust groups into ``{GROUP_ID: consented}``.

    Raises ``CMPFormatError`` with code ``too_long`` (input or group count over the limits) or
    ``bad_format`` (no ``groups`` field in a cookie, a malformed entry, a bad group id, or one id
    given both 1 and 0).
    """
    if len(text) > MAX_TEXT_CHARS:
        raise CMPFormatError("too_long", f"OneTrust value is longer than {MAX_TEXT_CHARS} chars")
    if "=" in text:
        return _decode_group_flags(_groups_field(text))
    if "%" in text:
        text = unquote(text)
        if "=" in text:
            raise CMPFormatError("bad_format", "URL-encoded groups list contains '='")
    if ":" in text:
        return _decode_group_flags(text)
    return _decode_active_groups(text)


def _groups_field(cookie: str) -> str:
    try:
        fields = parse_qs(cookie, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise CMPFormatError(
            "too_long", f"OptanonConsent has more than {MAX_QUERY_FIELDS} fields"
        ) from None
    groups = fields.get("groups")
    if groups is None:
        raise CMPFormatError("bad_format", "OptanonConsent has no groups field")
    if len(groups) != 1:
        raise CMPFormatError("bad_format", "OptanonConsent repeats the groups field")
    return groups[0]


def _entries(text: str) -> list[str]:
    entries = [entry.strip() for entry in text.split(",")]
    entries = [entry for entry in entries if entry]
    if len(entries) > MAX_GROUPS:
        raise CMPFormatError("too_long", f"more than {MAX_GROUPS} OneTrust groups")
    return entries


def _group_id(text: str) -> str:
    if not _GROUP_ID.fullmatch(text):
        raise CMPFormatError("bad_format", "OneTrust group ids are 1-64 of [A-Za-z0-9_-]")
    return text.upper()


def _decode_group_flags(text: str) -> dict[str, bool]:
    groups: dict[str, bool] = {}
    for entry in _entries(text):
        raw_id, separator, raw_flag = entry.partition(":")
        if not separator or raw_flag not in _FLAGS:
            raise CMPFormatError("bad_format", "OneTrust groups entries are GROUP_ID:0 or :1")
        group_id, flag = _group_id(raw_id), _FLAGS[raw_flag]
        if groups.setdefault(group_id, flag) != flag:
            raise CMPFormatError("bad_format", "a OneTrust group is both consented and not")
    return groups


def _decode_active_groups(text: str) -> dict[str, bool]:
    return {_group_id(entry): True for entry in _entries(text)}
