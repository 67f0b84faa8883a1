"""consent.gcm: Google Consent Mode maps and the ``gcs`` hit parameter."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.errors import ConsentModeError
from consent.gcm import CONSENT_TYPES, MAX_ENTRIES, ConsentMode, decode_consent_mode, decode_gcs


def test_gtag_default_map_decodes() -> None:
    """A gtag('consent', 'default', ...) map, as in Google's consent guide, decodes per type."""
    # developers.google.com/tag-platform/security/guides/consent: the "default" example.
    mode = decode_consent_mode(
        {
            "ad_storage": "denied",
            "ad_user_data": "denied",
            "ad_personalization": "denied",
            "analytics_storage": "granted",
            "wait_for_update": 500,
        }
    )
    assert mode == ConsentMode(
        ad_storage=False,
        analytics_storage=True,
        ad_user_data=False,
        ad_personalization=False,
        unknown=("wait_for_update",),
    )


def test_measurement_protocol_upper_case_values_decode() -> None:
    """GA4 Measurement Protocol writes GRANTED/DENIED in upper case (reference 4.2)."""
    mode = decode_consent_mode({"ad_user_data": "DENIED", "ad_personalization": "GRANTED"})
    assert (mode.ad_user_data, mode.ad_personalization) == (False, True)


@pytest.mark.parametrize(
    ("value", "granted"),
    [("granted", True), ("denied", False), ("Granted", True), (True, True), (False, False)],
)
def test_values_granted_and_denied(value: object, granted: bool) -> None:
    """granted/denied in any case, and booleans (lenient extension), decode to a bool."""
    assert decode_consent_mode({"ad_storage": value}).ad_storage is granted


@pytest.mark.parametrize("consent_type", CONSENT_TYPES)
def test_each_of_the_seven_types_is_read(consent_type: str) -> None:
    """Every consent type maps to its own field; the others stay None."""
    mode = decode_consent_mode({consent_type: "granted"})
    assert mode.status(consent_type) is True
    assert mode.granted(consent_type)
    assert all(mode.status(other) is None for other in CONSENT_TYPES if other != consent_type)


def test_absent_types_stay_none_and_are_not_granted() -> None:
    """An empty map leaves every type unset: nothing is granted."""
    mode = decode_consent_mode({})
    assert mode == ConsentMode()
    assert not any(mode.granted(consent_type) for consent_type in CONSENT_TYPES)


def test_unknown_types_are_ignored_and_listed() -> None:
    """Keys that are not consent types are kept by name only, whatever their value."""
    mode = decode_consent_mode({"region": ["US-CA"], "ad_storage": "denied", "future": object()})
    assert mode.unknown == ("region", "future")
    assert mode.ad_storage is False


def test_status_of_a_non_type_is_a_key_error() -> None:
    """Asking for a name that is not a consent type is a programming error."""
    with pytest.raises(KeyError):
        ConsentMode().status("region")


@pytest.mark.parametrize("value", ["yes", "", "grant", 1, 0, None, ["granted"], {"v": "granted"}])
def test_invalid_values_are_bad_value(value: object) -> None:
    """A consent type with any other value raises bad_value."""
    with pytest.raises(ConsentModeError) as error:
        decode_consent_mode({"analytics_storage": value})
    assert error.value.code == "bad_value"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (["ad_storage"], "bad_format"),
        ({1: "granted"}, "bad_format"),
        ({f"k{i}": "granted" for i in range(MAX_ENTRIES + 1)}, "too_long"),
        ({"x" * 65: "granted"}, "too_long"),
    ],
)
def test_malformed_maps_raise_their_code(value: object, code: str) -> None:
    """Non-mappings, non-string keys and oversized maps are rejected."""
    with pytest.raises(ConsentModeError) as error:
        decode_consent_mode(value)  # type: ignore[arg-type]
    assert error.value.code == code


@pytest.mark.parametrize(
    ("gcs", "ad_storage", "analytics_storage"),
    [("G100", False, False), ("G101", False, True), ("G110", True, False), ("G111", True, True)],
)
def test_gcs_values(gcs: str, ad_storage: bool, analytics_storage: bool) -> None:
    """G1xy: x is ad_storage and y analytics_storage, 1 granted (reference 4.3)."""
    assert decode_gcs(gcs) == ConsentMode(
        ad_storage=ad_storage, analytics_storage=analytics_storage
    )


@pytest.mark.parametrize("gcs", ["", "G1", "G10", "G1111", "G102", "g111", "G211", "G1 1"])
def test_malformed_gcs_is_bad_value(gcs: str) -> None:
    """Anything but G1 followed by two 0/1 digits raises bad_value."""
    with pytest.raises(ConsentModeError) as error:
        decode_gcs(gcs)
    assert error.value.code == "bad_value"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=5,
)
KEYS = st.sampled_from(CONSENT_TYPES) | st.text(max_size=70)
VALUES = st.sampled_from(["granted", "denied", "GRANTED", "Denied"]) | JSON_VALUES


def _outcome(value: Mapping[str, object]) -> ConsentMode | ConsentModeError:
    try:
        return decode_consent_mode(value)
    except ConsentModeError as error:
        return error


@given(st.dictionaries(KEYS, VALUES, max_size=MAX_ENTRIES + 4))
def test_arbitrary_maps_decode_or_raise_consent_mode_error(value: dict[str, object]) -> None:
    """Any JSON-like map yields a ConsentMode or a ConsentModeError; nothing else escapes."""
    outcome = _outcome(value)
    assert isinstance(outcome, ConsentMode) or outcome.code in {"bad_value", "too_long"}


@given(st.text(max_size=10))
def test_arbitrary_gcs_text_decodes_or_raises_consent_mode_error(text: str) -> None:
    """Any text given as gcs yields a ConsentMode or a ConsentModeError."""
    try:
        outcome: ConsentMode | ConsentModeError = decode_gcs(text)
    except ConsentModeError as error:
        outcome = error
    assert isinstance(outcome, ConsentMode) or outcome.code == "bad_value"
