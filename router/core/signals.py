"""Consent signals carried by request headers, read the same way by every door. Pure.

The ingest reads them from the HTTP request, ``POST /admin/explain`` from its ``headers``
object and ``router explain`` from ``--header 'Name: value'``: all three give the same
``RequestSignals`` for the same headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from consent.resolve import RequestSignals


def signals_from_headers(
    headers: Iterable[tuple[str, str]], geo_header: str | None
) -> RequestSignals:
    """GPC (any ``Sec-GPC`` header exactly ``1``, spaces aside) and the region from the CDN's
    country header (``geo_header``; its first value, stripped). Names match in any case."""
    geo = geo_header.lower() if geo_header else None
    gpc = False
    region: str | None = None
    seen_geo = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "sec-gpc":
            gpc = gpc or value.strip() == "1"
        elif lowered == geo and not seen_geo:
            seen_geo = True
            region = value.strip() if value else None
    if region is None:  # the usual request: one of two shared values (a frozen dataclass's
        return _GPC if gpc else _NONE  # __init__ runs interpreted even when compiled)
    return RequestSignals(gpc=gpc, region=region)


_NONE: Final = RequestSignals()
_GPC: Final = RequestSignals(gpc=True)
