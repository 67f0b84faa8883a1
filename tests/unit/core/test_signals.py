"""Consent signals from request headers: the one reading of Sec-GPC and the geo header."""

from __future__ import annotations

import pytest

from consent.resolve import RequestSignals
from router.core.signals import signals_from_headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], RequestSignals()),
        ([("Sec-GPC", "1")], RequestSignals(gpc=True)),
        ([("sec-gpc", " 1 ")], RequestSignals(gpc=True)),
        ([("Sec-GPC", "0"), ("SEC-GPC", "1")], RequestSignals(gpc=True)),
        ([("Sec-GPC", "true")], RequestSignals()),
        ([("cf-ipcountry", " DE "), ("CF-IPCountry", "FR")], RequestSignals(region="DE")),
        ([("CF-IPCountry", "")], RequestSignals()),
        ([("X-Other", "DE")], RequestSignals()),
    ],
)
def test_reads_gpc_and_the_first_geo_header_in_any_case(
    headers: list[tuple[str, str]], expected: RequestSignals
) -> None:
    """GPC is any ``Sec-GPC: 1``; the region is the geo header's first value, stripped."""
    assert signals_from_headers(headers, "CF-IPCountry") == expected


def test_no_geo_header_configured_reads_no_region() -> None:
    """Without ``consent.geo_header`` no header sets the region."""
    assert signals_from_headers([("CF-IPCountry", "DE")], None) == RequestSignals()
