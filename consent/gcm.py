"""Google Consent Mode v2: the seven consent types and the ``gcs`` hit parameter.

``gtag('consent', 'default' | 'update', {...})`` and the GA4 Measurement Protocol ``consent``
object both carry a map of consent type to ``granted`` / ``denied`` (gtag writes lower case, MP
upper case). ``decode_consent_mode`` reads such a map:

- values are compared case-insensitively; ``True`` / ``False`` are accepted as a lenient
  extension (``True`` = granted) because some SDKs forward booleans;
- keys are the exact type names; other keys (``region``, ``wait_for_update``, future types) are
  not consent types: they are ignored and their names kept in ``ConsentMode.unknown``;
- a known type with any other value raises ``ConsentModeError("bad_value", ...)``.

A type that is absent stays ``None``: the caller decides what "not set" means (fail closed).

``decode_gcs`` reads the undocumented ``gcs`` hit parameter ``G1xy`` (x = ad_storage,
y = analytics_storage, 1 = granted, 0 = denied); the source is third-party reverse engineering
(reference section 4.3). The richer ``gcd`` parameter is not decoded here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consent.errors import ConsentModeError

CONSENT_TYPES = (
    "ad_storage",
    "analytics_storage",
    "ad_user_data",
    "ad_personalization",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
)
"""The seven Consent Mode v2 types, in Google's documentation order."""

MAX_ENTRIES = 64
"""Most keys a consent map may have (there are seven types; the rest is noise or hostile)."""

MAX_KEY_CHARS = 64
"""Longest key kept in ``ConsentMode.unknown``."""

_VALUES = {"granted": True, "denied": False}


@dataclass(frozen=True, slots=True)
class ConsentMode:
    """A decoded consent map: each type is ``True`` (granted), ``False`` (denied) or ``None``."""

    ad_storage: bool | None = None
    analytics_storage: bool | None = None
    ad_user_data: bool | None = None
    ad_personalization: bool | None = None
    functionality_storage: bool | None = None
    personalization_storage: bool | None = None
    security_storage: bool | None = None
    unknown: tuple[str, ...] = ()
    """Keys that are not consent types, in input order (ignored for decisions)."""

    def status(self, consent_type: str) -> bool | None:
        """The state of one type; ``KeyError`` for a name that is not a consent type."""
        return {
            "ad_storage": self.ad_storage,
            "analytics_storage": self.analytics_storage,
            "ad_user_data": self.ad_user_data,
            "ad_personalization": self.ad_personalization,
            "functionality_storage": self.functionality_storage,
            "personalization_storage": self.personalization_storage,
            "security_storage": self.security_storage,
        }[consent_type]

    def granted(self, consent_type: str) -> bool:
        """True only when the type was explicitly granted."""
        return self.status(consent_type) is True


def _decode_value(consent_type: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        decoded = _VALUES.get(value.lower())
        if decoded is not None:
            return decoded
    raise ConsentModeError("bad_value", f"{consent_type} must be 'granted' or 'denied'")


def decode_consent_mode(value: Mapping[str, object]) -> ConsentMode:
    """Decode a Consent Mode map such as ``{"ad_storage": "denied", "analytics_storage": ...}``.

    Raises ``ConsentModeError`` with code ``bad_format`` (not a mapping, or a non-string key),
    ``too_long`` (more than ``MAX_ENTRIES`` keys, or a key longer than ``MAX_KEY_CHARS``) or
    ``bad_value`` (a consent type with a value other than granted/denied/true/false).
    """
    if not isinstance(value, Mapping):
        raise ConsentModeError("bad_format", "consent mode must be an object")
    if len(value) > MAX_ENTRIES:
        raise ConsentModeError("too_long", f"consent mode has more than {MAX_ENTRIES} keys")
    states: dict[str, bool] = {}
    unknown: list[str] = []
    for key, raw in value.items():
        if not isinstance(key, str):
            raise ConsentModeError("bad_format", "consent mode keys must be strings")
        if key in CONSENT_TYPES:
            states[key] = _decode_value(key, raw)
        elif len(key) > MAX_KEY_CHARS:
            raise ConsentModeError("too_long", f"a key is longer than {MAX_KEY_CHARS} characters")
        else:
            unknown.append(key)
    return ConsentMode(
        ad_storage=states.get("ad_storage"),
        analytics_storage=states.get("analytics_storage"),
        ad_user_data=states.get("ad_user_data"),
        ad_personalization=states.get("ad_personalization"),
        functionality_storage=states.get("functionality_storage"),
        personalization_storage=states.get("personalization_storage"),
        security_storage=states.get("security_storage"),
        unknown=tuple(unknown),
    )


def decode_gcs(value: str) -> ConsentMode:
    """Decode a ``gcs`` hit parameter (``G100``, ``G101``, ``G110``, ``G111``).

    Only ``ad_storage`` and ``analytics_storage`` are set; the other types stay ``None``.
    Raises ``ConsentModeError("bad_value", ...)`` for anything else.
    """
    if len(value) != 4 or not value.startswith("G1") or any(c not in "01" for c in value[2:]):
        raise ConsentModeError("bad_value", "gcs must be 'G1' followed by two 0/1 digits")
    return ConsentMode(ad_storage=value[2] == "1", analytics_storage=value[3] == "1")
